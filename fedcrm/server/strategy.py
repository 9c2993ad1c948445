"""The coordinator's strategies: Flower's legacy strategies, wrapped (never forked).

The legacy ``flwr.server.strategy`` API is the one SecAgg+ can drive in Flower 1.41. The
stack, outermost first::

    RoundRecorder        checkpoint + metrics per round (the centralised-evaluate hook)
    UpdateValidator      deltas → models; drops malformed, NaN or oversized updates
    ParticipationGate    leaves out stores whose budget does not cover the round
    FedAvg | FedAvgM | FedAdam   (SERVER_OPTIMIZERS; weighted by num_examples), or a
    robust rule (ROBUST_AGGREGATIONS: FedTrimmedAvg | FedMedian | Krum; without SecAgg only)

Stores send **deltas** (local − global). Without SecAgg the validator sees each store's
delta and drops those with the wrong count, shape or dtype, non-finite values, an L2 norm
above the bound, or weight 0 (a refusal). With SecAgg+ the coordinator sees only the weighted
average delta (every result carries it), so the validator checks the aggregate instead and,
if it is invalid, keeps the previous model. Every drop is reported to ``on_event``.

Robust aggregation (``aggregation = trimmed-mean | median | krum``) needs every store's
update in the clear, which is exactly what SecAgg+ withholds, so the configuration refuses
the combination. Under SecAgg+ what bounds a hostile store is what each honest store enforces
on its own update (per-customer clipping in DP-SGD, the egress guard) and the coordinator's
check of the aggregate (finite, right shapes, norm ≤ the bound); a store running altered code
can still shift the mean by up to the aggregate bound without being identified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from fedcrm.privacy.egress import RANKING_METRICS

__all__ = [
    "AVERAGED_METRICS",
    "ROBUST_AGGREGATIONS",
    "SERVER_OPTIMIZERS",
    "ParticipationGate",
    "RoundEvent",
    "RoundRecorder",
    "StrategyWrapper",
    "UpdateValidator",
    "build_base_strategy",
    "weighted_metrics",
]

logger = logging.getLogger(__name__)

ConfigFn = Callable[[int], dict[str, Scalar]]
Failures = list[tuple[ClientProxy, FitRes] | BaseException]


@dataclass(frozen=True)
class RoundEvent:
    """Something the coordinator must record: ``kind`` is refused/rejected/excluded/skipped,
    ``dropped`` (a sampled store sent no result) or ``failed`` (a round that aggregated
    nothing, e.g. SecAgg+ below its reconstruction threshold)."""

    kind: str
    server_round: int
    node_id: int | None
    reason: str
    numbers: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "round": self.server_round,
            "node_id": self.node_id,
            "reason": self.reason,
            **{k: float(v) for k, v in self.numbers.items()},
        }


EventSink = Callable[[RoundEvent], None]


#: Metrics averaged across stores (weighted by examples); others are not aggregated.
AVERAGED_METRICS: frozenset[str] = frozenset({"loss", "auc", "brier", *RANKING_METRICS})


def weighted_metrics(results: Sequence[tuple[int, Mapping[str, Scalar]]]) -> dict[str, Scalar]:
    """Example-weighted mean of :data:`AVERAGED_METRICS`, over the stores that report each,
    plus the total ``num_examples`` and the number of contributing ``stores``.

    A store without AUC (one class in its eval split) does not dilute the others' AUC.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for n, metrics in results:
        for key, value in metrics.items():
            if key not in AVERAGED_METRICS or n <= 0:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not np.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + n * float(value)
            weights[key] = weights.get(key, 0.0) + n
    out: dict[str, Scalar] = {k: sums[k] / weights[k] for k in sums}
    out["num_examples"] = int(sum(n for n, _ in results if n > 0))
    out["stores"] = sum(1 for n, _ in results if n > 0)
    return out


