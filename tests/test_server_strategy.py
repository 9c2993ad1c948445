"""The coordinator's strategy wrappers: validation of updates, participation, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.strategy import FedAvg, Strategy

from fedcrm.errors import ConfigError
from fedcrm.server.run_config import SERVER_OPTIMIZERS as CONFIG_OPTIMIZERS
from fedcrm.server.run_config import FederationConfig
from fedcrm.server.strategy import (
    SERVER_OPTIMIZERS,
    ParticipationGate,
    RoundEvent,
    RoundRecorder,
    UpdateValidator,
    build_base_strategy,
    weighted_metrics,
)

OK = Status(Code.OK, "Success")


class _Proxy:
    """What the wrappers use of a ClientProxy: its node id."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.cid = str(node_id)


def _reference() -> list[np.ndarray]:
    return [np.ones((1, 3), dtype=np.float32), np.zeros(1, dtype=np.float32)]


def _res(arrays: list[np.ndarray], n: int = 10, **metrics: float) -> FitRes:
    return FitRes(OK, ndarrays_to_parameters(arrays), n, dict(metrics))


def _delta(value: float) -> list[np.ndarray]:
    return [np.full((1, 3), value, dtype=np.float32), np.full(1, value, dtype=np.float32)]


def _validator(
    events: list[RoundEvent], *, secagg: bool = False, inner: Strategy | None = None
) -> UpdateValidator:
    return UpdateValidator(
        inner or FedAvg(),
        _reference(),
        max_update_norm=5.0,
        secure_aggregation=secagg,
        on_event=events.append,
    )


def _model(params: Parameters | None) -> list[np.ndarray]:
    assert params is not None
    return parameters_to_ndarrays(params)


def test_nan_and_wrong_shape_updates_are_dropped_and_recorded():
    events: list[RoundEvent] = []
    validator = _validator(events)
    good = _delta(0.5)
    nan = _delta(0.1)
    nan[0][0, 1] = np.nan
    wrong_shape = [np.zeros((3, 1), np.float32), np.zeros(1, np.float32)]
    results = [(_Proxy(1), _res(good)), (_Proxy(2), _res(nan)), (_Proxy(3), _res(wrong_shape))]
    params, _ = validator.aggregate_fit(1, results, [])
    model = _model(params)
    np.testing.assert_allclose(model[0], 1.5)  # global 1 + the only valid delta
    np.testing.assert_allclose(model[1], 0.5)
    assert model[0].dtype == np.float32
    rejected = {e.node_id: e.reason for e in events if e.kind == "rejected"}
    assert set(rejected) == {2, 3}
    assert "NaN" in rejected[2] and "shape" in rejected[3]


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ([np.zeros((1, 3), np.float64), np.zeros(1, np.float64)], "dtype"),
        ([np.full((1, 3), 9.0, np.float32), np.zeros(1, np.float32)], "norm"),
        ([np.zeros((1, 3), np.float32)], "arrays, expected"),
        ([np.zeros((1, 3), np.int32), np.zeros(1, np.int32)], "dtype"),
    ],
)
def test_malformed_or_oversized_updates_are_rejected(update, reason):
    events: list[RoundEvent] = []
    params, _ = _validator(events).aggregate_fit(2, [(_Proxy(7), _res(update))], [])
    assert params is None  # nothing valid: the previous model stays
    assert [e.kind for e in events] == ["rejected"]
    assert reason in events[0].reason and events[0].server_round == 2


def test_a_refusal_is_recorded_not_rejected_and_carries_the_ledger_numbers():
    events: list[RoundEvent] = []
    refusal = _res(
        _delta(0.0),
        n=0,
        refused=1,
        requested_epsilon=4.2,
        remaining_epsilon=1.0,
        difference_epsilon=3.2,
    )
    results = [(_Proxy(1), _res(_delta(0.5))), (_Proxy(2), refusal)]
    params, _ = _validator(events).aggregate_fit(3, results, [])
    np.testing.assert_allclose(_model(params)[0], 1.5)
    assert [e.kind for e in events] == ["refused"]
    assert events[0].node_id == 2
    assert events[0].numbers == {
        "requested_epsilon": 4.2,
        "remaining_epsilon": 1.0,
        "difference_epsilon": 3.2,
    }


