"""Run every benchmark, each in its own process, and write the run's index.

Each benchmark writes ``benchmarks/results/<name>.json`` (and ``.md``, ``.png``). A fresh
process per benchmark keeps the in-process peak memory (``ru_maxrss``) of one from counting
another's. This script adds ``benchmarks/results/run.json`` — the commit, when each benchmark
started and how long it took, whether it succeeded, the machine's load meanwhile — and
``benchmarks/results/index.md``: that manifest followed by every benchmark's Markdown report
and plot, i.e. every table of one ``make bench`` run in one document. A benchmark that fails is
recorded as failed, the others still run, and the script exits non-zero at the end.

``python -m benchmarks.run_all --only cost scale`` runs a subset (the index then lists the
others' results as not part of this run); ``--index-only`` rewrites the index from the files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_scale import LoadMonitor, machine

RESULTS = Path(__file__).resolve().parent / "results"
MANIFEST = RESULTS / "run.json"
INDEX = RESULTS / "index.md"
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
#: docs/benchmarks.md holds the index between these lines (images re-pointed from docs/).
BEGIN = "<!-- make bench: generated from benchmarks/results, do not edit below -->"
END = "<!-- make bench: end of generated part -->"

#: (module, result name), in the order they run: cheap data benchmarks first.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("benchmarks.bench_generate", "generate"),
    ("benchmarks.bench_import", "import"),
    ("benchmarks.bench_prepare", "prepare"),
    ("benchmarks.bench_demo", "demo"),
    ("benchmarks.bench_preference", "preference"),
    ("benchmarks.bench_analytics", "analytics"),
    ("benchmarks.bench_privacy_audit", "privacy_audit"),
    ("benchmarks.bench_cost", "cost"),
    ("benchmarks.bench_scale", "scale"),
    ("benchmarks.bench_realdata", "realdata"),
    ("benchmarks.bench_deployment", "deployment"),
)


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _source() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def run_one(module: str, name: str) -> dict[str, Any]:
    """Run one benchmark in a child process; its output goes to this script's output."""
    print(f"== {module}", flush=True)
    started, began = _utc(), time.perf_counter()
    with LoadMonitor() as load:
        code = subprocess.call([sys.executable, "-m", module], cwd=ROOT)
    seconds = round(time.perf_counter() - began, 1)
    print(f"== {module}: exit {code} after {seconds} s", flush=True)
    return {
        "module": module,
        "name": name,
        "started": started,
        "seconds": seconds,
        "exit_code": code,
        "ok": code == 0,
        "load1_median": load.summary()["load1_during_median"],
        "load1_max": load.summary()["load1_during_max"],
    }


def index_markdown(manifest: dict[str, Any]) -> str:
    """The manifest as a table, then each benchmark's own report and plot."""
    src = manifest["source"]
    commit = (src.get("commit") or "unknown")[:12] + (" (modified)" if src.get("dirty") else "")
    lines = [
        "# Benchmark results of one `make bench` run",
        "",
        f"Commit {commit}; started {manifest['started']}, finished {manifest['finished']} "
        f"({manifest['seconds'] / 60:.1f} min) on {manifest['machine']['cpus']} CPUs, "
        f"{manifest['machine']['memory_total_mb'] / 1024:.0f} GB, Python "
        f"{manifest['machine']['python']}, torch {manifest['machine']['torch']}, flwr "
        f"{manifest['machine']['flwr']}. Reproduce: `make bench` (or "
        "`python -m benchmarks.run_all`).",
        "",
        "| benchmark | started (UTC) | seconds | status | 1-min load (median / max) |",
        "|---|---|---:|---|---|",
    ]
    for b in manifest["benchmarks"]:
        status = "ok" if b["ok"] else f"**failed** (exit {b['exit_code']})"
        lines.append(
            f"| [{b['name']}](#{b['name']}) `{b['module']}` | {b['started']} | {b['seconds']} | "
            f"{status} | {b['load1_median']} / {b['load1_max']} |"
        )
    ran = {b["name"] for b in manifest["benchmarks"]}
    for _, name in BENCHMARKS:
        report, figure = RESULTS / f"{name}.md", RESULTS / f"{name}.png"
        lines += ["", f'<a id="{name}"></a>', ""]
        if name not in ran:
            lines.append(f"*{name}: not part of this run; the files below are older.*")
            lines.append("")
        if report.exists():
            lines += [_demoted(report.read_text(encoding="utf-8")).rstrip(), ""]
        else:
            lines += [f"## {name}", "", f"No `{report.name}` was written.", ""]
        if figure.exists():
            lines += [f"![{name}]({figure.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _demoted(markdown: str) -> str:
    """Every heading one level down, so the reports nest under the index's title."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [name for _, name in BENCHMARKS]
    parser.add_argument("--only", nargs="+", choices=names, help="run these benchmarks only")
    parser.add_argument("--index-only", action="store_true", help="rewrite index.md from run.json")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.index_only:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    else:
        chosen = [(m, n) for m, n in BENCHMARKS if not args.only or n in args.only]
        started, began = _utc(), time.perf_counter()
        manifest = {
            "source": _source(),
            "started": started,
            "machine": machine(),
            "benchmarks": [],
        }
        for module, name in chosen:
            manifest["benchmarks"].append(run_one(module, name))
            manifest["finished"] = _utc()
            manifest["seconds"] = round(time.perf_counter() - began, 1)
            _write(MANIFEST, json.dumps(manifest, indent=2) + "\n")  # progress survives a crash
    index = index_markdown(manifest)
    _write(INDEX, index)
    _update_docs(index)
    failed = [b["name"] for b in manifest["benchmarks"] if not b["ok"]]
    print(f"wrote {INDEX.relative_to(ROOT)}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


def _update_docs(index: str) -> None:
    """Replace the generated part of docs/benchmarks.md (between BEGIN and END) with the
    index, its headings one level further down and its images pointing into results/."""
    if not DOCS.exists():
        return
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{DOCS.relative_to(ROOT)} has no generated part; left as it is", file=sys.stderr)
        return
    body = re.sub(r"\]\((?!https?:|#|/)", "](../benchmarks/results/", _demoted(index))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    _write(DOCS, f"{head}{BEGIN}\n\n{body}\n{END}{tail}")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
