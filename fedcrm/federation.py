"""Run the churn federation on Flower's simulation engine, in-process.

:func:`run_federation` builds the ServerApp (:mod:`fedcrm.server.app`) and the ClientApp
(:mod:`fedcrm.clients.app`) with the run's configuration baked in — ``run_simulation`` passes
no run_config — gives each virtual store one CPU, runs the federation, adds the baselines
(``churn``), the plot (``training.png``) and ``wall_seconds`` to the run directory and reads
the result back from ``summary.json``::

    rounds        number of rounds run (history: one record per round)
    churn         {auc, centralized_auc, local_only_auc, labels, ...}
    privacy       {delta, accountant, stores: {<store>: {epsilon, budget, epsilon_per_round,
                   lifetime_budget, lifetime_spent, lifetime_remaining, delta, ...}}}
    wall_seconds  the whole run: training, baselines and plot
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcrm.data.layout import discover_stores
from fedcrm.errors import ConfigError
from fedcrm.server.checkpoints import RunDirectory
from fedcrm.server.run_config import FederationConfig

__all__ = ["BASELINES_KEY", "CHURN_LABELS", "FederationResult", "run_federation"]

logger = logging.getLogger(__name__)

#: overrides flag (default true): add the centralized / local-only baselines to summary.json
BASELINES_KEY = "baselines"

#: What each AUC of summary.json's ``churn`` block is.
CHURN_LABELS = {
    "auc": "federated: DP-SGD in each store, SecAgg+; federated evaluation on held-out customers",
    "centralized_auc": "centralized, NON-PRIVATE, on pooled data: a simulation-only reference "
    "that a deployment must never build",
    "local_only_auc": "local-only: each store trains alone under the same DP budget "
    "(eval-size-weighted mean of the stores' AUCs)",
}


@dataclass(frozen=True)
class FederationResult:
    """What a federated run produced; every path lies inside ``run_dir``."""

    run_dir: Path
    rounds: int
    history: tuple[dict[str, Any], ...]
    final_auc: float | None
    final_loss: float | None
    churn: dict[str, Any]
    privacy: dict[str, Any]
    epsilon_per_store: dict[str, float]
    stores: tuple[dict[str, Any], ...]
    refusals: tuple[dict[str, Any], ...]
    rejections: tuple[dict[str, Any], ...]
    model_path: Path
    model_card_path: Path
    plot_path: Path | None
    wall_seconds: float

    @property
    def seconds(self) -> float:
        """Alias of :attr:`wall_seconds`."""
        return self.wall_seconds

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> FederationResult:
        summary_path = Path(run_dir) / "summary.json"
        if not summary_path.is_file():
            raise ConfigError(f"{run_dir}: no summary.json; the federation did not finish")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        privacy = summary.get("privacy") or {}
        plot = summary.get("plot")
        wall = summary.get("wall_seconds", summary.get("training_seconds"))
        return cls(
            run_dir=Path(run_dir),
            rounds=int(summary["rounds"]),
            history=tuple(summary["history"]),
            final_auc=summary["final"].get("auc"),
            final_loss=summary.get("final_loss"),
            churn=dict(summary.get("churn") or {}),
            privacy=privacy,
            epsilon_per_store={
                k: float(v.get("epsilon") or 0.0) for k, v in privacy.get("stores", {}).items()
            },
            stores=tuple(summary["stores"]),
            refusals=tuple(summary["refusals"]),
            rejections=tuple(summary["rejections"]),
            model_path=Path(summary["model"]["torch"]),
            model_card_path=Path(summary["model_card"]),
            plot_path=Path(plot) if plot else None,
            wall_seconds=float("nan") if wall is None else float(wall),
        )


def run_federation(
    run_dir: Path,
    data_dir: Path,
    num_stores: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    cpus_per_store: float = 1.0,
    verbose: bool = False,
    on_round: Callable[[int, int, Mapping[str, Any]], object] | None = None,
    on_phase: Callable[[str], object] | None = None,
) -> FederationResult:
    """Train the churn model across the first ``num_stores`` stores of ``data_dir``.

    ``overrides`` are run_config keys (kebab-case, see :mod:`fedcrm.server.run_config`);
    ``run-dir``, ``data-dir`` and ``expected-stores`` are set from the arguments.
    ``on_round(round, total_rounds, record)`` is called after each round's federated evaluation
    (``record``: aggregate ``evaluate`` metrics, ``loss``, ``fit``), ``on_phase(text)`` when a
    later phase starts (the baselines); exceptions in either are logged and ignored. Raises
    :class:`~fedcrm.errors.ConfigError` on an invalid configuration and
    :class:`~fedcrm.errors.OutputExistsError` when ``run_dir`` holds a finished run, both
    before anything starts.
    """
    began = time.perf_counter()
    overrides = dict(overrides or {})
    baselines = overrides.pop(BASELINES_KEY, True)  # a harness flag, not a Flower key
    if not isinstance(baselines, bool):
        raise ConfigError(f"{BASELINES_KEY} must be a boolean (got {baselines!r})")
    stores, config, run_config = _plan_run(run_dir, data_dir, num_stores, overrides)
    RunDirectory(config.run_path, ()).claim()  # refuse a finished run before Ray starts
    _simulate(run_config, len(stores), cpus_per_store, verbose, on_round=on_round)
    _finish(config, stores, baselines, began, on_phase)
    return FederationResult.from_run_dir(config.run_path)


def _finish(
    config: FederationConfig,
    store_dirs: list[Path],
    baselines: bool,
    began: float,
    on_phase: Callable[[str], object] | None,
) -> None:
    """Add ``churn``, ``plot`` and ``wall_seconds`` to ``summary.json`` (one atomic write).

    A failure of the baselines or of the plot is logged, not raised: the federated run itself
    is complete.
    """
    from fedcrm.data.atomic import atomic_file
    from fedcrm.server.checkpoints import _dump
    from fedcrm.server.plots import PLOT_NAME, plot_run

    summary_path = config.run_path / "summary.json"
    if not summary_path.is_file():
        return  # the federation did not finish; from_run_dir says so
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    churn = {"auc": (summary.get("final") or {}).get("auc")}
    churn |= {"centralized_auc": None, "local_only_auc": None}
    if baselines:
        _phase(on_phase, "baselines: centralized and local-only")
        churn = _baselines(config, store_dirs, summary) or churn
        preference = summary.get("preference") or {}
        if preference and not preference.get("skipped"):
            _phase(on_phase, "baseline: centralized preference model")
            preference.update(_preference_baseline(config, store_dirs, summary.get("run_id")))
    summary["churn"] = {**churn, "labels": CHURN_LABELS}
    try:
        summary["plot"] = str(plot_run(summary, config.run_path / PLOT_NAME))
    except Exception:  # the plot is a reading aid; the numbers are in summary.json
        logger.exception("the training plot failed; summary.json is complete without it")
        summary["plot"] = None
    summary["wall_seconds"] = round(time.perf_counter() - began, 3)
    with atomic_file(summary_path) as tmp:
        tmp.write_text(_dump(summary), encoding="utf-8")


def _baselines(
    config: FederationConfig, store_dirs: list[Path], summary: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The issue-3 baselines as the ``churn`` block, or None when they fail (logged).

    Simulation-only references (:mod:`fedcrm.server.baselines`): they read the stores' data
    directly and never touch the stores' privacy ledgers.
    """
    from fedcrm.server.baselines import baselines_for_config

    try:
        result = baselines_for_config(config, store_dirs, summary)
    except Exception:  # a reference must not lose the run's result
        logger.exception("baselines failed; summary.json keeps the federated result only")
        return None
    churn = result.as_summary((summary.get("final") or {}).get("auc"))
    logger.info(
        "baselines: federated AUC %s, centralized (non-private) %s, local-only (DP) %s",
        churn["auc"],
        result.centralized_auc,
        result.local_only_auc,
    )
    return churn


