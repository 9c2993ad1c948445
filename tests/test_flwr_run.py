"""The repo is a Flower app: ``flwr run`` completes a small federation (3 stores, 1 round).

``flwr run`` rewrites the app's pyproject.toml on first use and leaves its local SuperLink
running, so the test runs a copy of pyproject.toml (the components are imported from the
installed package) under its own ``FLWR_HOME`` and stops that SuperLink afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _superlinks_of(flwr_home: Path) -> list[int]:
    """PIDs of the SuperLinks that ``flwr run`` started with this FLWR_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"flower-superlink" in cmdline and str(flwr_home).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def flower_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    yield env
    for pid in _superlinks_of(home):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _superlinks_of(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _superlinks_of(home):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to stop the link")
def test_flwr_run_completes_a_small_federation(tmp_path: Path, flower_env: dict[str, str]):
    if shutil.which("flwr", path=flower_env["PATH"]) is None:
        pytest.fail("the flwr CLI is not installed next to this Python")
    chain, run_dir, app_dir = tmp_path / "chain", tmp_path / "run", tmp_path / "app"
    generate_chain(chain, ChainParams(stores=3, customers_per_store=300, seed=5))
    app_dir.mkdir()
    shutil.copy(REPO / "pyproject.toml", app_dir / "pyproject.toml")
    run_config = (
        f'data-dir="{chain}" run-dir="{run_dir}" num-rounds=1 expected-stores=3 '
        "lifetime-epsilon=10.0 batch-size=64"
    )
    started = subprocess.run(
        ["flwr", "run", str(app_dir), "local", "--stream",
         "--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
         "--run-config", run_config],
        env=flower_env, check=True, timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    run_id = re.search(r"Successfully started run (\d+)", started.stdout + started.stderr)
    assert run_id, started.stdout[-2000:]
    listing = subprocess.run(
        ["flwr", "ls", "local", "--format", "json"],
        env=flower_env, check=True, timeout=120, capture_output=True, text=True,
    )  # fmt: skip
    # this run's status (a local SuperLink already running on the default port may list
    # others); --stream exits 0 regardless, the status is the verdict
    status = {r["run-id"]: r["status"] for r in json.loads(listing.stdout)["runs"]}
    assert status[run_id.group(1)] == "finished:completed"

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    card = json.loads((run_dir / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["federation"]["secure_aggregation"] is True  # the app's default
    assert card["federation"]["stores"] == 3
    assert len(summary["stores"]) == 3
    assert (run_dir / "model" / "churn.pt").is_file()
    assert (run_dir / "checkpoints" / "round_001.npz").is_file()
