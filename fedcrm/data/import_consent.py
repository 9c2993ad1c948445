"""Consent for `fedcrm import`: a consent ledger file, or the ``all-granted`` declaration.

Consent is never assumed silently: the request names a consent ledger file or declares
``all-granted``. A declaration becomes, for every customer and purpose, a grant dated at the
**earliest timestamp of the source file** (the ledger answers "latest event at or before *t*",
so the declaration asserts consent covering the data's whole period; dated at import time it
would cover none of it), with ``source="import-declaration:all-granted"``, and it is recorded
in every store manifest (``consent_declaration``, see :func:`declaration_manifest`) for the
audit report. Declared grants do not move ``joined_at``; events of a consent file do when they
are earlier than the first purchase.

A consent file needs the columns ``customer_id``, ``purpose``, ``granted`` and ``timestamp``
(optional: ``source``, ``policy_version``). Its problems always fail the import, even with
``skip_invalid_rows``: dropping a revocation would grant consent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.data.coercion import coerce_column
from fedcrm.data.contract import PURPOSES, ColumnKind, ValidationLimits
from fedcrm.data.import_mapping import read_table
from fedcrm.data.import_rows import RowProblems, text_values
from fedcrm.data.timestamps import parse_timestamp_column
from fedcrm.errors import ImportMappingError

__all__ = [
    "ALL_GRANTED",
    "DECLARATION_POLICY",
    "DECLARATION_SOURCE",
    "declaration_manifest",
    "declared_consents",
    "read_consents",
]

logger = logging.getLogger(__name__)

ALL_GRANTED = "all-granted"
DECLARATION_SOURCE = "import-declaration:all-granted"
DECLARATION_POLICY = "declared-at-import"

_CONSENT_COLUMNS = ("customer_id", "purpose", "granted", "timestamp")
_CONSENT_OPTIONAL = ("source", "policy_version")


def _consent_chooser(file: str) -> Callable[[list[str]], dict[str, str]]:
    def choose(header: list[str]) -> dict[str, str]:
        by_name = {h.replace("\ufeff", "").strip().casefold(): h for h in header}
        missing = [c for c in _CONSENT_COLUMNS if c not in by_name]
        if missing:
            raise ImportMappingError(
                f"{file}: the consent file lacks column(s) {', '.join(missing)}; it needs "
                f"{', '.join(_CONSENT_COLUMNS)} (optional: {', '.join(_CONSENT_OPTIONAL)}); "
                f"its columns are: {', '.join(repr(h.strip()) for h in header)}"
            )
        wanted = _CONSENT_COLUMNS + _CONSENT_OPTIONAL
        return {c: by_name[c] for c in wanted if c in by_name}

    return choose


def read_consents(
    path: Path, encoding: str | None, now: pd.Timestamp, limits: ValidationLimits
) -> pd.DataFrame:
    """The consent ledger file, typed and checked; any problem fails the import."""
    file = path.name
    raw = read_table(path, encoding, _consent_chooser(file))
    n = len(raw)
    p = RowProblems(file, n, limits.max_reported_per_check, skippable=False)
    out: dict[str, Any] = {"customer_id": text_values(raw["customer_id"])}
    p.add("customer_id", "customer id is missing", out["customer_id"].isna())
    purpose = text_values(raw["purpose"]).str.lower()
    p.add("purpose", "purpose is missing", purpose.isna())
    p.add(
        "purpose",
        "unknown purpose; expected one of " + ", ".join(PURPOSES),
        purpose.notna() & ~purpose.isin(PURPOSES),
    )
    out["purpose"] = purpose
    granted = coerce_column(raw["granted"], ColumnKind.BOOL)
    p.add("granted", "granted is missing", granted.missing)
    p.add("granted", "not true/false (e.g. true, false, 1, 0, yes, no)", granted.invalid)
    out["granted"] = granted.values
    parsed = parse_timestamp_column(
        raw["timestamp"], date_format=None, file=file, field="timestamp"
    )
    ts = parsed.values
    p.add("timestamp", "timestamp is missing", parsed.missing)
    how = f"not a date in the detected format {parsed.format!r}"
    p.add("timestamp", how, parsed.invalid)
    latest = now + pd.Timedelta(days=limits.clock_skew_days)
    p.add("timestamp", f"timestamp is in the future (after {latest:%Y-%m-%d})", ts > latest)
    oldest = pd.Timestamp(limits.earliest_timestamp)
    p.add("timestamp", f"implausibly old timestamp (before {oldest:%Y-%m-%d})", ts < oldest)
    out["timestamp"] = ts
    defaults = {"source": f"import:{file}", "policy_version": "unspecified"}
    for name, default in defaults.items():
        if name in raw:
            out[name] = text_values(raw[name])
            p.add(name, f"{name} is missing", out[name].isna())
        else:
            out[name] = pd.Series(default, index=range(n), dtype="str")
    frame = pd.DataFrame(out)
    keys = [frame["customer_id"], frame["purpose"], frame["timestamp"]]
    disagree = frame.groupby(keys, sort=False, dropna=True)["granted"].transform("nunique") > 1
    p.add(
        "granted",
        "contradictory events for the same customer, purpose and time",
        disagree.reindex(frame.index, fill_value=False),
    )
    p.resolve(skip=False)
    if frame.empty:
        logger.warning("%s: the consent file holds no events; no customer has consent", file)
    return frame


def declared_consents(customer_ids: pd.Series, granted_at: pd.Timestamp) -> pd.DataFrame:
    """The all-granted declaration: one grant per customer and purpose, dated ``granted_at``."""
    n, k = len(customer_ids), len(PURPOSES)
    return pd.DataFrame(
        {
            "customer_id": pd.Series(np.repeat(customer_ids.to_numpy(object), k), dtype="str"),
            "purpose": pd.Series(np.tile(np.array(PURPOSES, dtype=object), n), dtype="str"),
            "granted": np.ones(n * k, dtype=bool),
            "timestamp": pd.Series(granted_at, index=range(n * k), dtype="datetime64[ns]"),
            "source": pd.Series(DECLARATION_SOURCE, index=range(n * k), dtype="str"),
            "policy_version": pd.Series(DECLARATION_POLICY, index=range(n * k), dtype="str"),
        }
    )


def declaration_manifest(
    declared_at: str, source_file: str, source_sha256: str, granted_from: pd.Timestamp
) -> dict[str, Any]:
    """The ``consent_declaration`` entry of a store manifest (no customer data)."""
    return {
        "mode": ALL_GRANTED,
        "declared_at": declared_at,
        "source_file": source_file,
        "source_sha256": source_sha256,
        "purposes": list(PURPOSES),
        "granted_from": granted_from.isoformat(),
        "ledger_source": DECLARATION_SOURCE,
        "policy_version": DECLARATION_POLICY,
    }
