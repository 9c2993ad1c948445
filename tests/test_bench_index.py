"""`make bench`'s index: one document of one run, and its copy inside docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run_all


def _manifest(ok_cost: bool = True) -> dict:
    return {
        "source": {"commit": "0123456789abcdef", "dirty": False},
        "started": "2026-11-23T19:00:00Z",
        "finished": "2026-11-23T20:00:00Z",
        "seconds": 3600.0,
        "machine": {
            "cpus": 2,
            "memory_total_mb": 24576.0,
            "python": "3.11.7",
            "torch": "2.13.0",
            "flwr": "1.41.0",
        },
        "benchmarks": [
            {
                "module": "benchmarks.bench_cost",
                "name": "cost",
                "started": "2026-11-23T19:00:00Z",
                "seconds": 80.0,
                "exit_code": 0 if ok_cost else 1,
                "ok": ok_cost,
                "load1_median": 1.1,
                "load1_max": 2.0,
            }
        ],
    }


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "benchmarks" / "results"
    out.mkdir(parents=True)
    (out / "cost.md").write_text("# Cost\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", encoding="utf-8")
    (out / "cost.png").write_bytes(b"\x89PNG")
    (out / "scale.md").write_text("# Scale\n\nsee [paper](https://example.org/x)\n")
    monkeypatch.setattr(run_all, "RESULTS", out)
    monkeypatch.setattr(run_all, "ROOT", tmp_path)
    monkeypatch.setattr(run_all, "DOCS", tmp_path / "docs" / "benchmarks.md")
    return out


def test_index_carries_the_run_and_every_report(results: Path) -> None:
    index = run_all.index_markdown(_manifest())
    assert "Commit 0123456789ab;" in index
    assert "| [cost](#cost) `benchmarks.bench_cost` | 2026-11-23T19:00:00Z | 80.0 | ok |" in index
    assert "## Cost" in index  # demoted under the index's title
    assert "![cost](cost.png)" in index
    assert "*scale: not part of this run; the files below are older.*" in index
    assert "No `demo.md` was written." in index


def test_a_failed_benchmark_is_marked(results: Path) -> None:
    assert "**failed** (exit 1)" in run_all.index_markdown(_manifest(ok_cost=False))


def test_docs_get_the_index_between_the_markers_only(results: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text(
        f"# Benchmarks\n\nhand-written\n\n{run_all.BEGIN}\nold tables\n{run_all.END}\n\ntail\n",
        encoding="utf-8",
    )
    run_all._update_docs(run_all.index_markdown(_manifest()))
    text = docs.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nhand-written\n\n")
    assert text.endswith(f"{run_all.END}\n\ntail\n")
    assert "old tables" not in text
    assert "![cost](../benchmarks/results/cost.png)" in text
    assert "[cost](#cost)" in text
    assert "[paper](https://example.org/x)" in text
    assert "### Cost" in text  # two levels under docs' title


def test_docs_without_markers_are_left_alone(results: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir()
    docs.write_text("# Benchmarks\n\nno markers\n", encoding="utf-8")
    run_all._update_docs(run_all.index_markdown(_manifest()))
    assert docs.read_text(encoding="utf-8") == "# Benchmarks\n\nno markers\n"
