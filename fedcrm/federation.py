"""Run the churn federation on Flower's simulation engine, in-process.

:func:`run_federation` builds the ServerApp (:mod:`fedcrm.server.app`) and the ClientApp
(:mod:`fedcrm.clients.app`) with the run's configuration baked in — ``run_simulation`` passes
no run_config — gives each virtual store one CPU, runs the federation and reads the result
back from the run directory (``summary.json``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcrm.data.layout import discover_stores
from fedcrm.errors import ConfigError
from fedcrm.server.checkpoints import RunDirectory
from fedcrm.server.run_config import FederationConfig

__all__ = ["BASELINES_KEY", "FederationResult", "run_federation"]

logger = logging.getLogger(__name__)

#: overrides flag (default true): add the centralized / local-only baselines to summary.json
BASELINES_KEY = "baselines"


@dataclass(frozen=True)
class FederationResult:
    """What a federated run produced; every path lies inside ``run_dir``."""

    run_dir: Path
    rounds: tuple[dict[str, Any], ...]
    final_auc: float | None
    final_loss: float | None
    epsilon_per_store: dict[str, float]
    stores: tuple[dict[str, Any], ...]
    refusals: tuple[dict[str, Any], ...]
    rejections: tuple[dict[str, Any], ...]
    model_path: Path
    model_card_path: Path
    seconds: float

    @classmethod
    def from_run_dir(cls, run_dir: Path, seconds: float = float("nan")) -> FederationResult:
        summary_path = Path(run_dir) / "summary.json"
        if not summary_path.is_file():
            raise ConfigError(f"{run_dir}: no summary.json; the federation did not finish")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        stores = tuple(summary["stores"])
        return cls(
            run_dir=Path(run_dir),
            rounds=tuple(summary["rounds"]),
            final_auc=summary["final"].get("auc"),
            final_loss=summary.get("final_loss"),
            epsilon_per_store={_store_label(s): float(s.get("run_epsilon", 0.0)) for s in stores},
            stores=stores,
            refusals=tuple(summary["refusals"]),
            rejections=tuple(summary["rejections"]),
            model_path=Path(summary["model"]["torch"]),
            model_card_path=Path(summary["model_card"]),
            seconds=seconds,
        )


def _store_label(store: Mapping[str, Any]) -> str:
    if store.get("partition_id") is not None:
        return f"store-{int(store['partition_id'])}"
    return f"node-{store['node_id']}"


def run_federation(
    run_dir: Path,
    data_dir: Path,
    num_stores: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    cpus_per_store: float = 1.0,
    verbose: bool = False,
) -> FederationResult:
    """Train the churn model across the first ``num_stores`` stores of ``data_dir``.

    ``overrides`` are run_config keys (kebab-case, see :mod:`fedcrm.server.run_config`);
    ``run-dir``, ``data-dir`` and ``expected-stores`` are set from the arguments. Raises
    :class:`~fedcrm.errors.ConfigError` on an invalid configuration and
    :class:`~fedcrm.errors.OutputExistsError` when ``run_dir`` holds a finished run, both
    before anything starts.
    """
    from flwr.simulation import run_simulation

    from fedcrm.clients.app import build_client_app
    from fedcrm.server.app import build_server_app

    stores = discover_stores(Path(data_dir))
    n = len(stores) if num_stores is None else num_stores
    if not 1 <= n <= len(stores):
        raise ConfigError(f"num_stores must be 1..{len(stores)} for {data_dir} (got {n})")
    overrides = dict(overrides or {})
    baselines = overrides.pop(BASELINES_KEY, True)  # a harness flag, not a Flower key
    if not isinstance(baselines, bool):
        raise ConfigError(f"{BASELINES_KEY} must be a boolean (got {baselines!r})")
    run_config = {
        **overrides,
        "run-dir": str(Path(run_dir).resolve()),
        "data-dir": str(Path(data_dir).resolve()),
        "expected-stores": n,
    }
    config = FederationConfig.from_run_config(run_config)  # fail before Ray starts
    if config.min_stores > n:
        raise ConfigError(f"min-stores={config.min_stores} but only {n} stores take part")
    RunDirectory(config.run_path, ()).claim()  # refuse a finished run before Ray starts
    cpus = os.cpu_count() or 1
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": cpus_per_store, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False},
    }
    stop = threading.Event()
    began = time.perf_counter()
    try:
        run_simulation(
            server_app=build_server_app(run_config, stop=stop),
            client_app=build_client_app(run_config),
            num_supernodes=n,
            backend_config=backend_config,
            verbose_logging=verbose,
        )
    finally:
        stop.set()  # a coordinator still waiting on a crashed engine gives up
    if baselines:
        _add_baselines(config, stores[:n])
    return FederationResult.from_run_dir(config.run_path, time.perf_counter() - began)


def _add_baselines(config: FederationConfig, store_dirs: list[Path]) -> None:
    """Add the issue-3 baselines to ``summary.json`` (atomically) as its ``churn`` block.

    Simulation-only references (:mod:`fedcrm.server.baselines`): they read the stores' data
    directly and never touch the stores' privacy ledgers. A failure is logged, not raised: the
    federated run itself is complete.
    """
    from fedcrm.data.atomic import atomic_file
    from fedcrm.server.baselines import baselines_for_config
    from fedcrm.server.checkpoints import _dump

    summary_path = config.run_path / "summary.json"
    if not summary_path.is_file():
        return  # the federation did not finish; from_run_dir says so
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    try:
        result = baselines_for_config(config, store_dirs, summary)
    except Exception:  # a reference must not lose the run's result
        logger.exception("baselines failed; summary.json keeps the federated result only")
        return
    summary["churn"] = result.as_summary((summary.get("final") or {}).get("auc"))
    with atomic_file(summary_path) as tmp:
        tmp.write_text(_dump(summary), encoding="utf-8")
    logger.info(
        "baselines: federated AUC %s, centralized (non-private) %s, local-only (DP) %s",
        summary["churn"]["auc"],
        result.centralized_auc,
        result.local_only_auc,
    )
