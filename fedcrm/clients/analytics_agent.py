"""The store's side of a federated analytics query.

For one :class:`~fedcrm.analytics.plan.QueryPlan` a store:

1. plans the noise: σ = z·Δ for the query's per-customer L2 bound Δ and the plan's ε at the
   store's lifetime δ (:func:`~fedcrm.analytics.mechanism.plan_noise`);
2. checks its lifetime ledger (purpose ``analytics``) *before reading any data*; a release
   that does not fit is refused with requested / remaining / difference and nothing is read;
3. prepares its data for the ``analytics`` consent purpose (consented, de-identified) and
   computes the query's exact counts, each customer's contribution clipped to Δ;
4. adds discrete Gaussian noise (OpenDP), records the spend in the ledger, appends the
   release (numbers already noised, no raw counts) to ``STORE/.fedcrm/analytics_releases.jsonl``
   and only then returns the noisy vector — which leaves the store through the egress guard and,
   under SecAgg+, masked.

The ledger is the one training uses: analytics and the models share the store's lifetime ε.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.analytics.plan import QueryPlan
from fedcrm.errors import BudgetExceededError, ConfigError

__all__ = [
    "ANALYTICS_PURPOSE",
    "RELEASE_LOG_NAME",
    "QueryAnswer",
    "analytics_budget",
    "answer_query",
    "read_releases",
    "store_counts",
]

logger = logging.getLogger(__name__)

ANALYTICS_PURPOSE = "analytics"  # the consent purpose and the ledger purpose
RELEASE_LOG_NAME = "analytics_releases.jsonl"
#: Queries over observed churn need labels: their cutoff is the data end minus the horizon.
_LABELLED_QUERIES = frozenset({"churn_by_segment"})
_LOCK = threading.Lock()
_PREPARED: dict[tuple[Any, ...], Any] = {}
_LOADED: dict[tuple[int, str], Any] = {}


@dataclass(frozen=True)
class QueryAnswer:
    """A store's reply: the noisy vector (float64 of integers) and numbers about it."""

    values: np.ndarray
    metrics: dict[str, int | float]

    @property
    def refused(self) -> bool:
        return bool(self.metrics.get("refused", 0))


def _ledger(settings: Any, delta: float) -> Any:
    from fedcrm.privacy.ledger import PrivacyBudget, PrivacyLedger

    return PrivacyLedger.open(
        settings.layout, PrivacyBudget(settings.lifetime_epsilon, delta), settings.split
    )


def _store(settings: Any, run_id: int) -> Any:
    """The store's tables, loaded (and validated) once per run and process."""
    from fedcrm.data.store import load_store

    key = (run_id, str(settings.store_dir))
    with _LOCK:
        store = _LOADED.get(key)
        if store is None:
            store = load_store(settings.store_dir)
            for stale in [k for k in _LOADED if k[0] != run_id]:
                del _LOADED[stale]  # another run's data: drop it
            _LOADED[key] = store
    return store


def _prepared(settings: Any, plan: QueryPlan, run_id: int, store: Any) -> Any:
    """The store prepared for the analytics purpose (once per run, cutoff and labels)."""
    from fedcrm.clients.preparation import PreparationRequest, prepare_store, store_data_end
    from fedcrm.models.snapshot import FeatureSpec

    labelled = plan.name in _LABELLED_QUERIES
    end = store_data_end(store.transactions, store.manifest)
    cutoff = None if labelled else end  # None: the latest cutoff with a full label horizon
    context = plan.query_context()
    vocabulary = context.vocabulary
    key = (run_id, str(settings.store_dir), labelled, plan.horizon_days, plan.context)
    with _LOCK:
        prepared = _PREPARED.get(key)
        if prepared is None:
            request = PreparationRequest(
                cutoff=cutoff,
                purpose=ANALYTICS_PURPOSE,
                horizon_days=plan.horizon_days,
                with_labels=labelled,
            )
            spec = FeatureSpec.from_vocabulary(vocabulary) if vocabulary is not None else None
            prepared = prepare_store(
                settings.store_dir, request, spec=spec, vocabulary=vocabulary, store=store
            )
            for stale in [k for k in _PREPARED if k[0] != run_id]:
                del _PREPARED[stale]
            _PREPARED[key] = prepared
            if run_id >= 0:  # a federated run (negative: the simulation-only exact reference)
                from fedcrm.clients.store_audit import audit_preparation
                from fedcrm.privacy.erasure import record_participation

                audit_preparation(settings.layout, run_id, ANALYTICS_PURPOSE, prepared)
                record_participation(settings.layout, str(run_id), ANALYTICS_PURPOSE,
                                     prepared.features.customer_ids)  # fmt: skip
    return prepared