def _preference_baseline(
    config: FederationConfig, store_dirs: list[Path], run_id: int | None
) -> dict[str, Any]:
    """The centralized non-private preference reference, or {} when it fails (logged); it
    reuses the churn baselines' preparation of each store (``run_id``)."""
    from fedcrm.server.app import resolve_feature_spec
    from fedcrm.server.preference import (
        centralized_preference_baseline,
        preference_task_plan,
        resolve_vocabulary,
    )

    try:
        vocabulary = resolve_vocabulary(config)
        if vocabulary is None:
            return {}
        plan = preference_task_plan(config, resolve_feature_spec(config), vocabulary)
        return centralized_preference_baseline(store_dirs, plan, seed=config.seed, run_id=run_id)
    except Exception:  # a reference must not lose the run's result
        logger.exception("the preference baseline failed; summary.json keeps the federated one")
        return {}


def _phase(on_phase: Callable[[str], object] | None, text: str) -> None:
    if on_phase is None:
        return
    try:
        on_phase(text)
    except Exception:  # a progress display must never stop the run
        logger.warning("on_phase failed", exc_info=True)


def run_analytics_queries(
    out_dir: Path,
    data_dir: Path,
    num_stores: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    cpus_per_store: float = 1.0,
    verbose: bool = False,
    tap: Callable[[Any], object] | None = None,
) -> dict[str, Any]:
    """Run ``analytics-queries`` across the stores of ``data_dir`` (simulation engine).

    Each query's ``<query>.csv / .json / .png`` and ``analytics.json`` (what was released,
    refused or voided) are written to ``out_dir``; returns ``analytics.json``'s content.
    ``tap(message)`` sees every reply that reaches the coordinator.
    """
    _, config, run_config = _plan_run(
        out_dir, data_dir, num_stores, {**dict(overrides or {}), "mode": "analytics"}
    )
    summary_path = config.run_path / "analytics.json"
    summary_path.unlink(missing_ok=True)  # a stale summary must not pass for this run's
    _simulate(run_config, int(run_config["expected-stores"]), cpus_per_store, verbose, tap=tap)
    if not summary_path.is_file():
        raise ConfigError(f"{config.run_path}: no analytics.json; the analytics run did not finish")
    result: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    return result


