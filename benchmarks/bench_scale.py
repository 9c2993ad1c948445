"""Benchmark federation scale: time per round and peak memory against the number of stores.

    python -m benchmarks.bench_scale [--stores 10 50 100] [--customers-per-store 150]
        [--rounds 2] [--budget-seconds 600] [--node-timeout 900] [--no-secagg] [--contrast]
        [--model logistic] [--results PATH]

One synthetic chain (``fedcrm generate``'s generator, seed 7) with the largest number of
stores asked for, ``--customers-per-store`` customers each; each run trains the churn model
on its first n stores with :func:`fedcrm.federation.run_federation` — SecAgg+ on
(``--no-secagg``: off), preference model off, no analytics queries, no baselines — for
``--rounds`` rounds, with ``node-timeout`` raised to ``--node-timeout`` (900 s: on a loaded
2-core machine the budget query of 100 stores outlasts fedcrm's default 300 s, and the stores
not answered in time are left out of the run). Every run is a fresh child process in its own
session (a fresh Ray cluster, fresh per-process caches, its own copy of the chain and so
fresh privacy ledgers), so that its memory is measured alone: every 0.25 s, the summed
``VmRSS`` and ``Pss`` (``/proc/<pid>/smaps_rollup``) of every process in the child's session
(the driver with the coordinator and the engine, Ray's daemons, the store workers); the peak
of each sum is reported. RSS over-counts pages shared between processes; PSS splits them: the
better total. CPU seconds per process kind are summed too (less sensitive than wall time to
other users' load).

Time per round is the coordinator's record of each round (``summary.json`` → ``history``):
``fit_seconds`` (configure → aggregate the training: all four SecAgg+ stages) plus
``evaluate_seconds``; ``store_seconds_max`` is the slowest store's own handling time of the
training message, so ``fit_seconds - store_seconds_max`` is the round's coordination overhead.
The child also times (wall and CPU of the session) the coordinator's SecAgg+ stages and its
phases outside the rounds: the simulation engine's start, the budget query (each store's
first message: it imports fedcrm, prepares its data and plans σ) and the end.

Concurrency: ``run_federation`` gives Ray ``os.cpu_count()`` CPUs and each store 1 CPU, so the
engine runs ``cpu_count`` store workers (Ray actors) at once and every store's message of every
stage queues for them. Growth: a line ``a + b·n`` is fitted to each measure; it is called
"linear or better" when the largest run is at most 1.25x what the line through the two
smallest runs predicts; the log-log slope between the smallest and the largest run is the
exponent k of ``c·n^k`` (1: linear, 2: quadratic).

Runs go in increasing size; one predicted (from the runs before it) to overrun what is left of
``--budget-seconds`` is skipped and recorded with its prediction (0: no budget). With
``--contrast``, the largest run again with SecAgg+ off, budget permitting. The SecAgg+
parameters each run used (shares per store, threshold) are read from the coordinator's
workflow state, and the Shamir secret sharing they imply is timed alone (Flower's own
``create_shares`` / ``combine_shares``): each store splits 2 secrets per round, the
coordinator combines one secret per store.

Writes ``benchmarks/results/scale.json``, ``scale.md`` and ``scale.png`` (``--results``: another
JSON path, the .md and .png beside it). The child-process runner (``--child SPEC OUT``) is
shared with ``benchmarks.bench_cost``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
MARKDOWN = RESULTS.with_suffix(".md")
PLOT = RESULTS.with_suffix(".png")
SAMPLE_SECONDS = 0.25
LINEAR_TOLERANCE = 1.25
STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    import flwr
    import torch

    memory = None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = round(int(line.split()[1]) / 1024, 1)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_total_mb": memory,
        "torch": torch.__version__,
        "flwr": flwr.__version__,
    }


class LoadMonitor:
    """The 1-minute load average, sampled every ``every`` seconds while in use."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append(os.getloadavg()[0])
            self._done.wait(self.every)

    def __enter__(self) -> LoadMonitor:
        self.before = os.getloadavg()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.after = os.getloadavg()

    def summary(self) -> dict[str, Any]:
        s = self.samples or [float("nan")]
        return {
            "loadavg_before": [round(v, 2) for v in self.before],
            "loadavg_after": [round(v, 2) for v in self.after],
            "load1_during_min": _r(min(s), 2),
            "load1_during_median": _r(float(np.median(s)), 2),
            "load1_during_max": _r(max(s), 2),
            "samples": len(self.samples),
            "cpus": os.cpu_count(),
            "note": "os.getloadavg()[0] sampled every 5 s; above the CPU count, runnable "
            "processes (most of them other users') queue for the CPUs and wall times stretch",
        }


