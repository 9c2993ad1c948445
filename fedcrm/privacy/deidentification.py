"""De-identification at the store boundary: a declared policy per column, applied fail-closed.

The policy (:class:`DeidentificationPolicy`, one :class:`ColumnRule` per column: drop,
pseudonymise, generalise or keep; TOML policy files) is defined in :mod:`fedcrm.privacy.policy`
and re-exported here. This module applies it: the customer id of every table maps through one
:class:`~fedcrm.privacy.pseudonyms.PseudonymMap`, so joins still work.

A column present in a frame that the policy does not cover is refused with
:class:`DeidentificationError` naming table and column; so is a policy that leaves a contract
column uncovered. When two rules write the same output, the first (in policy order) wins and the
later one fills its missing values. The consents table is never released. Output frames get a
fresh index. Weaker guarantees (federation linkage on, a quasi-identifier kept as it is) are
announced with :class:`~fedcrm.errors.PrivacyWarning`.

The result is de-identified, not anonymised (PIPL Art. 73; GDPR recital 26): the store can
re-identify it with its key and pseudonym map, and generalised quasi-identifiers can still single
out people in small groups. Treat it as personal data.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from fedcrm.data.contract import TABLES, IdentifierClass
from fedcrm.data.store import StoreData
from fedcrm.errors import DeidentificationError, PrivacyWarning
from fedcrm.privacy import pseudonyms as ps
from fedcrm.privacy.generalisation import get_generaliser
from fedcrm.privacy.keys import StoreKeys
from fedcrm.privacy.policy import RELEASED_TABLES, Action, ColumnRule, DeidentificationPolicy

__all__ = [
    "RELEASED_TABLES",
    "Action",
    "ColumnReport",
    "ColumnRule",
    "DeidentificationPolicy",
    "DeidentificationReport",
    "DeidentifiedStore",
    "deidentify",
    "deidentify_with_map",
]

_A, _I = Action, IdentifierClass


@dataclass(frozen=True)
class ColumnReport:
    """What the policy did to one input column. Counts only, never values."""

    table: str
    column: str
    action: str
    generaliser: str | None
    output: str | None
    rows: int
    rows_affected: int  # present values dropped, pseudonymised or generalised (0 for keep)
    rows_unmapped: int = 0  # present values a generaliser could not place (missing/fallback)


@dataclass(frozen=True)
class DeidentificationReport:
    """The per-column statement of a de-identification run; counts and key fingerprints only."""

    store_id: str
    policy_name: str
    policy_digest: str
    reference_time: str
    columns: tuple[ColumnReport, ...]
    pseudonyms: ps.PseudonymStats | None
    pseudonym_key_id: str
    linkage_key_id: str | None
    output_rows: tuple[tuple[str, int], ...]
    tables_not_released: tuple[str, ...] = ("consents",)
    classification: str = "de-identified personal information (not anonymised; PIPL Art. 73)"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeidentifiedStore:
    """A store's tables after de-identification. No pseudonym map: that stays in the store."""

    store_id: str
    customers: pd.DataFrame = field(repr=False)
    transactions: pd.DataFrame = field(repr=False)
    interactions: pd.DataFrame = field(repr=False)
    report: DeidentificationReport = field(repr=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {t: getattr(self, t) for t in RELEASED_TABLES}

    def __repr__(self) -> str:  # counts only
        rows = ", ".join(f"{t}={len(f)}" for t, f in self.tables().items())
        return f"DeidentifiedStore(store_id={self.store_id!r}, {rows})"


def _check_coverage(store: StoreData, policy: DeidentificationPolicy) -> None:
    missing = policy.missing_contract_columns()
    if missing:
        raise DeidentificationError(
            f"policy {policy.name!r} does not cover {', '.join(missing)}; "
            "add a rule for each (drop if unsure)"
        )
    uncovered = []
    for table in RELEASED_TABLES:
        frame = getattr(store, table)
        if frame.columns.duplicated().any():
            raise DeidentificationError(f"{table}: a column name appears twice")
        names = [
            c for c in frame.columns if not isinstance(c, str) or not policy.rule_for(table, c)
        ]
        uncovered += [f"{table}.{c}" for c in names]
    if uncovered:
        raise DeidentificationError(
            f"columns not covered by policy {policy.name!r}: {', '.join(uncovered)}; "
            "refusing to release them. Add a rule for each (drop if unsure)"
        )


def _apply(
    table: str,
    frame: pd.DataFrame,
    policy: DeidentificationPolicy,
    keys: StoreKeys,
    pmap: ps.PseudonymMap,
    ref: pd.Timestamp,
) -> tuple[pd.DataFrame, list[ColumnReport]]:
    src = frame.reset_index(drop=True)
    outputs: dict[str, pd.Series] = {}
    reports = []
    for rule in policy.rules_for(table):
        if rule.column not in src.columns:
            continue
        values = src[rule.column]
        present, unmapped, out = int(values.notna().sum()), 0, values
        if rule.action is _A.KEEP:
            present = 0
        elif rule.action is _A.PSEUDONYMISE and rule.column == TABLES[table].customer_column:
            out = pmap.pseudonym_of(values)
        elif rule.action is _A.PSEUDONYMISE:
            out = ps.pseudonymise_column(values, keys.pseudonym_key, f"{table}.{rule.column}")
        elif rule.action is _A.GENERALISE:
            gen = get_generaliser(str(rule.generaliser))
            out = gen(values, ref)
            unmapped = gen.unmapped(values, out)
        info = (rule.action.value, rule.generaliser, rule.output, len(src), present, unmapped)
        reports.append(ColumnReport(table, rule.column, *info))
        if rule.output is not None:  # first rule wins; later rules fill its missing values
            out = out.reset_index(drop=True)
            prior = outputs.get(rule.output)
            outputs[rule.output] = out if prior is None else prior.where(prior.notna(), out)
    return pd.DataFrame(outputs, index=pd.RangeIndex(len(src))), reports


def deidentify_with_map(
    store: StoreData,
    policy: DeidentificationPolicy | None,
    keys: StoreKeys,
    reference_time: datetime | pd.Timestamp,
) -> tuple[DeidentifiedStore, ps.PseudonymMap]:
    """:func:`deidentify`, plus the pseudonym map that the caller persists inside the store."""
    policy = policy or DeidentificationPolicy.default()
    ref = pd.Timestamp(reference_time)
    if ref is pd.NaT or ref.tzinfo is not None:
        raise DeidentificationError("reference_time must be a naive store-local time")
    _check_coverage(store, policy)
    if "customer_id" not in store.customers.columns:
        raise DeidentificationError("customers: no customer_id column")
    if keys.linkage_key is not None:
        warnings.warn(
            "federation linkage is on: pseudonyms of customers with a mobile or e-mail are equal "
            "across stores and re-identifiable by any holder of the linkage key",
            PrivacyWarning,
            stacklevel=3,
        )
    kept_quasi = [
        f"{r.table}.{r.column}"
        for r in policy.rules
        if r.action is _A.KEEP
        and r.column in getattr(store, r.table).columns
        and r.column in TABLES[r.table].column_names
        and TABLES[r.table].column(r.column).identifier is _I.QUASI
    ]
    if kept_quasi:
        warnings.warn(
            f"policy {policy.name!r} keeps quasi-identifiers as they are: {', '.join(kept_quasi)}",
            PrivacyWarning,
            stacklevel=3,
        )
    others = [
        f["customer_id"] for f in (store.transactions, store.interactions) if "customer_id" in f
    ]
    pmap = ps.assign_pseudonyms(store.customers, keys, pd.concat(others) if others else None)
    frames: dict[str, pd.DataFrame] = {}
    columns: list[ColumnReport] = []
    for table in RELEASED_TABLES:
        frames[table], reports = _apply(table, getattr(store, table), policy, keys, pmap, ref)
        columns.extend(reports)
    report = DeidentificationReport(
        store_id=store.store_id,
        policy_name=policy.name,
        policy_digest=policy.digest(),
        reference_time=ref.isoformat(),
        columns=tuple(columns),
        pseudonyms=pmap.stats,
        pseudonym_key_id=keys.pseudonym_key_id,
        linkage_key_id=keys.linkage_key_id,
        output_rows=tuple((t, len(f)) for t, f in frames.items()),
    )
    return DeidentifiedStore(store.store_id, report=report, **frames), pmap


def deidentify(
    store: StoreData,
    policy: DeidentificationPolicy | None,
    keys: StoreKeys,
    reference_time: datetime | pd.Timestamp,
) -> DeidentifiedStore:
    """Apply ``policy`` (None: the default) to the store's released tables, fail-closed.

    ``reference_time`` (naive, store-local) is when ages are computed. Raises
    :class:`DeidentificationError` for uncovered columns or an incomplete policy. The pseudonym
    map is not returned: :func:`deidentify_with_map` returns it for the caller to persist.
    """
    return deidentify_with_map(store, policy, keys, reference_time)[0]
