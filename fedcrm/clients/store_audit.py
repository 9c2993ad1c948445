"""The store's audit trail: what its agent appends, and its head as numbers for the coordinator.

Every privacy-relevant step of the store agent is appended to ``STORE/.fedcrm/audit.jsonl``
(:class:`~fedcrm.audit.log.AuditLog`, hash-chained and signed with the store's own Ed25519 key
in ``STORE/.fedcrm/keys/``): the run it joins, consent counts and the de-identification
statement of each preparation, each DP round and analytics release with its ε, refusals,
the egress guard's decisions and the end of each task. Payloads hold counts, hashes, run ids
and DP numbers — never a customer's id or attribute.

The store's log head leaves the store in its end-of-task privacy report as numbers only
(the egress guard admits no strings): ``audit_seq``, the hash as eight 32-bit integers
``audit_hash_0..7`` and the key id as two (``audit_key_0..1``). The coordinator rebuilds it
(:func:`head_from_metrics`) and records it in its own log, so a store cannot later rewrite
what it logged up to that point without the coordinator's log showing it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedcrm.data.layout import StoreLayout

__all__ = [
    "HEAD_METRICS",
    "audit",
    "audit_preparation",
    "audit_run_start",
    "head_from_metrics",
    "head_metrics",
    "store_writer",
]

logger = logging.getLogger(__name__)

HEAD_METRICS: tuple[str, ...] = (
    "audit_seq",
    *(f"audit_hash_{i}" for i in range(8)),
    "audit_key_0",
    "audit_key_1",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def store_writer(store_id: str) -> str:
    """The store's writer name in audit logs: ``store-<store id>`` in file-safe characters."""
    return ("store-" + _UNSAFE.sub("_", store_id))[:64]


def _log(layout: StoreLayout) -> Any:
    from fedcrm.audit.log import AUDIT_PUBLIC_KEY_NAME

    if not (layout.private_dir / AUDIT_PUBLIC_KEY_NAME).is_file():
        _open_log.cache_clear()  # a store directory made anew at the same path: open afresh
    return _open_log(str(layout.private_dir), store_writer(layout.store_id))


@lru_cache(maxsize=64)
def _open_log(private_dir: str, writer: str) -> Any:
    """One open log per store and process: the key is read once, not at every event (each
    append still verifies the log's last entry under the log's lock)."""
    from fedcrm.audit.log import AuditLog

    return AuditLog.open(Path(private_dir), writer)


def audit(layout: StoreLayout, kind: str, payload: Mapping[str, Any]) -> None:
    """Append one event to the store's audit log (raises when the log cannot be written:
    a store does not act on customer data without leaving its trace)."""
    _log(layout).append(kind, payload)


def audit_run_start(
    context: Any, layout: StoreLayout, task: str, details: Mapping[str, Any] | None = None
) -> None:
    """``run_start`` once per run and task (remembered in the run's ``Context.state``, which
    outlives the agent's process)."""
    from flwr.app import ConfigRecord

    key = f"fedcrm.audit.{task}"
    if key in context.state.config_records:
        return
    audit(layout, "run_start", {"run_id": str(context.run_id), "task": task, **(details or {})})
    context.state.config_records[key] = ConfigRecord({"started": True})


def audit_preparation(layout: StoreLayout, run_id: Any, task: str, prepared: Any) -> None:
    """The consent counts and the de-identification statement of one preparation."""
    consent = prepared.consent.as_dict()
    audit(layout, "consent_filter", {"run_id": str(run_id), "task": task, **_jsonable(consent)})
    report = prepared.deidentification
    audit(
        layout,
        "deidentification",
        {
            "run_id": str(run_id),
            "task": task,
            "policy": report.policy_name,
            "policy_digest": report.policy_digest,
            "pseudonym_key_id": report.pseudonym_key_id,
            "classification": report.classification,
            "columns": [_column(c) for c in report.columns],
            "output_rows": {table: int(n) for table, n in report.output_rows},
        },
    )


def _column(column: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: _jsonable(v) for k, v in asdict(column).items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # timestamps


def head_metrics(layout: StoreLayout) -> dict[str, int]:
    """The store's log head as integers (see the module docstring)."""
    head = _log(layout).head()
    words = [int(head.hash[i : i + 8], 16) for i in range(0, 64, 8)]
    key = (head.key_id or "0" * 16).ljust(16, "0")[:16]
    return {
        "audit_seq": int(head.seq),
        **{f"audit_hash_{i}": w for i, w in enumerate(words)},
        "audit_key_0": int(key[:8], 16),
        "audit_key_1": int(key[8:], 16),
    }


def head_from_metrics(writer: str, metrics: Mapping[str, float]) -> Any:
    """The :class:`~fedcrm.audit.log.AuditHead` a store reported, or None when incomplete."""
    from fedcrm.audit.log import AuditHead

    if not all(name in metrics for name in HEAD_METRICS):
        return None
    digest = "".join(f"{int(metrics[f'audit_hash_{i}']):08x}" for i in range(8))
    key_id = f"{int(metrics['audit_key_0']):08x}{int(metrics['audit_key_1']):08x}"
    return AuditHead(writer, int(metrics["audit_seq"]), digest, key_id)
