"""The store's egress guard: a Flower client mod that lets out only what it expects.

Everything a store sends to the coordinator passes through :class:`EgressGuard`. A reply may
carry only:

- **model arrays** — an ``ArrayRecord`` whose arrays have exactly the names, shapes and
  (numeric) dtypes of one ``ArrayRecord`` the coordinator sent in the incoming message (the
  global model), with finite values and canonical ``.npy`` bytes (nothing appended);
- **numeric metrics** — finite ``int``/``float`` scalars under a name in
  :data:`ALLOWED_METRICS`, in a record named in :data:`ALLOWED_RECORDS`;
- **a legacy status** — code ``OK`` and a message in :data:`STATUS_MESSAGES`.

Anything else — a string or bytes value, a list, an unknown record or metric name, an extra
or reshaped array, a NaN (whose payload bits could carry data) — blocks the *whole* reply
(fail closed): the mod returns ``Message(Error(MOD_FAILED_PRECONDITION, reason), reply_to=msg)``
whose reason names no value. An error reply from the handler, or an exception, leaves with a
fixed reason; the details stay in the store's log.

Each reply, allowed or blocked, is appended to ``STORE/.fedcrm/egress.jsonl``: time, run id,
message type, decision, the arrays' names, shapes, dtypes and SHA-256 of their bytes, the
metric names and values of an allowed reply, and value-free descriptions of violations
(a disallowed name appears only as a SHA-256 prefix). Raw data is never written.

Placement: in ``ClientApp(mods=[secaggplus_mod, guard])`` the first mod is the outermost, so
the guard sits *inside* SecAgg+ and sees the plain fit result, not protocol records.

What the guard does not do: it checks the *form* of a reply, not what a number means. A
whitelisted float can still encode anything; the privacy of the model arrays comes from
DP-SGD, not from this mod.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

__all__ = [
    "ALLOWED_METRICS",
    "ALLOWED_RECORDS",
    "EGRESS_LOG_NAME",
    "RANKING_METRICS",
    "STATUS_MESSAGES",
    "STATUS_RECORDS",
    "EgressGuard",
    "EgressReport",
    "inspect_reply",
]

logger = logging.getLogger(__name__)

EGRESS_LOG_NAME = "egress.jsonl"

#: The preference model's ranking metrics on held-out customers (k = the plan's top-k).
RANKING_METRICS: tuple[str, ...] = (
    "recall_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "popularity_recall_at_k",
    "own_history_recall_at_k",
    "own_history_ndcg_at_k",
)

#: Metric names a store may send, each a finite int or float.
ALLOWED_METRICS: frozenset[str] = frozenset(
    {
        # training and evaluation
        "loss",
        "auc",
        "brier",
        "num_examples",
        "steps",
        "compute_seconds",  # the store's handling time of a training message
        # the privacy plan and decisions (numbers only; the coordinator writes the words)
        "refused",
        "allowed_rounds",
        "requested_epsilon",
        "remaining_epsilon",
        "difference_epsilon",
        "epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps_per_round",
        "num_train",
        "num_eval",
        # the end-of-run privacy report
        "run_epsilon",
        "lifetime_epsilon_spent",
        "lifetime_epsilon_budget",
        "purpose_epsilon_spent",
        "purpose_epsilon_cap",
        "rounds_trained",
        "partition_id",
        "cap_churn",
        "cap_preference",
        "cap_analytics",
        # the store's audit-log head (end-of-task report): seq, hash and key id as integers
        "audit_seq",
        *(f"audit_hash_{i}" for i in range(8)),
        "audit_key_0",
        "audit_key_1",
        # an analytics answer's noise and budget decision
        "allowed",
        "noise_scale",
        "l2_sensitivity",
        *RANKING_METRICS,
    }
)

#: Record names a reply may use (legacy fit/evaluate results and fedcrm's query replies).
ALLOWED_RECORDS: frozenset[str] = frozenset(
    {
        "fitres.parameters",
        "fitres.metrics",
        "fitres.num_examples",
        "fitres.status",
        "evaluateres.loss",
        "evaluateres.num_examples",
        "evaluateres.metrics",
        "evaluateres.status",
        "arrays",
        "metrics",
        "budget",
        "report",
    }
)

#: Config records that hold a legacy status (``code``, ``message``), not metrics.
STATUS_RECORDS: frozenset[str] = frozenset({"fitres.status", "evaluateres.status"})
#: The only status messages a store may send.
STATUS_MESSAGES: frozenset[str] = frozenset({"", "Success"})
_STATUS_OK = 0
_NUMERIC_KINDS = frozenset("fiu")
_LOG_LOCK = threading.Lock()  # module-level: the guard itself must pickle (Ray actors)

_BLOCKED_REASON = (
    "egress guard: reply blocked at the store boundary (see the store's egress log); "
    "{count} violation(s)"
)
_ERROR_REASON = "store-side error ({kind}); details are in the store's log"


def _digest(value: str | bytes) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(raw).hexdigest()


def _name_ref(name: str) -> str:
    """A value-free reference to a name that is not allowed: a SHA-256 prefix."""
    return f"sha256:{_digest(name)[:12]}"


@dataclass(frozen=True)
class ArrayManifest:
    """What one array that crossed looks like: no values, only form and a digest."""

    record: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class EgressReport:
    """The verdict on one reply; ``violations`` never hold a value or a disallowed name."""

    violations: tuple[str, ...]
    arrays: tuple[ArrayManifest, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return not self.violations


class _Rejected(ValueError):
    """An array or value is not of an allowed form (message is value-free)."""


def _parse_array(array: Array) -> np.ndarray:
    """The ndarray in ``array``, if it is plain, numeric, canonical ``.npy``; else raise."""
    if array.stype != "numpy.ndarray":
        raise _Rejected("not a numpy array")
    try:
        parsed = np.load(io.BytesIO(array.data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _Rejected("not readable as .npy") from exc
    if not isinstance(parsed, np.ndarray) or parsed.dtype.kind not in _NUMERIC_KINDS:
        raise _Rejected("not a numeric array")
    buffer = io.BytesIO()
    np.save(buffer, parsed, allow_pickle=False)
    if buffer.getvalue() != array.data:
        raise _Rejected("bytes are not canonical .npy (extra or odd bytes)")
    # New-style arrays declare dtype and shape; legacy ones leave them empty.
    if (array.dtype or array.shape) and (
        array.dtype != str(parsed.dtype) or tuple(array.shape) != parsed.shape
    ):
        raise _Rejected("declared dtype/shape differ from the data")
    return parsed


Signature = tuple[tuple[str, tuple[int, ...], str], ...]


def _signature(record: ArrayRecord) -> Signature | None:
    """Names, shapes and dtypes of an ArrayRecord, or None when it does not parse."""
    try:
        parsed = {name: _parse_array(arr) for name, arr in record.items()}
    except _Rejected:
        return None
    return tuple(sorted((n, a.shape, str(a.dtype)) for n, a in parsed.items()))


def _expected_signatures(incoming: RecordDict) -> set[Signature]:
    sigs = {_signature(rec) for rec in incoming.array_records.values()}
    return {s for s in sigs if s}


def _scalar(value: object) -> float | None:
    """A finite int/float scalar as float, else None (bool counts as int)."""
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def _check_metrics(
    kind: str,
    record_name: str,
    items: Iterable[tuple[str, object]],
    allowed_metrics: frozenset[str],
    violations: list[str],
    metrics: dict[str, float],
) -> None:
    for key, value in items:
        if key not in allowed_metrics:
            violations.append(f"{kind}[{record_name}]: metric name not allowed ({_name_ref(key)})")
            continue
        number = _scalar(value)
        if number is None:
            violations.append(
                f"{kind}[{record_name}].{key}: value is not a finite int/float scalar "
                f"({type(value).__name__})"
            )
            continue
        metrics[f"{record_name}.{key}"] = number


def _check_status(record_name: str, record: Mapping[str, object], violations: list[str]) -> None:
    if set(record) != {"code", "message"}:
        violations.append(f"config_records[{record_name}]: a status holds only code and message")
        return
    if record["code"] != _STATUS_OK or isinstance(record["code"], bool):
        violations.append(f"config_records[{record_name}]: status code is not OK")
    if not isinstance(record["message"], str) or record["message"] not in STATUS_MESSAGES:
        violations.append(f"config_records[{record_name}]: status message is not a fixed one")


def inspect_reply(
    incoming: RecordDict,
    outgoing: RecordDict,
    *,
    allowed_metrics: frozenset[str] = ALLOWED_METRICS,
) -> EgressReport:
    """Check ``outgoing`` against the policy; expected arrays come from ``incoming``."""
    violations: list[str] = []
    arrays: list[ArrayManifest] = []
    metrics: dict[str, float] = {}
    expected = _expected_signatures(incoming)
    unmatched = list(expected)
    for name, record in outgoing.array_records.items():
        if name not in ALLOWED_RECORDS:
            violations.append(f"array_records: record name not allowed ({_name_ref(name)})")
            continue
        sig = _signature(record)
        if sig is None:
            violations.append(f"array_records[{name}]: arrays are not plain numeric .npy")
            continue
        if sig not in unmatched:
            violations.append(
                f"array_records[{name}]: {len(record)} array(s) do not match the names, shapes "
                "and dtypes the coordinator sent"
            )
            continue
        unmatched.remove(sig)  # each model the server sent may go back at most once
        for arr_name, arr in record.items():
            parsed = _parse_array(arr)
            if parsed.dtype.kind == "f" and not np.isfinite(parsed).all():
                violations.append(f"array_records[{name}]: an array holds NaN or inf")
                break
            arrays.append(
                ArrayManifest(name, arr_name, parsed.shape, str(parsed.dtype), _digest(arr.data))
            )
    for name, metric_record in outgoing.metric_records.items():
        if name not in ALLOWED_RECORDS:
            violations.append(f"metric_records: record name not allowed ({_name_ref(name)})")
            continue
        _check_metrics(
            "metric_records", name, metric_record.items(), allowed_metrics, violations, metrics
        )
    for name, config_record in outgoing.config_records.items():
        if name not in ALLOWED_RECORDS:
            violations.append(f"config_records: record name not allowed ({_name_ref(name)})")
        elif name in STATUS_RECORDS:
            _check_status(name, config_record, violations)
        else:
            _check_metrics(
                "config_records", name, config_record.items(), allowed_metrics, violations, metrics
            )
    if violations:
        return EgressReport(tuple(violations))
    return EgressReport((), tuple(arrays), metrics)


class EgressGuard:
    """A client mod enforcing :func:`inspect_reply` and logging every reply.

    ``log_dir_for(context)`` gives the store's private directory (``STORE/.fedcrm``); when it
    cannot be resolved, or the log cannot be written, the reply is blocked: egress that is
    not recorded does not happen.
    """

    def __init__(
        self,
        log_dir_for: Callable[[Context], Path],
        *,
        allowed_metrics: frozenset[str] = ALLOWED_METRICS,
        audit: Callable[[Context, dict[str, Any]], object] | None = None,
    ) -> None:
        self._log_dir_for = log_dir_for
        self._allowed_metrics = allowed_metrics
        self._audit = audit  # the store's audit trail: every decision, value-free

    def __call__(
        self, msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        try:
            reply = call_next(msg, context)
        except Exception as exc:  # the reason must not carry the exception's text
            logger.exception("store handler failed on %s", msg.metadata.message_type)
            self._log(msg, context, "error", [f"handler raised {type(exc).__name__}"])
            reason = _ERROR_REASON.format(kind=type(exc).__name__)
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)
        if reply.has_error():
            code = reply.error.code
            self._log(msg, context, "error", [f"handler replied with error code {code}"])
            return Message(Error(code, _ERROR_REASON.format(kind=f"code {code}")), reply_to=msg)
        report = inspect_reply(msg.content, reply.content, allowed_metrics=self._allowed_metrics)
        decision = "allowed" if report.allowed else "blocked"
        logged = self._log(msg, context, decision, list(report.violations), report)
        if report.allowed and logged:
            return reply
        if report.allowed:  # not recorded → not sent
            report = EgressReport(("the egress log could not be written",))
        logger.warning(
            "egress guard blocked a %s reply: %s",
            msg.metadata.message_type,
            "; ".join(report.violations),
        )
        reason = _BLOCKED_REASON.format(count=len(report.violations))
        return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)

    def _log(
        self,
        msg: Message,
        context: Context,
        decision: str,
        violations: list[str],
        report: EgressReport | None = None,
    ) -> bool:
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "run_id": int(context.run_id),
            "node_id": int(context.node_id),
            "message_type": msg.metadata.message_type,
            "decision": decision,
            "violations": violations,
        }
        if report is not None and report.allowed:
            entry["arrays"] = [a.as_dict() for a in report.arrays]
            entry["metrics"] = dict(report.metrics)
        try:
            log_dir = Path(self._log_dir_for(context))
            log_dir.mkdir(parents=True, exist_ok=True)
            line = json.dumps(entry, sort_keys=True, allow_nan=False)
            with _LOG_LOCK, (log_dir / EGRESS_LOG_NAME).open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            if self._audit is not None:
                self._audit(context, _audit_payload(entry))
        except Exception:
            logger.exception("egress log could not be written")
            return False
        return True


def _audit_payload(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The audit trail's view of an egress decision: no values, only what and how many."""
    return {
        "run_id": str(entry["run_id"]),
        "message_type": str(entry["message_type"])[:100],
        "decision": entry["decision"],
        "violations": len(entry["violations"]),
        "arrays_sha256": [str(a.get("sha256", ""))[:16] for a in entry.get("arrays", [])][:64],
        "metric_names": sorted(entry.get("metrics", {}))[:64],
    }