def build_base_strategy(
    name: str,
    *,
    initial_parameters: Parameters,
    min_stores: int,
    server_learning_rate: float,
    server_momentum: float,
    on_fit_config_fn: ConfigFn,
    on_evaluate_config_fn: ConfigFn,
    aggregation: str = "mean",
    robust_trim: float = 0.2,
    robust_malicious: int = 1,
) -> Strategy:
    """One of :data:`SERVER_OPTIMIZERS` (``aggregation = "mean"``), else the robust rule of
    :data:`ROBUST_AGGREGATIONS`; unknown names raise ValueError listing the valid ones."""
    if aggregation != "mean":
        try:
            robust = ROBUST_AGGREGATIONS[aggregation]
        except KeyError:
            raise ValueError(
                f"unknown aggregation {aggregation!r}; valid: mean, {sorted(ROBUST_AGGREGATIONS)}"
            ) from None
        name, factory = (
            aggregation,
            lambda common, lr, m: robust(common, robust_trim, robust_malicious),
        )
    else:
        try:
            factory = SERVER_OPTIMIZERS[name]
        except KeyError:
            raise ValueError(
                f"unknown server optimizer {name!r}; valid: {sorted(SERVER_OPTIMIZERS)}"
            ) from None
    common: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 1.0,
        "min_fit_clients": min_stores,
        "min_evaluate_clients": min_stores,
        "min_available_clients": min_stores,
        "initial_parameters": initial_parameters,
        "on_fit_config_fn": on_fit_config_fn,
        "on_evaluate_config_fn": on_evaluate_config_fn,
        "fit_metrics_aggregation_fn": weighted_metrics,
        "evaluate_metrics_aggregation_fn": weighted_metrics,
        "accept_failures": True,
    }
    return factory(common, server_learning_rate, server_momentum)


SERVER_OPTIMIZERS: dict[str, Callable[[dict[str, Any], float, float], Strategy]] = {
    "fedavg": lambda common, lr, momentum: FedAvg(**common),
    "fedavgm": lambda common, lr, momentum: FedAvgM(
        **common, server_learning_rate=lr, server_momentum=momentum
    ),
    "fedadam": lambda common, lr, momentum: FedAdam(**common, eta=lr),
}

#: Robust rules over the stores' updates (each store's update must be visible: no SecAgg+).
#: Flower's implementations: coordinate-wise trimmed mean (``trim`` cut at each end),
#: coordinate-wise median, Krum with ``malicious`` = f (the update closest to its n - f - 2
#: nearest neighbours; meaningful when n >= 2f + 3).
ROBUST_AGGREGATIONS: dict[str, Callable[[dict[str, Any], float, int], Strategy]] = {
    "trimmed-mean": lambda common, trim, malicious: FedTrimmedAvg(**common, beta=trim),
    "median": lambda common, trim, malicious: FedMedian(**common),
    "krum": lambda common, trim, malicious: Krum(
        **common, num_malicious_clients=malicious, num_clients_to_keep=0
    ),
}