def test_secure_aggregation_validates_the_aggregate_and_keeps_the_previous_model():
    events: list[RoundEvent] = []
    validator = _validator(events, secagg=True)
    # SecAgg+ hands every result the same dequantised (float64) weighted-mean delta.
    aggregate = [a.astype(np.float64) for a in _delta(0.25)]
    results = [(_Proxy(i), _res(aggregate, n=10 * i)) for i in (1, 2, 3)]
    params, _ = validator.aggregate_fit(1, results, [])
    model = _model(params)
    np.testing.assert_allclose(model[0], 1.25)
    assert model[0].dtype == np.float32 and not events

    poisoned = [a.copy() for a in aggregate]
    poisoned[1][0] = np.inf
    results = [(_Proxy(i), _res(poisoned)) for i in (1, 2)]
    params, _ = validator.aggregate_fit(2, results, [])
    assert params is None
    assert events[-1].kind == "rejected" and events[-1].node_id is None
    assert "previous model" in events[-1].reason


def test_secure_aggregation_with_every_store_refusing_changes_nothing():
    events: list[RoundEvent] = []
    zeros = [a.astype(np.float64) for a in _delta(0.0)]
    results = [(_Proxy(i), _res(zeros, n=0, refused=1)) for i in (1, 2)]
    params, _ = _validator(events, secagg=True).aggregate_fit(1, results, [])
    assert params is None
    assert [e.kind for e in events] == ["refused", "refused", "rejected"]


def test_server_optimizers_go_through_the_validator():
    assert set(SERVER_OPTIMIZERS) == set(CONFIG_OPTIMIZERS)
    for name in SERVER_OPTIMIZERS:
        inner = build_base_strategy(
            name,
            initial_parameters=ndarrays_to_parameters(_reference()),
            min_stores=2,
            server_learning_rate=0.1,
            server_momentum=0.9,
            on_fit_config_fn=lambda r: {},
            on_evaluate_config_fn=lambda r: {},
        )
        events: list[RoundEvent] = []
        results = [(_Proxy(1), _res(_delta(0.5))), (_Proxy(2), _res(_delta(0.3)))]
        params, _ = _validator(events, inner=inner).aggregate_fit(1, results, [])
        model = _model(params)
        assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in model), name
        assert not np.allclose(model[0], 1.0), name  # the model moved
    with pytest.raises(ValueError, match="fedavg"):
        build_base_strategy(
            "sgd",
            initial_parameters=ndarrays_to_parameters(_reference()),
            min_stores=2,
            server_learning_rate=0.1,
            server_momentum=0.9,
            on_fit_config_fn=lambda r: {},
            on_evaluate_config_fn=lambda r: {},
        )


