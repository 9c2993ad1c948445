"""Benchmark ``fedcrm demo``: wall time and peak memory of the whole process tree.

    python -m benchmarks.bench_demo [--rounds R]

Runs ``fedcrm demo --fresh`` (generate the default chain, train the churn and then the
preference model across its 8 stores with DP-SGD under SecAgg+, the baselines, score one
store) in a subprocess in a temporary directory. The simulation engine runs every store in
its own Ray worker process, so ``ru_maxrss`` of one process says little: this samples, every
0.25 s, the summed resident memory (``VmRSS``) of every process in the demo's session (the
CLI, Ray's daemons and workers) and reports the peak of that sum, which over-counts pages
shared between processes. Writes ``benchmarks/results/demo.json``.
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

RESULTS = Path(__file__).resolve().parent / "results" / "demo.json"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-demo-") as tmp:
        result = run(args.rounds, Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
