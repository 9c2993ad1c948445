"""The coordinator's audit trail: ``RUN/audit.jsonl``, signed with the coordinator's own key.

The coordinator appends the run's start and configuration hash, each model version it wrote
(file hashes), refusals and rejected updates (counts), each analytics release, and — after
each task — every store's audit-log head as the store reported it (:data:`STORE_HEAD`
entries). Those references pin the stores' logs: ``fedcrm audit verify RUN --stores CHAIN``
then detects a store log rewritten or cut after the fact.

The key lives outside the run directory (``audit-key-dir``; default ``~/.fedcrm/coordinator``),
so a copy of a run carries the public key (``RUN/audit.pub``) but not the private one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcrm.data.digest import file_sha256
from fedcrm.server.run_config import FederationConfig

__all__ = ["COORDINATOR_WRITER", "coordinator_log", "file_digests", "record_store_heads"]

COORDINATOR_WRITER = "coordinator"


def _key_dir(config: FederationConfig) -> Path:
    if config.audit_key_dir:
        return Path(config.audit_key_dir)
    return Path.home() / ".fedcrm" / "coordinator"


def coordinator_log(config: FederationConfig) -> Any:
    """The run's audit log, opened with the coordinator's key (created on first use)."""
    from fedcrm.audit.keys import AuditKey
    from fedcrm.audit.log import AuditLog

    key = AuditKey.load_or_create(_key_dir(config), COORDINATOR_WRITER)
    config.run_path.mkdir(parents=True, exist_ok=True)
    return AuditLog.open(config.run_path, COORDINATOR_WRITER, key)


def record_store_heads(log: Any, stores: Sequence[Mapping[str, Any]]) -> int:
    """Append a ``store_head`` for every store whose report carried its head; returns how many."""
    from fedcrm.clients.store_audit import head_from_metrics, store_writer

    recorded = 0
    for store in stores:
        label = str(store["store"])
        head = head_from_metrics(store_writer(label), store)
        if head is not None and head.seq >= 0:
            log.append_store_head(label, head)
            recorded += 1
    return recorded


def file_digests(files: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 of each written file (model versions), by name."""
    out = {}
    for name, path in files.items():
        out[str(name)] = file_sha256(Path(path))
    return out