class _AllNodes(Strategy):
    """An inner strategy that offers every node of the test."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def configure_fit(self, server_round, parameters, client_manager):
        return [(_Proxy(n), FitIns(parameters, {})) for n in self.nodes]

    initialize_parameters = configure_evaluate = aggregate_fit = None  # type: ignore[assignment]
    aggregate_evaluate = evaluate = None  # type: ignore[assignment]


class _Sampler(Strategy):
    """configure_fit picks the given proxies; aggregate_fit returns a fixed model."""

    def __init__(self, proxies: list[_Proxy]) -> None:
        self.proxies = proxies

    def initialize_parameters(self, client_manager):
        return None

    def configure_fit(self, server_round, parameters, client_manager):
        return [(p, FitIns(parameters, {})) for p in self.proxies]

    def aggregate_fit(self, server_round, results, failures):
        return ndarrays_to_parameters(_reference()), {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def _recorder(proxies: list[_Proxy], events: list[RoundEvent]) -> tuple[RoundRecorder, dict]:
    records: dict[int, dict] = {}
    recorder = RoundRecorder(
        _Sampler(proxies),
        on_model=lambda r, arrays: None,
        on_metrics=lambda r, record: records.__setitem__(r, record),
        on_event=events.append,
    )
    return recorder, records


def test_round_recorder_times_the_round_and_the_slowest_store():
    proxies = [_Proxy(1), _Proxy(2)]
    events: list[RoundEvent] = []
    recorder, records = _recorder(proxies, events)
    params = ndarrays_to_parameters(_reference())
    recorder.configure_fit(1, params, None)
    results = [(proxies[0], _res(_delta(0.1), compute_seconds=2.5)),
               (proxies[1], _res(_delta(0.1), compute_seconds=0.5))]  # fmt: skip
    recorder.aggregate_fit(1, results, [])
    record = records[1]
    assert record["fit_seconds"] is not None and record["fit_seconds"] >= 0
    assert record["store_seconds_max"] == 2.5 and record["store_seconds_mean"] == 1.5
    assert record["fit_sampled"] == 2 and record["fit_results"] == 2
    assert events == []


def test_a_store_that_sends_nothing_is_recorded_as_dropped():
    proxies = [_Proxy(1), _Proxy(2), _Proxy(3)]
    events: list[RoundEvent] = []
    recorder, records = _recorder(proxies, events)
    recorder.configure_fit(4, ndarrays_to_parameters(_reference()), None)
    recorder.aggregate_fit(4, [(proxies[0], _res(_delta(0.1))), (proxies[2], _res(_delta(0.1)))],
                           [RuntimeError("node unavailable")])  # fmt: skip
    assert [(e.kind, e.server_round, e.node_id) for e in events] == [("dropped", 4, 2)]
    assert records[4]["fit_results"] == 2 and records[4]["fit_failures"] == 1
    assert records[4]["model_updated"] is True


def test_a_round_that_never_aggregates_is_recorded_as_failed():
    """SecAgg+ aborts a stage below its threshold: aggregate_fit is never called, the
    round's centralised-evaluate hook is (the model is the previous one)."""
    proxies = [_Proxy(1), _Proxy(2), _Proxy(3)]
    events: list[RoundEvent] = []
    recorder, records = _recorder(proxies, events)
    params = ndarrays_to_parameters(_reference())
    recorder.configure_fit(2, params, None)
    recorder.evaluate(2, params)
    assert [(e.kind, e.server_round) for e in events] == [("failed", 2)]
    assert "3 stores sampled" in events[0].reason
    assert records[2]["model_updated"] is False and records[2]["fit_results"] == 0
    assert records[2]["fit_seconds"] is not None
    recorder.evaluate(2, params)  # recorded once, not again on a second call
    assert len(events) == 1


@pytest.mark.parametrize("aggregation", ["trimmed-mean", "median", "krum"])
def test_robust_aggregation_ignores_one_outlying_store(aggregation):
    """Five stores, one sends a finite update within the norm bound but far from the rest:
    the mean moves towards it, the robust rules do not."""

    def aggregate(rule: str) -> np.ndarray:
        base = build_base_strategy(
            "fedavg", initial_parameters=ndarrays_to_parameters(_reference()), min_stores=2,
            server_learning_rate=1.0, server_momentum=0.0,
            on_fit_config_fn=lambda r: {}, on_evaluate_config_fn=lambda r: {},
            aggregation=rule, robust_trim=0.2, robust_malicious=1,
        )  # fmt: skip
        events: list[RoundEvent] = []
        validator = _validator(events, inner=base)
        honest = [(_Proxy(i), _res(_delta(0.1 + 0.01 * i))) for i in range(4)]
        hostile = (_Proxy(9), _res(_delta(2.0)))  # norm 4.0 < the bound 5.0: not rejected
        params, _ = validator.aggregate_fit(1, [*honest, hostile], [])
        assert events == []
        return _model(params)[0] - _reference()[0]

    mean, robust = aggregate("mean"), aggregate(aggregation)
    assert np.all(mean > 0.45)  # (4 × ~0.115 + 2.0) / 5
    assert np.all(robust < 0.15), robust


def test_robust_aggregation_is_refused_with_secure_aggregation():
    with pytest.raises(ConfigError, match="SecAgg"):
        FederationConfig.from_run_config({"aggregation": "median", "secagg": True})
    config = FederationConfig.from_run_config({"aggregation": "median", "secagg": False})
    assert config.aggregation == "median"
    with pytest.raises(ConfigError, match="aggregation must be one of"):
        FederationConfig.from_run_config({"aggregation": "geomedian", "secagg": False})


