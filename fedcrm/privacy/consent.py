"""Consent filtering: which customers may be processed for a purpose, as of a time.

The consent ledger is append-only: each event says that a customer granted (``granted=True``) or
refused/withdrew (``False``) consent for one purpose at a time. For a purpose and a time
``as_of``, a customer's **deciding event** is their latest event for that purpose with
``timestamp <= as_of``; events after ``as_of`` are ignored (and counted). When several events
share the latest timestamp, **the later row in the ledger wins** (the ledger is append-only, so
row order is recording order). A withdrawal is just an event with ``granted=False``; a later
grant restores consent. Purposes are independent of one another.

Only customers whose deciding event is a grant are included. The others are excluded as
``no_record`` (no event as of ``as_of``), ``refused`` (deciding event is a refusal and no earlier
grant exists) or ``revoked`` (deciding event is a refusal after an earlier grant). Events of ids
that are not in the customers table are ignored and counted.

The decision's :class:`ConsentReport` holds counts only and may be exported; the included ids
and the restricted :class:`StoreData` stay inside the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pandas as pd

from fedcrm.data.contract import PURPOSES
from fedcrm.data.membership import text_isin
from fedcrm.data.store import StoreData
from fedcrm.errors import ConsentError

__all__ = ["ConsentDecision", "ConsentReport", "filter_by_consent", "restrict_to_customers"]

logger = logging.getLogger(__name__)

_LEDGER_COLUMNS = ("customer_id", "purpose", "granted", "timestamp")


@dataclass(frozen=True)
class ConsentReport:
    """Counts of a consent decision; never ids. ``included + excluded == total_customers``."""

    purpose: str
    as_of: str  # ISO 8601, store-local
    total_customers: int
    included: int
    excluded_no_record: int
    excluded_refused: int
    excluded_revoked: int
    events_considered: int  # events of known customers for the purpose, at or before as_of
    events_after_as_of: int  # events for the purpose ignored because they are later
    events_unknown_customer: int  # events for the purpose whose id is not a customer
    included_by_policy_version: tuple[tuple[str, int], ...] = ()

    @property
    def excluded(self) -> int:
        return self.excluded_no_record + self.excluded_refused + self.excluded_revoked

    def as_dict(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "as_of": self.as_of,
            "total_customers": self.total_customers,
            "included": self.included,
            "excluded": {
                "no_record": self.excluded_no_record,
                "refused": self.excluded_refused,
                "revoked": self.excluded_revoked,
            },
            "events_considered": self.events_considered,
            "events_after_as_of": self.events_after_as_of,
            "events_unknown_customer": self.events_unknown_customer,
            "included_by_policy_version": dict(self.included_by_policy_version),
        }


@dataclass(frozen=True)
class ConsentDecision:
    """Who may be processed for ``purpose`` as of ``as_of``. ``repr`` shows counts only."""

    purpose: str
    as_of: pd.Timestamp
    customer_ids: frozenset[str] = field(repr=False)
    data: StoreData = field(repr=False)
    report: ConsentReport

    def __repr__(self) -> str:
        r = self.report
        return (
            f"ConsentDecision(purpose={self.purpose!r}, as_of={r.as_of}, "
            f"included={r.included}/{r.total_customers})"
        )


def _as_of(value: datetime | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ConsentError("as_of is missing; pass the store-local time of the decision")
    if ts.tzinfo is not None:
        raise ConsentError(
            f"as_of {ts.isoformat()} has a time zone; ledger times are naive store-local times: "
            "convert to store-local time and drop the zone"
        )
    return ts


def _purpose_events(consents: pd.DataFrame, purpose: str) -> pd.DataFrame:
    missing = [c for c in _LEDGER_COLUMNS if c not in consents.columns]
    if missing:
        raise ConsentError(f"consent ledger lacks columns: {', '.join(missing)}")
    rows = consents["purpose"].to_numpy() == purpose
    cols = ["customer_id", "granted", "timestamp"]
    if "policy_version" in consents.columns:
        cols.append("policy_version")
    ev = consents.loc[rows, cols].reset_index(drop=True)  # keeps ledger order
    bad = int((ev["granted"].isna() | ev["timestamp"].isna() | ev["customer_id"].isna()).sum())
    if bad:
        raise ConsentError(
            f"consent ledger: {bad} '{purpose}' events lack a customer id, granted flag or "
            "timestamp; the ledger cannot decide: fix or remove them"
        )
    if not pd.api.types.is_datetime64_any_dtype(ev["timestamp"].dtype):
        raise ConsentError(
            "consent ledger: timestamps are not typed; load the store with load_store"
        )
    flags = ev["granted"]
    if not pd.api.types.is_bool_dtype(flags.dtype) and not flags.isin([True, False]).all():
        raise ConsentError(f"consent ledger: 'granted' of '{purpose}' events must be true/false")
    return ev


def restrict_to_customers(store: StoreData, customer_ids: pd.Index | frozenset[str]) -> StoreData:
    """``store`` with every table restricted to rows of ``customer_ids``."""
    ids = customer_ids if isinstance(customer_ids, pd.Index) else pd.Index(list(customer_ids))

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        if "customer_id" not in frame.columns:
            return frame.iloc[0:0]
        return frame.loc[text_isin(frame["customer_id"], ids)]

    return replace(
        store,
        customers=keep(store.customers),
        transactions=keep(store.transactions),
        interactions=keep(store.interactions),
        consents=keep(store.consents),
    )


def filter_by_consent(
    store: StoreData, purpose: str, as_of: datetime | pd.Timestamp
) -> ConsentDecision:
    """Decide who may be processed for ``purpose`` as of ``as_of`` (naive store-local time).

    Raises :class:`ConsentError` for an unknown purpose (listing the valid ones), a tz-aware
    ``as_of`` or a ledger that cannot decide (missing columns or values).
    """
    if purpose not in PURPOSES:
        raise ConsentError(f"unknown purpose {purpose!r}; valid purposes: {', '.join(PURPOSES)}")
    ts = _as_of(as_of)
    customers = pd.Index(store.customers["customer_id"].dropna().unique())
    ev = _purpose_events(store.consents, purpose)

    after = (ev["timestamp"] > ts).to_numpy()
    ev = ev.loc[~after]
    known = text_isin(ev["customer_id"], customers)
    unknown_events = int((~known).sum())
    ev = ev.loc[known]
    # Stable sort by time keeps ledger order among equal timestamps: the later row wins.
    ev = ev.sort_values("timestamp", kind="stable")
    granted = ev["granted"].astype(bool)
    last = ev.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    ever_granted = pd.Index(ev.loc[granted.to_numpy(), "customer_id"].unique())

    last_granted = last["granted"].astype(bool).to_numpy()
    included_ids = last.index[last_granted]
    refusals = last.index[~last_granted]
    revoked = int(text_isin(refusals, ever_granted).sum())
    refused = len(refusals) - revoked
    no_record = len(customers) - len(last)

    versions: tuple[tuple[str, int], ...] = ()
    if "policy_version" in last.columns:
        counts = last.loc[last_granted, "policy_version"].fillna("unknown").value_counts()
        versions = tuple(sorted((str(k), int(v)) for k, v in counts.items()))

    report = ConsentReport(
        purpose=purpose,
        as_of=ts.isoformat(),
        total_customers=len(customers),
        included=len(included_ids),
        excluded_no_record=no_record,
        excluded_refused=refused,
        excluded_revoked=revoked,
        events_considered=len(ev),
        events_after_as_of=int(np.count_nonzero(after)),
        events_unknown_customer=unknown_events,
        included_by_policy_version=versions,
    )
    logger.info(
        "consent %s as of %s: %d of %d customers included",
        purpose,
        report.as_of,
        report.included,
        report.total_customers,
    )
    return ConsentDecision(
        purpose=purpose,
        as_of=ts,
        customer_ids=frozenset(included_ids),
        data=restrict_to_customers(store, included_ids),
        report=report,
    )
