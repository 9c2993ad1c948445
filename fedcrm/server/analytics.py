"""The coordinator's side of federated analytics: ask, check budgets, sum, suppress, write.

For each query of the run (``analytics-queries``):

1. every store is asked (``query.analytics_budget``) whether the query's ε fits its lifetime
   ledger; if any store cannot answer it, the query is **refused** for all — nothing is asked,
   spent or released — and ``<query>.json`` says requested / remaining / difference per store;
2. one round of Flower's legacy ``DefaultWorkflow`` — under SecAgg+ unless ``secagg = false`` —
   over :class:`QueryStrategy`: each store returns its discrete-Gaussian-noised integer vector
   as the round's "update"; SecAgg+ (weight 1 per store, quantization step exactly 1, so the sum
   of integers is exact) hands the coordinator only their mean, which it multiplies by the
   number of stores. Without SecAgg+ the coordinator sums the vectors it sees;
3. cells below ``analytics-k`` are suppressed, the query's table is built and
   ``<query>.csv / .json / .png`` are written (:mod:`fedcrm.analytics.release`).

A store that refuses or fails during the round voids the whole answer (released: nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedcrm.analytics.plan import QueryPlan, context_to_json
from fedcrm.clients.app import ANALYTICS_BUDGET_QUERY
from fedcrm.server.run_config import FederationConfig

__all__ = ["QueryStrategy", "query_context_for", "run_analytics"]

logger = logging.getLogger(__name__)

#: SecAgg+ ranges for integer answers: |noisy count| ≤ 2^22 per cell and store, and a
#: quantization step of exactly 1 (range = 2 × clipping range); the modulus 2^32 then holds
#: the sum of up to 511 stores.
ANSWER_CLIPPING_RANGE = 2**22
ANSWER_QUANTIZATION_RANGE = 2**23


@dataclass
class QueryStrategy(Strategy):
    """One query as one legacy round: send the plan, sum what comes back."""

    plan: QueryPlan
    n_cells: int
    nodes: set[int]
    secure_aggregation: bool
    totals: np.ndarray | None = None
    answers: dict[int, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def _template(self) -> Parameters:
        return ndarrays_to_parameters([np.zeros(self.n_cells, dtype=np.float64)])

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self._template()

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        config: dict[str, Scalar] = {**self.plan.to_config(), "server-round": server_round}
        proxies = [p for p in client_manager.all().values() if p.node_id in self.nodes]
        return [(p, FitIns(self._template(), config)) for p in proxies]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: Sequence[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        for proxy, res in results:
            self.answers[proxy.node_id] = {k: float(v) for k, v in res.metrics.items()}  # type: ignore[arg-type]
        refused = [n for n, a in self.answers.items() if a.get("refused", 1.0) != 0.0]
        if failures:
            self.problems.append(f"{len(failures)} store(s) failed during the round")
        if refused:
            self.problems.append(f"{len(refused)} store(s) refused during the round")
        missing = self.nodes - set(self.answers)
        if missing:
            self.problems.append(f"{len(missing)} store(s) did not answer")
        if self.problems or not results:
            return None, {}
        arrays = [parameters_to_ndarrays(res.parameters)[0] for _, res in results]
        if self.secure_aggregation:  # every result carries the same unmasked mean
            total = np.asarray(arrays[0], dtype=np.float64) * len(results)
        else:
            total = np.sum([np.asarray(a, dtype=np.float64) for a in arrays], axis=0)
        self.totals = np.rint(total)  # sums of integers; rint removes float dust of the mean
        return ndarrays_to_parameters([self.totals]), {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: Sequence[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


def query_context_for(config: FederationConfig) -> Any:
    """The public context of the run's queries: formats and the chain's taxonomy."""
    from fedcrm.analytics.queries import QueryContext
    from fedcrm.server.preference import resolve_vocabulary

    return QueryContext(vocabulary=resolve_vocabulary(config))


def _budget_answers(
    grid: Grid, nodes: list[int], plan: QueryPlan, timeout: float
) -> dict[int, dict[str, float]]:
    from fedcrm.server.app import ask_stores

    content = ("query", plan.to_config())
    return ask_stores(grid, nodes, ANALYTICS_BUDGET_QUERY, content, "budget", timeout)


def _workflow(config: FederationConfig, stores: int) -> DefaultWorkflow:
    if not config.secagg:
        return DefaultWorkflow()
    return DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=config.secagg_num_shares(stores),
            reconstruction_threshold=0.67,
            max_weight=1.0,  # every store's answer has weight 1: the mean × stores is the sum
            clipping_range=float(ANSWER_CLIPPING_RANGE),
            quantization_range=ANSWER_QUANTIZATION_RANGE,
            timeout=config.node_timeout,
        )
    )


def _store_numbers(answer: Mapping[str, float]) -> dict[str, float]:
    keys = ("epsilon", "delta", "noise_scale", "noise_multiplier", "l2_sensitivity",
            "requested_epsilon", "remaining_epsilon", "difference_epsilon")  # fmt: skip
    return {k: float(answer[k]) for k in keys if k in answer}


def _labels(
    config: FederationConfig, nodes: list[int], answers: Mapping[int, Mapping[str, float]]
) -> dict[int, str]:
    """Store labels: directory names in simulation (by partition id), else node-<id>."""
    from fedcrm.server.app import _store_labels

    raw = [{"node_id": n, **answers.get(n, {})} for n in nodes]
    return dict(zip(nodes, _store_labels(config, raw), strict=True))


def run_analytics(
    config: FederationConfig,
    grid: Grid,
    context: Context,
    nodes: list[int],
    out_dir: Path,
    *,
    audit: Any = None,
) -> dict[str, Any]:
    """Run the configured queries; write their files to ``out_dir``; return a summary.

    ``audit``: the coordinator's :class:`~fedcrm.audit.log.AuditLog` — each query's outcome
    and, after a release, every store's audit-log head are appended to it.
    """
    from fedcrm.analytics.release import refusal_document, release, write_refusal, write_release

    query_context = query_context_for(config)
    summary: dict[str, Any] = {}
    labels: dict[int, str] = {}
    for name in config.analytics_query_names:
        began = time.perf_counter()
        plan = QueryPlan(
            name=name,
            epsilon=config.analytics_epsilon,
            delta=config.delta,
            horizon_days=config.horizon_days,
            context=context_to_json(query_context),
        )
        query = plan.query()
        answers = _budget_answers(grid, nodes, plan, config.node_timeout)
        if not labels:
            labels = _labels(config, nodes, answers)
        declined = {n: a for n, a in answers.items() if not a.get("allowed")}
        silent = [n for n in nodes if n not in answers]
        if declined or silent or len(nodes) < config.min_stores:
            reason = (
                f"{len(declined)} store(s) cannot spend ε={plan.epsilon:g} on this query and "
                f"{len(silent)} did not answer; nothing was asked or released"
            )
            document = refusal_document(
                query,
                plan.epsilon,
                {labels.get(n, f"node-{n}"): _store_numbers(a) for n, a in declined.items()},
                reason,
            )
            path = write_refusal(document, out_dir)
            logger.warning("query %s refused: %s", name, reason)
            summary[name] = {"status": "refused", "reason": reason, "json": str(path)}
            _audit(audit, "refusal", {"query": name, "task": "analytics", "stores_declined":
                                      len(declined), "stores_silent": len(silent),
                                      "epsilon": plan.epsilon})  # fmt: skip
            continue
        strategy = QueryStrategy(plan, len(query.cells), set(nodes), config.secagg)
        legacy = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy)
        _workflow(config, len(nodes))(grid, legacy)
        if strategy.totals is None:
            reason = "; ".join(strategy.problems) or "no answer"
            document = refusal_document(
                query,
                plan.epsilon,
                {labels.get(n, f"node-{n}"): _store_numbers(a)
                 for n, a in strategy.answers.items()},
                f"the answer was voided: {reason}; nothing was released",
            )  # fmt: skip
            path = write_refusal(document, out_dir)
            summary[name] = {"status": "voided", "reason": reason, "json": str(path)}
            _audit(audit, "refusal", {"query": name, "task": "analytics", "voided": True,
                                      "problems": len(strategy.problems)})  # fmt: skip
            continue
        result = release(
            query,
            strategy.totals,
            k=config.analytics_k,
            epsilon=plan.epsilon,
            stores={labels.get(n, f"node-{n}"): _store_numbers(a)
                    for n, a in sorted(strategy.answers.items())},
            secure_aggregation=config.secagg,
        )  # fmt: skip
        paths = write_release(result, out_dir)
        summary[name] = {
            "status": "released",
            "cells": len(query.cells),
            "suppressed": int((~result.released).sum()),
            "noise_std": result.noise_std,
            "epsilon_per_store": plan.epsilon,
            "k": config.analytics_k,
            "seconds": round(time.perf_counter() - began, 2),
            **{kind: str(p) for kind, p in paths.items()},
        }
        logger.info("query %s released: %d cells, %d suppressed", name, len(query.cells),
                    summary[name]["suppressed"])  # fmt: skip
        if audit is not None:
            from fedcrm.audit.log import digest
            from fedcrm.server.audit_trail import record_store_heads

            audit.append(
                "analytics_release",
                {"query": name, "epsilon_per_store": plan.epsilon, "k": config.analytics_k,
                 "threshold": result.threshold, "noise_std": result.noise_std,
                 "cells": len(query.cells), "suppressed": summary[name]["suppressed"],
                 "stores": len(strategy.answers), "secure_aggregation": config.secagg,
                 "release_sha256": digest(result.as_document()["cells"])},
            )  # fmt: skip
            record_store_heads(
                audit, [{"store": labels.get(n, f"node-{n}"), **a}
                        for n, a in sorted(strategy.answers.items())]
            )  # fmt: skip
    return summary


def _audit(log: Any, kind: str, payload: Mapping[str, Any]) -> None:
    if log is not None:
        log.append(kind, payload)