def _plan_run(
    run_dir: Path, data_dir: Path, num_stores: int | None, overrides: Mapping[str, Any]
) -> tuple[list[Path], FederationConfig, dict[str, Any]]:
    """The first ``num_stores`` stores, the validated config and the Flower run_config —
    every check done before Ray starts."""
    stores = discover_stores(Path(data_dir))
    n = len(stores) if num_stores is None else num_stores
    if not 1 <= n <= len(stores):
        raise ConfigError(f"num_stores must be 1..{len(stores)} for {data_dir} (got {n})")
    run_config = {
        **overrides,
        "run-dir": str(Path(run_dir).resolve()),
        "data-dir": str(Path(data_dir).resolve()),
        "expected-stores": n,
    }
    config = FederationConfig.from_run_config(run_config)
    if config.min_stores > n:
        raise ConfigError(f"min-stores={config.min_stores} but only {n} stores take part")
    return stores[:n], config, run_config


def _simulate(
    run_config: Mapping[str, Any],
    n: int,
    cpus_per_store: float,
    verbose: bool,
    *,
    on_round: Callable[[int, int, Mapping[str, Any]], object] | None = None,
    tap: Callable[[Any], object] | None = None,
) -> None:
    """One run of the coordinator and ``n`` stores on Flower's simulation engine."""
    from flwr.simulation import run_simulation

    from fedcrm.clients.app import build_client_app
    from fedcrm.server.app import build_server_app

    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": cpus_per_store, "num_gpus": 0.0},
        # the stores' own output (Ray actors) reaches this console only when verbose
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "include_dashboard": False,
            "log_to_driver": verbose,
        },
    }
    stop = threading.Event()
    flower = logging.getLogger("flwr")
    flower_level = flower.level
    if not verbose:
        flower.setLevel(max(flower_level, logging.WARNING))  # no per-message debug lines
    try:
        run_simulation(
            server_app=build_server_app(run_config, stop=stop, on_round=on_round, tap=tap),
            client_app=build_client_app(run_config),
            num_supernodes=n,
            backend_config=backend_config,
            verbose_logging=verbose,
        )
    finally:
        stop.set()  # a coordinator still waiting on a crashed engine gives up
        flower.setLevel(flower_level)