def _store_delta(settings: Any, plan: QueryPlan, run_id: int) -> float:
    """The store's lifetime δ: its ledger's, else min(plan δ, default_delta(N)) with N the
    customers whose analytics consent is in force now (the store's tables are read only in
    that case; a customer without consent does not move δ)."""
    from fedcrm.privacy.accounting import default_delta
    from fedcrm.privacy.consent import filter_by_consent
    from fedcrm.privacy.ledger import PrivacyLedger

    recorded = PrivacyLedger.recorded_delta(settings.layout)
    if recorded:
        return float(recorded)
    consented = filter_by_consent(_store(settings, run_id), ANALYTICS_PURPOSE, pd.Timestamp.now())
    population = consented.report.included
    ceiling = float(default_delta(max(1, population)))
    return min(plan.delta, ceiling) if plan.delta else ceiling


def _entry(plan: QueryPlan, noise: Any, run_id: int, server_round: int) -> Any:
    from fedcrm.privacy.ledger import LedgerEntry

    return LedgerEntry(
        run_id=str(run_id),
        round=server_round,
        purpose=ANALYTICS_PURPOSE,
        noise_multiplier=noise.noise_multiplier,
        sample_rate=1.0,
        steps=1,
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _decision(decision: Any) -> dict[str, int | float]:
    return {
        "allowed": int(decision.allowed),
        "requested_epsilon": float(decision.requested),
        "remaining_epsilon": float(decision.remaining),
        "difference_epsilon": float(decision.difference),
    }


def _audit_refusal(
    settings: Any, plan: QueryPlan, run_id: int, server_round: int, decision: Any
) -> None:
    from fedcrm.clients.store_audit import audit

    audit(
        settings.layout,
        "refusal",
        {"run_id": str(run_id), "task": ANALYTICS_PURPOSE, "query": plan.name,
         "round": server_round, "scope": decision.scope, **_decision(decision)},
    )  # fmt: skip


def analytics_budget(settings: Any, plan: QueryPlan, run_id: int) -> dict[str, int | float]:
    """Numbers only: would the query fit the store's ledger, and with which noise."""
    from fedcrm.analytics.mechanism import plan_noise

    query = plan.query()
    delta = _store_delta(settings, plan, run_id)
    noise = plan_noise(plan.epsilon, delta, query.l2_sensitivity)
    decision = _ledger(settings, delta).check(_entry(plan, noise, run_id, 0))
    if not decision.allowed:
        _audit_refusal(settings, plan, run_id, 0, decision)
    where = {} if settings.partition_id is None else {"partition_id": settings.partition_id}
    return {
        **where,
        **_decision(decision),
        "epsilon": plan.epsilon,
        "delta": delta,
        "noise_multiplier": noise.noise_multiplier,
        "noise_scale": noise.scale,
        "l2_sensitivity": float(query.l2_sensitivity),
    }


def answer_query(settings: Any, plan: QueryPlan, run_id: int, server_round: int) -> QueryAnswer:
    """Ledger check → exact counts → discrete Gaussian → ledger record → release log."""
    from fedcrm.analytics.mechanism import discrete_gaussian, plan_noise

    query = plan.query()
    n_cells = len(query.cells)
    delta = _store_delta(settings, plan, run_id)
    noise = plan_noise(plan.epsilon, delta, query.l2_sensitivity)
    numbers: dict[str, int | float] = {
        "epsilon": plan.epsilon,
        "delta": delta,
        "noise_multiplier": noise.noise_multiplier,
        "noise_scale": noise.scale,
        "l2_sensitivity": float(query.l2_sensitivity),
    }
    ledger = _ledger(settings, delta)
    entry = _entry(plan, noise, run_id, server_round)
    decision = ledger.check(entry)
    if not decision.allowed:
        logger.warning("query %s refused by the privacy ledger: %s", plan.name, decision.message)
        _audit_refusal(settings, plan, run_id, server_round, decision)
        return QueryAnswer(np.zeros(n_cells), {**numbers, **_decision(decision), "refused": 1})
    noisy = discrete_gaussian(store_counts(settings, plan, run_id), noise.scale)
    try:
        ledger.record(entry)  # spend first: nothing leaves unless it is booked
    except BudgetExceededError:
        decision = ledger.check(entry)
        _audit_refusal(settings, plan, run_id, server_round, decision)
        return QueryAnswer(np.zeros(n_cells), {**numbers, **_decision(decision), "refused": 1})
    _log_release(settings.layout.private_dir, run_id, server_round, plan, noisy, numbers)
    from fedcrm.audit.log import digest
    from fedcrm.clients.store_audit import audit

    audit(
        settings.layout,
        "analytics_release",
        {
            "run_id": str(run_id),
            "query": plan.name,
            "plan_digest": plan.digest,
            "cells": n_cells,
            "values_sha256": digest([int(v) for v in noisy]),
            "lifetime_epsilon_spent": float(ledger.spent()),
            "analytics_epsilon_spent": float(ledger.spent(ANALYTICS_PURPOSE)),
            **numbers,
        },
    )
    logger.info("query %s answered: %d cells, σ=%.3f, ε=%.3g", plan.name, n_cells,
                noise.scale, plan.epsilon)  # fmt: skip
    from fedcrm.clients.store_audit import head_metrics

    metrics = {**numbers, **_decision(decision), "refused": 0, **head_metrics(settings.layout)}
    return QueryAnswer(noisy.astype(np.float64), metrics)


def store_counts(settings: Any, plan: QueryPlan, run_id: int) -> np.ndarray:
    """The query's exact counts for this store (int64, one per cell), contributions clipped.

    Never leaves the store as is: :func:`answer_query` noises it first. Tests and benchmarks
    call it (through :func:`fedcrm.analytics.exact.exact_totals`) for the exact reference.
    """
    from fedcrm.analytics.queries import StoreView, consent_coverage_counts

    query = plan.query()
    store = _store(settings, run_id)
    prepared = _prepared(settings, plan, run_id, store)
    context = plan.query_context()
    store_format = str(store.manifest.get("format") or "other")
    if store_format not in context.formats:
        store_format = "other"
    coverage = None
    if plan.name == "consent_coverage":
        # the census of consent states: erased customers are not on file, and each consent
        # is judged at processing time (like every other release), so a withdrawal before
        # this run counts as withdrawn
        from fedcrm.privacy.erasure import exclude_erased

        on_file, _ = exclude_erased(store, settings.layout)
        coverage = consent_coverage_counts(on_file, pd.Timestamp.now())
    counts = np.asarray(query.counts(StoreView(store_format, prepared, coverage)), np.int64)
    if counts.shape != (len(query.cells),):
        raise ConfigError(
            f"query {plan.name} produced {counts.shape} counts for {len(query.cells)} cells"
        )
    return counts


def _log_release(
    private_dir: Path,
    run_id: int,
    server_round: int,
    plan: QueryPlan,
    noisy: np.ndarray,
    numbers: dict[str, int | float],
) -> None:
    """Append what the store released (already noised) to its own release log."""
    record = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": str(run_id),
        "round": server_round,
        "query": plan.name,
        "plan": plan.digest,
        **numbers,
        "noisy_values": [int(v) for v in noisy],
    }
    private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _LOCK, open(private_dir / RELEASE_LOG_NAME, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def read_releases(private_dir: Path) -> list[dict[str, Any]]:
    """The store's release log (for audits and tests)."""
    path = Path(private_dir) / RELEASE_LOG_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
