"""Benchmark ``fedcrm demo``: wall time and peak memory of the whole process tree.

    python -m benchmarks.bench_demo [--rounds R]
    python -m benchmarks.bench_demo --render-only

Runs ``fedcrm demo --fresh`` (generate the default chain, train the churn and then the
preference model across its 8 stores with DP-SGD under SecAgg+, the baselines, score one
store) in a subprocess in a temporary directory. The simulation engine runs every store in
its own Ray worker process, so ``ru_maxrss`` of one process says little: this samples, every
0.25 s, the summed resident memory (``VmRSS``) of every process in the demo's session (the
CLI, Ray's daemons and workers) and reports the peak of that sum, which over-counts pages
shared between processes. Writes ``benchmarks/results/demo.json``, ``demo.md`` and
``demo.png`` (``--render-only``: only the last two, from the JSON already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import reporting

NAME = "demo"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"


def _session_rss_mb(session: int) -> float:
    """Summed VmRSS (MiB) of the processes whose session id is ``session``."""
    total_kib = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
                    break
        except (OSError, ProcessLookupError):
            continue
    return total_kib / 1024


def run(rounds: int | None, workdir: Path) -> dict[str, object]:
    cli = Path(sys.executable).with_name("fedcrm")
    command = [str(cli), "demo", "--fresh", "--out", str(workdir / "run"),
               "--data", str(workdir / "chain"), "--config", str(CONFIG)]  # fmt: skip
    if rounds is not None:
        command += ["--rounds", str(rounds)]
    env = {**os.environ, "COLUMNS": "120"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _session_rss_mb(proc.pid))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"fedcrm demo failed ({proc.returncode}):\n{output[-3000:]}")
    summary = json.loads((workdir / "run" / "summary.json").read_text(encoding="utf-8"))
    churn = summary.get("churn", {})
    return {
        "benchmark": "demo",
        "command": " ".join(["fedcrm", *command[1:]]),
        "rounds": summary.get("rounds"),
        "stores": len(summary.get("privacy", {}).get("stores", {})),
        "wall_seconds": round(seconds, 1),
        "run_wall_seconds": summary.get("wall_seconds"),
        "peak_rss_mb_process_tree": round(peak, 1),
        "federated_auc": churn.get("auc"),
        "centralized_auc": churn.get("centralized_auc"),
        "local_only_auc": churn.get("local_only_auc"),
        "preference": {
            key: value
            for key, value in summary.get("preference", {}).items()
            if key.endswith("_at_10") or key in ("skipped", "training_seconds", "categories")
        },
        "max_store_epsilon": max(
            (s["epsilon"] for s in summary.get("privacy", {}).get("stores", {}).values()),
            default=None,
        ),
        "delta": summary.get("privacy", {}).get("delta"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _auc_bars(result: dict[str, Any]) -> dict[str, float]:
    bars = {
        "federated\n(DP-SGD, SecAgg+)": result.get("federated_auc"),
        "centralized\n(pooled, non-private)": result.get("centralized_auc"),
        "local only\n(each store alone)": result.get("local_only_auc"),
    }
    return {k: float(v) for k, v in bars.items() if v is not None}


def _recall_bars(result: dict[str, Any]) -> dict[str, float]:
    pref = result.get("preference") or {}
    bars = {
        "federated": pref.get("recall_at_10"),
        "centralized": pref.get("centralized_recall_at_10"),
        "buy again\n(own history)": pref.get("own_history_recall_at_10"),
        "popularity": pref.get("popularity_recall_at_10"),
    }
    return {k: float(v) for k, v in bars.items() if v is not None}


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a ``demo`` result."""
    pref = result.get("preference") or {}
    outside = result["wall_seconds"] - (result.get("run_wall_seconds") or 0.0)
    f = reporting.fmt
    lines = [
        "# The demo end to end (`fedcrm demo`)",
        "",
        reporting.run_header(result, "benchmarks.bench_demo"),
        "",
        f"It ran `{result['command']}`: generate the default chain, train the churn and then "
        f"the preference model across its {result['stores']} stores with DP-SGD under SecAgg+ "
        f"({result['rounds']} rounds), the baselines, score one store. Peak memory is the "
        "summed VmRSS of every process of the demo's session (CLI, Ray daemons and workers), "
        "sampled every 0.25 s; it over-counts pages shared between processes.",
        "",
        *reporting.table(
            ["measure", "value"],
            [
                ("wall seconds, whole demo", f(result["wall_seconds"], 1)),
                (
                    "— the federated run (training, baselines, plot: summary.json)",
                    f(result.get("run_wall_seconds"), 1),
                ),
                ("— of which preference training", f(pref.get("training_seconds"), 1)),
                ("— outside the run (CLI start, chain generation, scoring)", f(outside, 1)),
                ("peak RSS of the process tree, MB", f(result["peak_rss_mb_process_tree"], 1)),
                ("churn AUC: federated (DP-SGD, SecAgg+)", f(result.get("federated_auc"), 4)),
                (
                    "churn AUC: centralized (pooled, non-private)",
                    f(result.get("centralized_auc"), 4),
                ),
                ("churn AUC: local only", f(result.get("local_only_auc"), 4)),
                ("preference recall@10: federated", f(pref.get("recall_at_10"), 4)),
                ("preference recall@10: centralized", f(pref.get("centralized_recall_at_10"), 4)),
                (
                    "preference recall@10: buy again (own history)",
                    f(pref.get("own_history_recall_at_10"), 4),
                ),
                ("preference recall@10: popularity", f(pref.get("popularity_recall_at_10"), 4)),
                (
                    "preference NDCG@10: federated / centralized / buy again",
                    " / ".join(
                        f(pref.get(key), 4)
                        for key in (
                            "ndcg_at_10",
                            "centralized_ndcg_at_10",
                            "own_history_ndcg_at_10",
                        )
                    ),
                ),
                ("preference categories", f(pref.get("categories"))),
                (
                    "largest store ε spent (δ)",
                    f"{f(result.get('max_store_epsilon'), 3)} ({result.get('delta')})",
                ),
            ],
        ),
        "",
        "## Findings",
        "",
    ]
    fed, cen, loc = (result.get(k) for k in ("federated_auc", "centralized_auc", "local_only_auc"))
    if fed is not None and cen is not None and loc is not None:
        lines.append(
            f"- Churn: the federated model's AUC {fed:.3f} is {cen - fed:.3f} below centralized "
            f"non-private training ({cen:.3f}) and {fed - loc:+.3f} against each store alone "
            f"({loc:.3f})."
        )
    rec = pref.get("recall_at_10")
    if rec is not None and pref.get("own_history_recall_at_10") is not None:
        lines.append(
            f"- Preference: federated recall@10 {rec:.3f} against "
            f"{pref['popularity_recall_at_10']:.3f} for popularity and "
            f"{pref['own_history_recall_at_10']:.3f} for buy-again "
            f"(centralized {pref['centralized_recall_at_10']:.3f})."
        )
    lines += [
        f"- The whole demo takes {result['wall_seconds']} s on {result['cpus']} CPUs, "
        f"{result.get('run_wall_seconds')} s of it the federated run; its processes together "
        f"peak at {result['peak_rss_mb_process_tree'] / 1024:.2f} GiB of summed RSS.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """AUCs, recall@10 and the wall-time split of a ``demo`` result."""
    figure = reporting.new_figure(15, 4.6)
    ax_auc, ax_rec, ax_time = figure.subplots(1, 3)
    aucs = _auc_bars(result)
    bars = ax_auc.bar(list(aucs), list(aucs.values()), color=["tab:blue", "tab:gray", "tab:orange"])
    reporting.label_bars(ax_auc, bars, [f"{v:.3f}" for v in aucs.values()])
    low = min(aucs.values(), default=0.5)
    ax_auc.set_ylim(max(0.0, low - 0.05), min(1.0, max(aucs.values(), default=0.95) + 0.02))
    ax_auc.set(ylabel="AUC (held-out customers)", title="Churn model AUC (y axis cut)")
    ax_auc.tick_params(axis="x", labelsize=8)

    recalls = _recall_bars(result)
    colors = ["tab:blue", "tab:gray", "tab:green", "tab:orange"][: len(recalls)]
    bars = ax_rec.bar(list(recalls), list(recalls.values()), color=colors)
    reporting.label_bars(ax_rec, bars, [f"{v:.3f}" for v in recalls.values()])
    ax_rec.set(ylabel="recall@10", title="Preference model recall@10")
    ax_rec.set_ylim(0, max(recalls.values(), default=1.0) * 1.2)
    ax_rec.tick_params(axis="x", labelsize=8)

    pref_seconds = (result.get("preference") or {}).get("training_seconds") or 0.0
    run_wall = result.get("run_wall_seconds") or 0.0
    parts = {
        "preference training": pref_seconds,
        "rest of the federated run\n(churn, baselines, plot, ...)": max(
            0.0, run_wall - pref_seconds
        ),
        "outside the run\n(CLI, chain, scoring)": max(0.0, result["wall_seconds"] - run_wall),
    }
    bottom = 0.0
    for (label, value), color in zip(
        parts.items(), ["tab:purple", "tab:blue", "tab:gray"], strict=True
    ):
        ax_time.bar(["demo"], [value], bottom=bottom, color=color, label=f"{label}: {value:.1f} s")
        bottom += value
    ax_time.set(ylabel="seconds", title=f"Wall time: {result['wall_seconds']} s")
    ax_time.set_xlim(-0.6, 2.4)
    ax_time.legend(fontsize=8, loc="center right")
    figure.suptitle(
        f"fedcrm demo: {result['stores']} stores, {result['rounds']} rounds; peak RSS of the "
        f"process tree {result['peak_rss_mb_process_tree']:,.0f} MB; {result['cpus']} CPUs",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    with (
        reporting.RunInfo("benchmarks.bench_demo") as info,
        tempfile.TemporaryDirectory(prefix="fedcrm-bench-demo-") as tmp,
    ):
        result = run(args.rounds, Path(tmp))
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