# -- a process tree's memory and CPU ---------------------------------------------------------


def session_cpu_seconds(session: int | None = None) -> float:
    """CPU seconds (user + system, reaped children included) of the live processes in
    ``session`` (default: this process's session)."""
    session = os.getsid(0) if session is None else session
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def _process_kind(proc: Path) -> str | None:
    """Ray's process title (``ray::ClientAppActor``), the driver, or the executable's name;
    None when the command line is gone (an exited process not yet reaped)."""
    raw = [part.decode(errors="replace") for part in (proc / "cmdline").read_bytes().split(b"\0")]
    if not raw[0]:
        return None
    name = raw[0]
    if name.startswith("ray::ClientApp"):
        return "ray::ClientAppActor"
    if name.startswith("ray::"):
        return name.split()[0].split(".")[0]
    if "benchmarks.bench_scale" in raw:
        return "driver (coordinator + engine)"
    return Path(name).name


class TreeSampler:
    """Samples every process of a session: peak summed RSS and PSS, CPU per process."""

    def __init__(self, session: int) -> None:
        self.session = session
        self.peak_rss_kib = self.peak_pss_kib = 0
        self.pss_by_kind_at_peak: dict[str, int] = {}
        self.ticks: dict[int, int] = {}
        self.kinds: dict[int, str] = {}
        self.count_by_kind_max: dict[str, int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = pss = 0
        pss_by_kind: dict[str, int] = {}
        count_by_kind: dict[str, int] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            pid = int(proc.name)
            try:
                if os.getsid(pid) != self.session:
                    continue
                kind = _process_kind(proc) or self.kinds.get(pid, "?")
                self.kinds[pid] = kind  # the latest title: Ray retitles its workers
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        break
                for line in (proc / "smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        pss_by_kind[kind] = pss_by_kind.get(kind, 0) + int(line.split()[1])
                        break
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                self.ticks[pid] = max(self.ticks.get(pid, 0), int(fields[11]) + int(fields[12]))
                count_by_kind[kind] = count_by_kind.get(kind, 0) + 1
            except (OSError, ValueError, IndexError):
                continue
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        if pss > self.peak_pss_kib:
            self.peak_pss_kib, self.pss_by_kind_at_peak = pss, pss_by_kind
        for kind, count in count_by_kind.items():
            self.count_by_kind_max[kind] = max(self.count_by_kind_max.get(kind, 0), count)

    def _run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(SAMPLE_SECONDS)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        tick = os.sysconf("SC_CLK_TCK")
        by_kind: dict[str, float] = {}
        for pid, ticks in self.ticks.items():
            kind = self.kinds.get(pid, "?")
            by_kind[kind] = by_kind.get(kind, 0.0) + ticks / tick
        return {
            "peak_rss_mb_process_tree": _r(self.peak_rss_kib / 1024, 1),
            "peak_pss_mb_process_tree": _r(self.peak_pss_kib / 1024, 1),
            "peak_pss_mb_by_process": {
                k: _r(v / 1024, 1)
                for k, v in sorted(self.pss_by_kind_at_peak.items(), key=lambda kv: -kv[1])
            },
            "processes_by_kind_max": dict(sorted(self.count_by_kind_max.items())),
            "process_tree_cpu_seconds": _r(sum(by_kind.values()), 1),
            "cpu_seconds_by_process": {
                k: _r(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]) if v >= 0.1
            },
        }


def run_child(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """:func:`federate` (``spec``) in a child process in its own session; its result, with
    the session's peak memory and CPU (:class:`TreeSampler`) added."""
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-child-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench_scale",
            "--child",
            str(spec_path),
            str(out_path),
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        with TreeSampler(proc.pid) as sampler:
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the child's own session: its Ray processes too
                output, _ = proc.communicate()
                raise SystemExit(
                    f"child run timed out after {timeout:.0f} s:\n{output[-3000:]}"
                ) from None
        if proc.returncode != 0 or not out_path.is_file():
            raise SystemExit(f"child run failed ({proc.returncode}):\n{output[-4000:]}")
        result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    result["process_seconds"] = _r(time.perf_counter() - started, 2)
    result.update(sampler.summary())
    return result


def _instrument(began: float) -> list[dict[str, Any]]:
    """Time (wall, and CPU of this session) the coordinator's phases outside the rounds and
    its SecAgg+ stages, in this child process only, by wrapping ``fedcrm.server.app``'s wait
    for the stores and its queries (budget, report) and ``SecAggPlusWorkflow``'s stages.
    Returns the list the wrappers fill: {phase, start, end, cpu_start, cpu_end}."""
    import fedcrm.server.app as coordinator

    phases: list[dict[str, Any]] = []

    def wrap(owner: Any, name: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        inner = getattr(owner, name, None)
        if inner is None:  # renamed: the phases are a detail, the run still counts
            return

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter() - began, session_cpu_seconds()
            try:
                return inner(*args, **kwargs)
            finally:
                record = {
                    "phase": label(args),
                    "start": _r(start),
                    "end": _r(time.perf_counter() - began),
                    "cpu_start": _r(cpu),
                    "cpu_end": _r(session_cpu_seconds()),
                }
                if len(args) >= 4 and hasattr(args[3], "active_node_ids"):
                    record.update(_secagg_parameters(args[3]))
                phases.append(record)

        setattr(owner, name, wrapper)

    wrap(coordinator, "_wait_for_nodes", lambda args: "wait_for_stores")
    wrap(coordinator, "_query", lambda args: str(args[2]) if len(args) > 2 else "query")
    try:
        from flwr.server.workflow import SecAggPlusWorkflow
    except ImportError:
        return phases
    for stage in STAGES:
        wrap(SecAggPlusWorkflow, stage, lambda args, stage=stage: f"secagg.{stage}")
    return phases


def _secagg_parameters(state: Any) -> dict[str, Any]:
    """The SecAgg+ parameters in effect after a stage (Flower's WorkflowState)."""
    neighbours = getattr(state, "nid_to_neighbours", None) or {}
    return {
        "sampled": len(getattr(state, "sampled_node_ids", None) or ()),
        "active": len(getattr(state, "active_node_ids", None) or ()),
        "num_shares": getattr(state, "num_shares", None),
        "threshold": getattr(state, "threshold", None),
        "neighbours": max((len(v) for v in neighbours.values()), default=None),
        "failures": len(getattr(state, "failures", None) or ()),
    }


def federate(spec: dict[str, Any]) -> dict[str, Any]:
    """One churn federation (in this process): ``spec`` = {chain, stores, rounds, overrides};
    works on a private copy of the chain (a run spends the stores' privacy ledgers)."""
    import logging

    from fedcrm.federation import run_federation

    logging.basicConfig(level=logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="fedcrm-bench-fed-"))
    try:
        chain = work / "chain"
        shutil.copytree(spec["chain"], chain)
        marks: list[tuple[int, float, float]] = []
        began = time.perf_counter()
        phases = _instrument(began)

        def on_round(server_round: int, total: int, record: object) -> None:
            marks.append((server_round, time.perf_counter() - began, session_cpu_seconds()))

        result = run_federation(
            work / "run",
            chain,
            spec["stores"],
            overrides={"num-rounds": spec["rounds"], "baselines": False, **spec["overrides"]},
            on_round=on_round,
        )
        wall = time.perf_counter() - began
        summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = (
        "round",
        "fit_seconds",
        "evaluate_seconds",
        "store_seconds_max",
        "store_seconds_mean",
        "fit_results",
        "fit_failures",
        "evaluate_results",
    )
    return {
        "stores": spec["stores"],
        "rounds": result.rounds,
        "overrides": spec["overrides"],
        "wall_seconds": _r(wall, 3),
        "coordinator_seconds": summary.get("training_seconds"),
        "round_end_seconds": [[r, _r(t, 3)] for r, t, _ in marks],
        "round_end_cpu_seconds": [[r, _r(c, 2)] for r, _, c in marks],
        "phases": phases,
        "history": [{key: record.get(key) for key in keys} for record in summary["history"]],
        "final_auc": result.final_auc,
        "participants": len(result.stores),
        "refusals": len(result.refusals),
        "rejections": len(result.rejections),
    }


def round_figures(run: dict[str, Any]) -> dict[str, Any]:
    """Per-round times (fit + evaluate), coordination overhead, SecAgg+ stages and the
    phases outside the rounds of one run."""
    history = run["history"]
    fit = [h["fit_seconds"] or 0.0 for h in history]
    evaluate = [h["evaluate_seconds"] or 0.0 for h in history]
    store_max = [h["store_seconds_max"] for h in history if h.get("store_seconds_max") is not None]
    rounds = [f + e for f, e in zip(fit, evaluate, strict=True)]
    overhead = [
        h["fit_seconds"] - h["store_seconds_max"]
        for h in history
        if h.get("fit_seconds") is not None and h.get("store_seconds_max") is not None
    ]
    phases = {p["phase"]: p for p in run.get("phases", [])}  # queries: one of each kind
    budget = phases.get("query.privacy_budget")
    report = phases.get("query.privacy_report")
    cpu_marks = [c for _, c in run.get("round_end_cpu_seconds", [])]
    round_cpu = None
    if budget and cpu_marks:
        starts = [budget["cpu_end"], *cpu_marks[:-1]]
        round_cpu = [_r(end - start, 2) for start, end in zip(starts, cpu_marks, strict=True)]
    stages: dict[str, dict[str, float | None]] = {}
    for stage in STAGES:
        done = [p for p in run.get("phases", []) if p["phase"] == f"secagg.{stage}"]
        stages[stage] = {
            "seconds_median": _r(_median([p["end"] - p["start"] for p in done])),
            "cpu_seconds_median": _r(_median([p["cpu_end"] - p["cpu_start"] for p in done])),
        }
    ends = [t for _, t in run.get("round_end_seconds", [])]
    parameters = next(
        (
            {k: p[k] for k in ("num_shares", "threshold", "neighbours", "sampled")}
            for p in run.get("phases", [])
            if p["phase"] == "secagg.setup_stage" and "num_shares" in p
        ),
        None,
    )
    med = _median
    later = slice(1, None) if len(rounds) > 1 else slice(None)  # rounds after the first
    return {
        "round_seconds": [_r(v) for v in rounds],
        "round_seconds_median": _r(med(rounds)),
        "round_seconds_first": _r(rounds[0]) if rounds else None,
        "round_seconds_later_median": _r(med(rounds[later])),
        "round_cpu_seconds_later_median": _r(med((round_cpu or [])[later]), 2),
        "coordination_seconds_later_median": _r(med(overhead[later])),
        "fit_seconds_median": _r(med(fit)),
        "evaluate_seconds_median": _r(med(evaluate)),
        "store_seconds_max_median": _r(med(store_max)),
        "coordination_seconds": [_r(v) for v in overhead],
        "coordination_seconds_median": _r(med(overhead)),
        "coordination_share_of_fit_median": _r(
            med(
                [
                    o / h["fit_seconds"]
                    for o, h in zip(overhead, history, strict=False)
                    if h.get("fit_seconds")
                ]
            ),
            3,
        ),
        "round_cpu_seconds": round_cpu,
        "round_cpu_seconds_median": _r(med(round_cpu or []), 2),
        "secagg_stages": stages if any(s["seconds_median"] for s in stages.values()) else None,
        "secagg_parameters": parameters,
        "engine_start_seconds": budget["start"] if budget else None,
        "budget_query_seconds": _r(budget["end"] - budget["start"]) if budget else None,
        "budget_query_cpu_seconds": _r(budget["cpu_end"] - budget["cpu_start"], 2)
        if budget
        else None,
        "end_seconds": _r(run["wall_seconds"] - ends[-1]) if ends else None,
        "report_query_seconds": _r(report["end"] - report["start"]) if report else None,
    }


# -- growth, prediction ----------------------------------------------------------------------


def _line(xs: list[float], ys: list[float]) -> dict[str, float | None]:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    predicted = slope * np.asarray(xs, float) + intercept
    ss_res = float(np.sum((np.asarray(ys) - predicted) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
    return {
        "intercept": _r(float(intercept), 4),
        "slope_per_store": _r(float(slope), 4),
        "r2": _r(1 - ss_res / ss_tot, 4) if ss_tot > 0 and len(xs) > 2 else None,
    }


def growth(xs: list[int], ys: list[float]) -> dict[str, Any]:
    """Line fit over all runs; linearity: the largest run against the line through the two
    smallest; the log-log exponent between the smallest and the largest run."""
    out: dict[str, Any] = {
        "values": ys,
        "per_store": [_r(y / x, 4) for x, y in zip(xs, ys, strict=True)],
    }
    if len(xs) < 2:
        return out
    out["fit_all"] = _line(xs, ys)
    if ys[0] > 0 and ys[-1] > 0:
        out["loglog_exponent"] = _r(float(np.log(ys[-1] / ys[0]) / np.log(xs[-1] / xs[0])), 3)
    if len(xs) >= 3:
        small = _line(xs[:2], ys[:2])
        predicted = (small["slope_per_store"] or 0.0) * xs[-1] + (small["intercept"] or 0.0)
        ratio = ys[-1] / predicted if predicted > 0 else float("inf")
        out["largest_vs_linear_from_smallest_two"] = _r(ratio, 3)
        out["linear_or_better"] = bool(ratio <= LINEAR_TOLERANCE)
    return out


def predict_wall(runs: list[dict[str, Any]], n: int, rounds: int) -> float | None:
    """A run's wall time for n stores, from the runs before it: start-up per store and the
    per-round time extrapolated along the log-log slope of the last two runs (quadratic when
    there is only one: the conservative guess for SecAgg+ with every store sharing with
    every other)."""
    if not runs:
        return None
    last = runs[-1]
    f = last["figures"]
    startup = (f["engine_start_seconds"] or 0.0) + (f["budget_query_seconds"] or 0.0) * (
        n / last["stores"]
    )
    exponent = 2.0
    if len(runs) >= 2:
        prev = runs[-2]
        a, b = prev["figures"]["round_seconds_median"], f["round_seconds_median"]
        if a and b and b > 0 and a > 0:
            exponent = max(1.0, float(np.log(b / a) / np.log(last["stores"] / prev["stores"])))
    per_round = (f["round_seconds_median"] or 0.0) * (n / last["stores"]) ** exponent
    return startup + rounds * per_round + (f["end_seconds"] or 0.0) * (n / last["stores"])


# -- output ----------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = result["runs"]
    n = [r["stores"] for r in runs]
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    ax_time, ax_stage, ax_mem = figure.subplots(1, 3)
    series = (
        ("round_seconds_median", "round (fit + evaluate)", "o-"),
        ("round_seconds_later_median", "rounds after the first", "o:"),
        ("round_cpu_seconds_median", "round CPU (process tree)", "x--"),
        ("store_seconds_max_median", "slowest store's compute", "^:"),
        ("coordination_seconds_median", "coordination (fit − slowest store)", "d-."),
    )
    for key, label, style in series:
        values = [r["figures"].get(key) for r in runs]
        if all(v is not None for v in values):
            ax_time.plot(n, values, style, label=label)
    fit = result["growth"].get("round_seconds", {}).get("fit_all")
    if fit:
        xs = np.linspace(min(n), max(n), 50)
        ax_time.plot(
            xs,
            fit["intercept"] + fit["slope_per_store"] * xs,
            color="grey",
            linewidth=0.8,
            label=f"line fit of round: {fit['slope_per_store']:.2f} s/store",
        )
    contrast = result.get("contrast_no_secagg")
    if contrast and "figures" in contrast:
        ax_time.plot(
            [contrast["stores"]], [contrast["figures"]["round_seconds_median"]], "k*",
            markersize=10, label="round, SecAgg+ off (contrast)",
        )  # fmt: skip
    ax_time.set(xlabel="stores", ylabel="seconds per round (median)", title="Time per round")
    ax_time.legend(fontsize=7)

    bottom = np.zeros(len(runs))
    for stage in STAGES:
        values = np.array(
            [
                ((r["figures"].get("secagg_stages") or {}).get(stage) or {}).get("seconds_median")
                or 0.0
                for r in runs
            ]
        )
        ax_stage.bar([str(x) for x in n], values, bottom=bottom, label=stage.replace("_", " "))
        bottom += values
    evaluate = np.array([r["figures"]["evaluate_seconds_median"] or 0.0 for r in runs])
    ax_stage.bar([str(x) for x in n], evaluate, bottom=bottom, label="federated evaluation")
    ax_stage.set(
        xlabel="stores",
        ylabel="seconds per round (median)",
        title="Round time by SecAgg+ stage (coordinator's view)",
    )
    ax_stage.legend(fontsize=7)

    for key, label, style in (
        ("peak_pss_mb_process_tree", "peak PSS (process tree)", "o-"),
        ("peak_rss_mb_process_tree", "peak RSS sum (over-counts shared pages)", "s--"),
    ):
        ax_mem.plot(n, [r[key] for r in runs], style, label=label)
    ax_mem.set(xlabel="stores", ylabel="MiB", title="Peak memory of the run's process tree")
    ax_mem.set_ylim(bottom=0)
    ax_mem.legend(fontsize=7)
    load = result["load"]
    figure.suptitle(
        f"Federation scale: {result['customers_per_store']} customers/store, "
        f"{result['rounds']} rounds, SecAgg+ {'on' if result['secagg'] else 'off'}, "
        f"{result['store_workers']} store workers; {result['machine']['cpus']} CPUs, 1-min load "
        f"median {load['load1_during_median']} (max {load['load1_during_max']})",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)


def markdown(result: dict[str, Any]) -> str:
    load = result["load"]
    lines = [
        "# Federation scale",
        "",
        f"Written by `{result['command']}` in {result['seconds']:.0f} s on "
        f"{result['machine']['cpus']} CPUs ({result['store_workers']} store workers at once). "
        f"Load during the runs (1-min average): median {load['load1_during_median']}, max "
        f"{load['load1_during_max']} — a shared machine: wall times are inflated and noisy; "
        "CPU seconds are less so.",
        "",
        f"Churn model ({result['model']}), {result['customers_per_store']} customers per store, "
        f"{result['rounds']} rounds, SecAgg+ {'on' if result['secagg'] else 'off'}, preference "
        "and analytics off, no baselines. Round = fit + federated evaluation (median over "
        "rounds; the first round also carries one-off costs: a worker's first training of a "
        "store, the task cache); coordination = fit − slowest store's compute. Round CPU: "
        "CPU seconds of the whole process tree per round (less sensitive to other users' load "
        "than wall time).",
        "",
        "| stores | trained (left out) | round s (1st, later) | round CPU s | slowest store s | "
        "coordination s | SecAgg+ shares / threshold | SecAgg+ stages s (setup / share keys / "
        "masked vectors / unmask) | start-up s (engine + budget query) | run wall s | "
        "peak PSS MiB | peak RSS-sum MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        f = r["figures"]
        stages = f.get("secagg_stages") or {}
        params = f.get("secagg_parameters") or {}
        stage_text = " / ".join(str((stages.get(s) or {}).get("seconds_median")) for s in STAGES)
        lines.append(
            f"| {r['stores']} | {params.get('sampled', '—')} ({r['refusals']}) | "
            f"{f['round_seconds_median']} ({f['round_seconds_first']}, "
            f"{f['round_seconds_later_median']}) | {f['round_cpu_seconds_median']} | "
            f"{f['store_seconds_max_median']} | {f['coordination_seconds_median']} | "
            f"{params.get('num_shares', '—')} / {params.get('threshold', '—')} | "
            f"{stage_text if stages else '—'} | {f['engine_start_seconds']} + "
            f"{f['budget_query_seconds']} | {r['wall_seconds']:.1f} | "
            f"{r['peak_pss_mb_process_tree']} | {r['peak_rss_mb_process_tree']} |"
        )
    for s in result["skipped"]:
        lines.append(f"| {s['stores']} | skipped: {s['reason']} ||||||||||| |")
    lines += [
        "",
        "Growth (line a + b·n over the runs; linear or better: the largest run ≤ "
        f"{LINEAR_TOLERANCE}x the line through the two smallest; k: log-log slope, smallest "
        "to largest run):",
        "",
    ]
    for name, g in result["growth"].items():
        fit = g.get("fit_all") or {}
        lines.append(
            f"- **{name}**: {g['values']}; b = {fit.get('slope_per_store')} per store, a = "
            f"{fit.get('intercept')}, R² = {fit.get('r2')}; per store {g['per_store']}; "
            f"largest / linear = {g.get('largest_vs_linear_from_smallest_two')}; k = "
            f"{g.get('loglog_exponent')}; linear or better: **{g.get('linear_or_better')}**"
        )
    contrast = result.get("contrast_no_secagg")
    if contrast and "figures" in contrast:
        on = next(r for r in result["runs"] if r["stores"] == contrast["stores"])
        c, f = contrast["figures"], on["figures"]
        lines += [
            "",
            f"Contrast at {contrast['stores']} stores, SecAgg+ off (the coordinator sees each "
            f"update; not a deployable setting): round {c['round_seconds_median']} s (CPU "
            f"{c['round_cpu_seconds_median']} s) against {f['round_seconds_median']} s (CPU "
            f"{f['round_cpu_seconds_median']} s) with SecAgg+; coordination "
            f"{c['coordination_seconds_median']} s against {f['coordination_seconds_median']} s; "
            f"peak PSS {contrast['peak_pss_mb_process_tree']} MiB.",
        ]
    elif contrast:
        lines += [
            "",
            f"Contrast at {contrast['stores']} stores, SecAgg+ off: skipped "
            f"({contrast['skipped']}).",
        ]
    lines += [
        "",
        "SecAgg+ Shamir secret sharing alone, with each run's parameters (Flower's functions, "
        "one thread, this machine): each store splits 2 secrets into its shares per round, the "
        "coordinator combines one secret per store:",
        "",
        "| stores | shares per store | threshold | split s | combine s | per round s "
        "(n·2·split + n·combine) |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {c['stores']} | {c['shares']} | {c['threshold']} | {c['split_seconds']} | "
            f"{c['combine_seconds']} | {c['per_round_seconds']} |"
            for c in result["secagg_shamir"]
        ),
    ]
    lines += ["", "CPU seconds by process (largest run):", ""]
    if result["runs"]:
        big = result["runs"][-1]
        lines.append(
            "- "
            + ", ".join(f"{k} {v}" for k, v in big["cpu_seconds_by_process"].items())
            + f"; processes at most: {big['processes_by_kind_max']}; PSS at the peak: "
            f"{big['peak_pss_mb_by_process']} MiB"
        )
    lines += ["", *(f"- {note}" for note in result["notes"]), ""]
    return "\n".join(lines)


def shamir_cost(n: int, shares: int, threshold: int) -> dict[str, Any]:
    """Seconds of SecAgg+'s Shamir secret sharing in a round of n stores with the run's
    ``shares`` and ``threshold`` (Flower's own functions, this process, one thread): each
    store splits 2 secrets (its mask seed and first secret key, 32 bytes) into ``shares``
    shares; in the unmask stage the coordinator combines one secret per store from the shares
    it collected (all ``shares`` of them when no store dropped)."""
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares

    split, combine = [], []
    for _ in range(3):
        secret = os.urandom(32)
        began = time.perf_counter()
        pieces = create_shares(secret, threshold, shares)
        split.append(time.perf_counter() - began)
        began = time.perf_counter()
        if combine_shares(pieces) != secret:
            raise RuntimeError("Shamir round trip failed")
        combine.append(time.perf_counter() - began)
    s, c = float(np.median(split)), float(np.median(combine))
    return {
        "stores": n,
        "shares": shares,
        "threshold": threshold,
        "split_seconds": _r(s, 5),
        "combine_seconds": _r(c, 5),
        "per_round_seconds": _r(n * 2 * s + n * c, 3),
    }


def _measure(
    chain: Path, n: int, rounds: int, overrides: dict[str, Any], predicted: float | None
) -> dict[str, Any]:
    """One federated run of the first ``n`` stores in a child process, with its figures."""
    spec = {"chain": str(chain), "stores": n, "rounds": rounds, "overrides": overrides}
    load_before = os.getloadavg()[0]
    result = run_child(spec)
    result["load1_before"] = _r(load_before, 2)
    result["load1_after"] = _r(os.getloadavg()[0], 2)
    result["predicted_wall_seconds"] = _r(predicted, 0)
    result["figures"] = f = round_figures(result)
    print(
        f"{n:4d} stores (SecAgg+ {'on' if overrides.get('secagg', True) else 'off'}): round "
        f"{f['round_seconds_median']} s (CPU {f['round_cpu_seconds_median']} s, coordination "
        f"{f['coordination_seconds_median']} s), start-up {f['engine_start_seconds']} + "
        f"{f['budget_query_seconds']} s, wall {result['wall_seconds']:.1f} s, peak PSS "
        f"{result['peak_pss_mb_process_tree']} MiB, load {result['load1_before']} -> "
        f"{result['load1_after']}",
        flush=True,
    )
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fedcrm.synthetic.chain import ChainParams, generate_chain

    started = time.perf_counter()
    counts = sorted(set(args.stores))
    overrides = {
        "preference": False,
        "secagg": not args.no_secagg,
        "model": args.model,
        "node-timeout": args.node_timeout,
    }
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-scale-") as tmp, LoadMonitor() as load:
        chain = Path(tmp) / "chain"
        began = time.perf_counter()
        params = ChainParams(
            stores=max(counts), customers_per_store=args.customers_per_store, seed=args.seed
        )
        generate_chain(chain, params)
        generate_seconds = time.perf_counter() - began
        print(f"generated {max(counts)} stores in {generate_seconds:.1f} s", flush=True)
        for n in counts:
            predicted = predict_wall(runs, n, args.rounds)
            left = args.budget_seconds - (time.perf_counter() - started)
            if args.budget_seconds and predicted is not None and predicted > left:
                reason = (
                    f"predicted {predicted:.0f} s from the runs before it, {max(left, 0):.0f} s "
                    f"of the {args.budget_seconds:.0f} s budget left"
                )
                skipped.append(
                    {"stores": n, "predicted_wall_seconds": _r(predicted, 0), "reason": reason}
                )
                print(f"{n:4d} stores: skipped ({reason})", flush=True)
                continue
            runs.append(_measure(chain, n, args.rounds, overrides, predicted))
        contrast = None
        if runs and not args.no_secagg and args.contrast:
            n = runs[-1]["stores"]
            predicted = runs[-1]["wall_seconds"]  # SecAgg+ off can only be cheaper
            left = args.budget_seconds - (time.perf_counter() - started)
            if args.budget_seconds and predicted > left:
                contrast = {
                    "stores": n,
                    "skipped": f"predicted up to {predicted:.0f} s, "
                    f"{max(left, 0):.0f} s of the budget left",
                }
                print(f"SecAgg+ off at {n} stores: skipped ({contrast['skipped']})", flush=True)
            else:
                print(f"SecAgg+ off at {n} stores, for contrast:", flush=True)
                plain = {**overrides, "secagg": False}
                contrast = _measure(chain, n, args.rounds, plain, None)
    xs = [r["stores"] for r in runs]
    measures: dict[str, list[Any]] = {
        "round_seconds": [r["figures"]["round_seconds_median"] for r in runs],
        "round_seconds_later": [r["figures"]["round_seconds_later_median"] for r in runs],
        "round_cpu_seconds": [r["figures"]["round_cpu_seconds_median"] for r in runs],
        "round_cpu_seconds_later": [r["figures"]["round_cpu_seconds_later_median"] for r in runs],
        "coordination_seconds": [r["figures"]["coordination_seconds_median"] for r in runs],
        "coordination_seconds_later": [
            r["figures"]["coordination_seconds_later_median"] for r in runs
        ],
        "store_seconds_max": [r["figures"]["store_seconds_max_median"] for r in runs],
        **{
            f"secagg_{stage}_seconds": [
                ((r["figures"].get("secagg_stages") or {}).get(stage) or {}).get("seconds_median")
                for r in runs
            ]
            for stage in STAGES
        },
        "budget_query_cpu_seconds": [r["figures"]["budget_query_cpu_seconds"] for r in runs],
        "peak_pss_mb": [r["peak_pss_mb_process_tree"] for r in runs],
        "peak_rss_mb": [r["peak_rss_mb_process_tree"] for r in runs],
        "run_wall_seconds": [r["wall_seconds"] for r in runs],
    }
    cpus = os.cpu_count() or 1
    workers = max(r["processes_by_kind_max"].get("ray::ClientAppActor", 0) for r in runs) or cpus
    return {
        "benchmark": "scale",
        "command": " ".join(["python -m benchmarks.bench_scale", *sys.argv[1:]]),
        "stores": counts,
        "customers_per_store": args.customers_per_store,
        "rounds": args.rounds,
        "model": args.model,
        "secagg": not args.no_secagg,
        "seed": args.seed,
        "budget_seconds": args.budget_seconds,
        "node_timeout_seconds": args.node_timeout,
        "store_workers": workers,
        "generate_seconds": _r(generate_seconds, 1),
        "runs": runs,
        "skipped": skipped,
        "contrast_no_secagg": contrast,
        "secagg_shamir": [
            shamir_cost(r["stores"], p["num_shares"], p["threshold"])
            for r in runs
            if (p := r["figures"].get("secagg_parameters") or {}).get("num_shares")
        ],
        "growth": {
            k: growth(xs, v) for k, v in measures.items() if v and all(y is not None for y in v)
        },
        "notes": [
            f"Engine concurrency: run_federation gives Ray os.cpu_count() = {cpus} CPUs and "
            f"each store 1 CPU (client_resources num_cpus = 1): {workers} store workers "
            "(ray::ClientAppActor processes, counted) run at once; a round's messages to n "
            "stores queue for them in every SecAgg+ stage.",
            "SecAgg+ parameters in effect (recorded from the coordinator's workflow state): "
            + "; ".join(
                f"{r['stores']} stores: {p.get('num_shares')} shares per store (neighbours), "
                f"threshold {p.get('threshold')}"
                for r in runs
                if (p := r["figures"].get("secagg_parameters") or {})
            )
            + ". Each store's Shamir and masking work grows with its number of shares; a "
            "round's with n x shares (n² when every store shares with every other).",
            f"node-timeout = {args.node_timeout:g} s (fedcrm's default: 300 s): the budget "
            "query sends every store its first message at once and the engine's workers answer "
            "them one store after another (imports, preparation, σ planning), so with many "
            "stores it can outlast a short timeout; a store without an answer in time is left "
            "out of the run (fail closed, counted in 'left out').",
            "Memory: peak of the summed PSS (and RSS) of every process of the run's session, "
            "sampled every 0.25 s: the driver (coordinator, engine, the simulated stores' node "
            "state), Ray's daemons and the store workers.",
        ],
        "load": load.summary(),
        "machine": machine(),
        "seconds": _r(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--customers-per-store", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="logistic", choices=("logistic", "mlp"))
    parser.add_argument("--no-secagg", action="store_true")
    parser.add_argument(
        "--contrast", action="store_true", help="also run the largest n with SecAgg+ off"
    )
    parser.add_argument("--budget-seconds", type=float, default=600.0, help="0: no budget")
    parser.add_argument(
        "--node-timeout",
        type=float,
        default=900.0,
        help="run_config node-timeout (default 300 s in fedcrm): how long the coordinator "
        "waits for the stores' answers",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="JSON to write (.md and .png beside it)"
    )
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(Path(args.child[0]).read_text(encoding="utf-8"))
        Path(args.child[1]).write_text(json.dumps(federate(spec)), encoding="utf-8")
        return
    result = run(args)
    path: Path = args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    plot(result, path.with_suffix(".png"))
    print(path.with_suffix(".md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