class StrategyWrapper(Strategy):
    """Delegates everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)


class ParticipationGate(StrategyWrapper):
    """Sends a training round only to stores whose budget answer covers it.

    ``allowed_rounds`` maps node id → the last round the store accepted (from the budget
    query); a node without an answer is left out (fail closed). With fewer than
    ``min_stores`` left the round is skipped.
    """

    def __init__(
        self,
        inner: Strategy,
        allowed_rounds: Mapping[int, int],
        *,
        min_stores: int,
        on_event: EventSink,
    ) -> None:
        super().__init__(inner)
        self.allowed_rounds = dict(allowed_rounds)
        self.min_stores = min_stores
        self.on_event = on_event

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        pairs = self.inner.configure_fit(server_round, parameters, client_manager)
        keep = []
        for proxy, ins in pairs:
            allowed = self.allowed_rounds.get(proxy.node_id)
            if allowed is not None and allowed >= server_round:
                keep.append((proxy, ins))
                continue
            reason = (
                "no budget answer from this store"
                if allowed is None
                else f"its lifetime budget allows {allowed} of the planned rounds"
            )
            self.on_event(RoundEvent("excluded", server_round, proxy.node_id, reason))
        if len(keep) < self.min_stores:
            self.on_event(
                RoundEvent(
                    "skipped",
                    server_round,
                    None,
                    f"{len(keep)} store(s) can train, fewer than min-stores={self.min_stores}",
                )
            )
            return []
        return keep


class UpdateValidator(StrategyWrapper):
    """Turns deltas into models and keeps malformed, NaN or oversized updates out.

    ``reference`` fixes the expected array count, shapes and dtypes (the initial model).
    ``bounds`` gives each store's largest honest update norm
    (:mod:`fedcrm.server.update_bounds`, from its DP plan); stores without one, and every
    store when ``bounds`` is None, get ``max_update_norm``. The aggregate (SecAgg+) is held to
    the largest bound.
    """

    def __init__(
        self,
        inner: Strategy,
        reference: NDArrays,
        *,
        max_update_norm: float,
        secure_aggregation: bool,
        on_event: EventSink,
        bounds: Mapping[int, float] | None = None,
    ) -> None:
        super().__init__(inner)
        self.bounds = dict(bounds or {})
        self.shapes = [a.shape for a in reference]
        self.dtypes = [a.dtype for a in reference]
        self.max_update_norm = max_update_norm
        self.secure_aggregation = secure_aggregation
        self.on_event = on_event
        self._global: NDArrays = [np.array(a, copy=True) for a in reference]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._global = parameters_to_ndarrays(parameters)
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def bound(self, node_id: int | None) -> float:
        """The norm bound of ``node_id``'s update (None: the aggregate)."""
        if node_id is None:
            return max(self.bounds.values(), default=self.max_update_norm)
        return self.bounds.get(node_id, self.max_update_norm)

    def problem(
        self, arrays: NDArrays, *, strict_dtype: bool, bound: float | None = None
    ) -> str | None:
        """Why ``arrays`` is not an acceptable delta (norm bound: ``bound``, else
        ``max_update_norm``), or None."""
        if len(arrays) != len(self.shapes):
            return f"{len(arrays)} arrays, expected {len(self.shapes)}"
        for i, (a, shape, dtype) in enumerate(zip(arrays, self.shapes, self.dtypes, strict=True)):
            if a.shape != shape:
                return f"array {i} has shape {a.shape}, expected {shape}"
            if (strict_dtype and a.dtype != dtype) or a.dtype.kind != "f":
                return f"array {i} has dtype {a.dtype}, expected {dtype}"
            if not np.isfinite(a).all():
                return f"array {i} holds NaN or inf"
        norm = float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))
        limit = self.max_update_norm if bound is None else bound
        if norm > limit:
            return f"update norm {norm:.4g} exceeds the bound {limit:.4g}"
        return None

    def _model_from(self, delta: NDArrays) -> Parameters:
        return ndarrays_to_parameters(
            [(g + d).astype(t) for g, d, t in zip(self._global, delta, self.dtypes, strict=True)]
        )

    def _refusals(self, server_round: int, results: list[tuple[ClientProxy, FitRes]]) -> None:
        for proxy, res in results:
            if res.num_examples <= 0 and res.metrics.get("refused"):
                numbers = {k: float(v) for k, v in res.metrics.items() if k.endswith("_epsilon")}
                self.on_event(
                    RoundEvent(
                        "refused", server_round, proxy.node_id, "privacy ledger refused", numbers
                    )
                )

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self._refusals(server_round, results)
        if self.secure_aggregation:
            accepted = self._validate_aggregate(server_round, results)
        else:
            accepted = self._validate_each(server_round, results)
        if not accepted:
            return None, {}
        params, metrics = self.inner.aggregate_fit(server_round, accepted, failures)
        if params is None:
            return None, metrics
        model = [
            a.astype(t) for a, t in zip(parameters_to_ndarrays(params), self.dtypes, strict=True)
        ]
        if not all(np.isfinite(a).all() for a in model):
            self._reject(server_round, None, "the server optimizer produced NaN or inf")
            return None, {}
        return ndarrays_to_parameters(model), metrics

    def _reject(self, server_round: int, node_id: int | None, reason: str) -> None:
        logger.warning("round %d: update rejected (%s)", server_round, reason)
        self.on_event(RoundEvent("rejected", server_round, node_id, reason))

    def _validate_each(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[tuple[ClientProxy, FitRes]]:
        accepted = []
        for proxy, res in results:
            if res.num_examples <= 0:
                if not res.metrics.get("refused"):
                    self._reject(server_round, proxy.node_id, "weight (num_examples) is 0")
                continue
            try:
                delta = parameters_to_ndarrays(res.parameters)
            except Exception:  # malformed bytes: whatever numpy raises
                self._reject(server_round, proxy.node_id, "arrays are not readable")
                continue
            problem = self.problem(delta, strict_dtype=True, bound=self.bound(proxy.node_id))
            if problem:
                self._reject(server_round, proxy.node_id, problem)
                continue
            model = self._model_from(delta)
            accepted.append((proxy, FitRes(res.status, model, res.num_examples, res.metrics)))
        return accepted

    def _validate_aggregate(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> list[tuple[ClientProxy, FitRes]]:
        contributing = [(p, r) for p, r in results if r.num_examples > 0]
        if not contributing:
            self._reject(server_round, None, "no store contributed (total weight 0)")
            return []
        try:
            delta = parameters_to_ndarrays(contributing[0][1].parameters)
        except Exception:
            self._reject(server_round, None, "the aggregate is not readable")
            return []
        # SecAgg+ dequantises to float64; the dtype is restored from the reference.
        problem = self.problem(delta, strict_dtype=False, bound=self.bound(None))
        if problem:
            self._reject(server_round, None, f"aggregate: {problem}; kept the previous model")
            return []
        model = self._model_from(delta)
        return [(p, FitRes(r.status, model, r.num_examples, r.metrics)) for p, r in contributing]


class RoundRecorder(StrategyWrapper):
    """Calls ``on_model(round, arrays)`` after each fit round (Flower's centralised-evaluate
    hook, round 0 = the initial model) and ``on_metrics(round, payload)`` after fit and
    federated evaluation.

    Timing per round: ``fit_seconds`` and ``evaluate_seconds`` are the coordinator's wall time
    from configuring the stores to aggregating their replies (with SecAgg+, all four protocol
    stages); ``store_seconds_max``/``store_seconds_mean`` are the stores' own handling time of
    the training message (``compute_seconds``, reported by each store), so
    ``fit_seconds - store_seconds_max`` is the round's coordination overhead.

    Dropouts: a sampled store without a result is reported to ``on_event`` as ``dropped``; a
    fit round that never reached aggregation (SecAgg+ aborts a stage when fewer stores than
    its reconstruction threshold answer) as ``failed`` — the model stays as it was.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        on_model: Callable[[int, NDArrays], object],
        on_metrics: Callable[[int, dict[str, Any]], object],
        on_event: EventSink | None = None,
    ) -> None:
        super().__init__(inner)
        self.on_model = on_model
        self.on_metrics = on_metrics
        self.on_event = on_event
        self.rounds: dict[int, dict[str, Any]] = {}
        self._started: dict[tuple[str, int], float] = {}
        self._sampled: dict[int, list[int]] = {}

    def _update(self, server_round: int, **payload: Any) -> None:
        record = self.rounds.setdefault(server_round, {"round": server_round})
        record.update(payload)
        self.on_metrics(server_round, dict(record))

    def _elapsed(self, phase: str, server_round: int) -> float | None:
        began = self._started.pop((phase, server_round), None)
        return None if began is None else round(time.perf_counter() - began, 3)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._started[("fit", server_round)] = time.perf_counter()
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        self._sampled[server_round] = [proxy.node_id for proxy, _ in instructions]
        return instructions

    def _event(self, event: RoundEvent) -> None:
        logger.warning("round %d: %s", event.server_round, event.reason)
        if self.on_event is not None:
            self.on_event(event)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        store_seconds = [
            float(res.metrics["compute_seconds"])
            for _, res in results
            if isinstance(res.metrics.get("compute_seconds"), int | float)
        ]
        sampled = self._sampled.pop(server_round, [])
        answered = {proxy.node_id for proxy, _ in results}
        for node_id in sampled:
            if node_id not in answered:
                self._event(RoundEvent("dropped", server_round, node_id,
                                       "the store sent no training result this round"))  # fmt: skip
        params, metrics = self.inner.aggregate_fit(server_round, results, failures)
        timing: dict[str, Any] = {
            "fit_seconds": self._elapsed("fit", server_round),
            "fit_sampled": len(sampled),
        }
        if store_seconds:
            timing["store_seconds_max"] = round(max(store_seconds), 3)
            timing["store_seconds_mean"] = round(sum(store_seconds) / len(store_seconds), 3)
        self._update(
            server_round,
            model_updated=params is not None,
            fit=dict(metrics),
            fit_results=len(results),
            fit_failures=len(failures),
            **timing,
        )
        return params, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        self._started[("evaluate", server_round)] = time.perf_counter()
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        if ("fit", server_round) in self._started:  # configured, never aggregated
            sampled = self._sampled.pop(server_round, [])
            reason = (
                f"the training round aggregated nothing ({len(sampled)} stores sampled; with "
                "SecAgg+ fewer than its reconstruction threshold answered in time); "
                "the model was not updated"
            )
            self._event(RoundEvent("failed", server_round, None, reason))
            self._update(
                server_round,
                model_updated=False,
                fit={},
                fit_results=0,
                fit_failures=len(sampled),
                fit_sampled=len(sampled),
                fit_seconds=self._elapsed("fit", server_round),
            )
        self.on_model(server_round, parameters_to_ndarrays(parameters))
        return self.inner.evaluate(server_round, parameters)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        loss, metrics = self.inner.aggregate_evaluate(server_round, results, failures)
        self._update(
            server_round,
            loss=loss,
            evaluate=dict(metrics),
            evaluate_results=len(results),
            evaluate_failures=len(failures),
            evaluate_seconds=self._elapsed("evaluate", server_round),
        )
        return loss, metrics
