"""The egress guard lets out model arrays and whitelisted numbers, nothing else (fail closed)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.clientapp import ClientApp
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.common.constant import ErrorCode
from flwr.compat.common import recorddict_compat as compat

from fedcrm.privacy.egress import ALLOWED_METRICS, EGRESS_LOG_NAME, EgressGuard, inspect_reply

CANARY = "CANARY-13800000001-赵一"  # a customer id / phone / name that must never leave

Handler = Callable[[Message, Context], Message]


def _incoming(content: RecordDict, message_type: str) -> Message:
    metadata = Metadata(
        run_id=7,
        message_id="msg-1",
        src_node_id=1,
        dst_node_id=2,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return make_message(metadata, content)


def _context() -> Context:
    return Context(run_id=7, node_id=2, node_config={}, state=RecordDict(), run_config={})


def _global_model() -> list[np.ndarray]:
    return [np.zeros((1, 4), dtype=np.float32), np.zeros(1, dtype=np.float32)]


def _fit_message() -> Message:
    ins = FitIns(ndarrays_to_parameters(_global_model()), {"server-round": 1})
    return _incoming(compat.fitins_to_recorddict(ins, True), "train")


def _fit_reply(arrays: list[np.ndarray], metrics: dict | None = None) -> RecordDict:
    res = FitRes(
        Status(Code.OK, "Success"), ndarrays_to_parameters(arrays), 10, metrics or {"loss": 0.5}
    )
    return compat.fitres_to_recorddict(res, False)


def _run(
    guard: EgressGuard, msg: Message, build: Callable[[Message], RecordDict | Message]
) -> Message:
    def handler(m: Message, ctx: Context) -> Message:
        out = build(m)
        return out if isinstance(out, Message) else Message(out, reply_to=m)

    return guard(msg, _context(), handler)


def _log(tmp_path: Path) -> list[dict]:
    path = tmp_path / EGRESS_LOG_NAME
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def guard(tmp_path: Path) -> EgressGuard:
    return EgressGuard(lambda context: tmp_path)


def _assert_blocked(reply: Message, tmp_path: Path) -> dict:
    assert reply.has_error()
    assert reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert CANARY not in (reply.error.reason or "")
    text = (tmp_path / EGRESS_LOG_NAME).read_text(encoding="utf-8")
    assert CANARY not in text
    entry = _log(tmp_path)[-1]
    assert entry["decision"] == "blocked" and entry["violations"]
    assert "metrics" not in entry and "arrays" not in entry
    return entry


def test_model_update_and_numeric_metrics_pass_and_are_logged(guard, tmp_path):
    delta = [np.full((1, 4), 0.1, dtype=np.float32), np.array([0.2], dtype=np.float32)]
    reply = _run(guard, _fit_message(), lambda m: _fit_reply(delta, {"loss": 0.5, "steps": 3}))
    assert not reply.has_error()
    entry = _log(tmp_path)[-1]
    assert entry["decision"] == "allowed" and entry["message_type"] == "train"
    assert entry["run_id"] == 7
    assert [a["shape"] for a in entry["arrays"]] == [[1, 4], [1]]
    assert all(a["dtype"] == "float32" and len(a["sha256"]) == 64 for a in entry["arrays"])
    assert entry["metrics"]["fitres.metrics.loss"] == 0.5
    assert entry["metrics"]["fitres.num_examples.num_examples"] == 10


def test_a_customer_id_in_a_config_record_is_blocked(guard, tmp_path):
    def build(m: Message) -> RecordDict:
        content = _fit_reply(_global_model())
        content.config_records["fitres.metrics"]["customer_id"] = CANARY
        return content

    entry = _assert_blocked(_run(guard, _fit_message(), build), tmp_path)
    assert any("metric name not allowed" in v for v in entry["violations"])


def test_a_string_value_under_an_allowed_metric_name_is_blocked(guard, tmp_path):
    def build(m: Message) -> RecordDict:
        content = _fit_reply(_global_model())
        content.config_records["fitres.metrics"]["loss"] = CANARY
        return content

    entry = _assert_blocked(_run(guard, _fit_message(), build), tmp_path)
    assert any("not a finite int/float" in v for v in entry["violations"])


def test_an_extra_record_or_array_is_blocked(guard, tmp_path):
    def extra_record(m: Message) -> RecordDict:
        content = _fit_reply(_global_model())
        content.array_records["customers"] = ArrayRecord([np.array([CANARY])])
        return content

    def extra_array(m: Message) -> RecordDict:
        ids = np.frombuffer(CANARY.encode().ljust(16, b"\0")[:16], dtype=np.float32)
        return _fit_reply([*_global_model(), ids])

    def reshaped(m: Message) -> RecordDict:
        return _fit_reply([np.zeros((2, 4), np.float32), np.zeros(1, np.float32)])

    for build in (extra_record, extra_array, reshaped):
        _assert_blocked(_run(guard, _fit_message(), build), tmp_path)


def test_a_canary_as_a_metric_name_is_blocked_and_not_logged(guard, tmp_path):
    query = _incoming(RecordDict({"plan": ConfigRecord({"plan.x": 1})}), "query.privacy_budget")
    reply = _run(guard, query, lambda m: RecordDict({"budget": MetricRecord({CANARY: 1.0})}))
    _assert_blocked(reply, tmp_path)


def test_nan_payloads_and_appended_bytes_are_blocked(guard, tmp_path):
    nan = [np.full((1, 4), np.nan, dtype=np.float32), np.zeros(1, np.float32)]
    _assert_blocked(_run(guard, _fit_message(), lambda m: _fit_reply(nan)), tmp_path)

    def appended(m: Message) -> RecordDict:
        content = _fit_reply(_global_model())
        arr = content.array_records["fitres.parameters"]["0"]
        smuggled = Array(dtype="", shape=(), stype=arr.stype, data=arr.data + CANARY.encode())
        content.array_records["fitres.parameters"]["0"] = smuggled
        return content

    _assert_blocked(_run(guard, _fit_message(), appended), tmp_path)


def test_a_free_text_status_is_blocked(guard, tmp_path):
    def build(m: Message) -> RecordDict:
        res = FitRes(Status(Code.OK, CANARY), ndarrays_to_parameters(_global_model()), 1, {})
        return compat.fitres_to_recorddict(res, False)

    _assert_blocked(_run(guard, _fit_message(), build), tmp_path)


def test_query_replies_may_not_carry_arrays(guard, tmp_path):
    query = _incoming(RecordDict(), "query.privacy_report")
    ok = _run(guard, query, lambda m: RecordDict({"report": MetricRecord({"run_epsilon": 1.5})}))
    assert not ok.has_error()
    leak = _run(
        guard, query, lambda m: RecordDict({"arrays": ArrayRecord([np.ones(3, np.float32)])})
    )
    assert leak.has_error()


def test_exceptions_and_handler_errors_leave_without_their_text(guard, tmp_path):
    def boom(m: Message) -> RecordDict:
        raise KeyError(CANARY)

    reply = _run(guard, _fit_message(), boom)
    assert reply.has_error() and CANARY not in (reply.error.reason or "")
    assert "KeyError" in (reply.error.reason or "")

    def error_reply(m: Message) -> Message:
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, CANARY), reply_to=m)

    reply = _run(guard, _fit_message(), error_reply)
    assert reply.has_error() and CANARY not in (reply.error.reason or "")
    assert CANARY not in (tmp_path / EGRESS_LOG_NAME).read_text(encoding="utf-8")
    assert [e["decision"] for e in _log(tmp_path)] == ["error", "error"]


def test_no_log_no_egress(tmp_path):
    def nowhere(context: Context) -> Path:
        raise OSError("the store's private directory is not mounted")

    guard = EgressGuard(nowhere)
    reply = _run(guard, _fit_message(), lambda m: _fit_reply(_global_model()))
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION


def test_the_guard_works_as_an_app_mod(guard, tmp_path):
    app = ClientApp(mods=[guard])

    @app.query("privacy_budget")
    def leak(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"budget": MetricRecord({CANARY: 1})}), reply_to=msg)

    reply = app(_incoming(RecordDict(), "query.privacy_budget"), _context())
    _assert_blocked(reply, tmp_path)


def test_the_store_app_puts_the_guard_inside_secagg():
    from fedcrm.clients.app import app

    mods = app._mods  # first = outermost
    assert len(mods) == 2 and isinstance(mods[-1], EgressGuard)
    assert "secagg" in mods[0].__qualname__


def test_inspect_reply_is_pure_and_value_free():
    incoming = _fit_message().content
    outgoing = _fit_reply(_global_model(), {"auc": 0.7})
    outgoing.metric_records[CANARY] = MetricRecord({"loss": 1.0})
    report = inspect_reply(incoming, outgoing)
    assert not report.allowed
    assert CANARY not in " ".join(report.violations)
    assert {"loss", "auc", "num_examples", "epsilon", "refused"} <= ALLOWED_METRICS


def test_npy_header_must_match_declared_metadata(guard, tmp_path):
    arr = np.zeros(1, np.float32)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    lying = Array(dtype="float32", shape=(7,), stype="numpy.ndarray", data=buf.getvalue())
    incoming = RecordDict({"arrays": ArrayRecord([arr])})
    outgoing = RecordDict({"arrays": ArrayRecord({"0": lying})})
    assert not inspect_reply(incoming, outgoing).allowed