def test_participation_gate_leaves_out_stores_beyond_their_budget():
    events: list[RoundEvent] = []
    gate = ParticipationGate(
        _AllNodes([1, 2, 3, 4]), {1: 2, 2: 1, 3: 0}, min_stores=2, on_event=events.append
    )
    params = ndarrays_to_parameters(_reference())
    assert [p.node_id for p, _ in gate.configure_fit(1, params, None)] == [1, 2]
    assert {e.node_id for e in events if e.kind == "excluded"} == {3, 4}  # 4: no answer
    events.clear()
    assert gate.configure_fit(2, params, None) == []  # only store 1 left: skip
    assert [e.kind for e in events][-1] == "skipped"


def test_weighted_metrics_average_only_over_stores_that_report():
    out = weighted_metrics([(10, {"auc": 0.8, "loss": 1.0}), (30, {"loss": 2.0}), (0, {})])
    assert out["auc"] == pytest.approx(0.8)
    assert out["loss"] == pytest.approx(1.75)
    assert out["num_examples"] == 40 and out["stores"] == 2


def test_run_config_is_typed_and_strict():
    config = FederationConfig.from_run_config({"num-rounds": 2, "epsilon": 2, "secagg": False})
    assert config.num_rounds == 2 and isinstance(config.epsilon, float) and not config.secagg
    assert set(config.to_run_config()) == set(FederationConfig.keys())
    with pytest.raises(ConfigError, match="unknown run_config keys"):
        FederationConfig.from_run_config({"num_rounds": 2})
    with pytest.raises(ConfigError, match="num-rounds must be int"):
        FederationConfig.from_run_config({"num-rounds": "2"})
    with pytest.raises(ConfigError, match="SecAgg"):
        FederationConfig.from_run_config({"min-stores": 1})
    with pytest.raises(ConfigError, match="server-optimizer"):
        FederationConfig.from_run_config({"server-optimizer": "sgd"})


def test_honest_dp_sgd_updates_stay_within_their_plan_bound():
    """Real DP-SGD on a small store (large noise): every update is within the bound derived
    from its plan."""
    from fedcrm.models.churn import build_churn_model
    from fedcrm.privacy.dp_sgd import DpSgdConfig, sample_rate_for, steps_per_epoch, train_dp
    from fedcrm.server.update_bounds import honest_update_bound

    rng = np.random.default_rng(3)
    n, d, batch, epochs, lr, clip, sigma = 120, 20, 128, 5, 0.5, 1.0, 4.0
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.3).astype(np.float32)
    q, steps = sample_rate_for(n, batch), steps_per_epoch(n, batch) * epochs
    bound = honest_update_bound(learning_rate=lr, clip_norm=clip, steps=steps,
                                noise_multiplier=sigma, sample_rate=q, num_train=n,
                                parameters=d + 1)  # fmt: skip
    for seed in range(5):
        model = build_churn_model("logistic", d)
        before = [p.detach().numpy().copy() for p in model.parameters()]
        config = DpSgdConfig(
            noise_multiplier=sigma, max_grad_norm=clip, expected_batch_size=batch,
            epochs=epochs, learning_rate=lr, optimizer="sgd", seed=seed,
        )  # fmt: skip
        state = train_dp(model, x, y, config).state_dict
        after = [state[k].numpy() for k in state]
        norm = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after, before, strict=True))))
        assert 0 < norm <= bound, (norm, bound)
        # worst case (every clipped gradient aligned in every step), so loose, not vacuous:
        # within 20x of what honest training gives here, far below a corrupted update
        assert bound < 20 * norm


def test_the_validator_holds_each_store_to_its_own_bound():
    events: list[RoundEvent] = []
    validator = UpdateValidator(FedAvg(), _reference(), max_update_norm=5.0,
                                secure_aggregation=False, on_event=events.append,
                                bounds={1: 0.5, 2: 3.0})  # fmt: skip
    results = [(_Proxy(1), _res(_delta(0.5))), (_Proxy(2), _res(_delta(0.5)))]  # norm 1.0
    params, _ = validator.aggregate_fit(1, results, [])
    assert [(e.node_id, e.reason) for e in events] == [(1, "update norm 1 exceeds the bound 0.5")]
    assert validator.bound(None) == 3.0 and validator.bound(7) == 5.0
    np.testing.assert_allclose(_model(params)[0], 1.5)
