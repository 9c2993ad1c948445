"""The store boundary in one call: consent filter for a purpose, then de-identification.

Nothing about a customer who has not consented to ``purpose`` as of ``as_of`` reaches the
de-identifier, so nothing about them can reach a model or a query. The pseudonym map returned
alongside is re-identifying and must stay in the store (persist it with
:func:`fedcrm.privacy.keys.write_pseudonym_map`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from fedcrm.data.store import StoreData
from fedcrm.privacy.consent import ConsentReport, filter_by_consent
from fedcrm.privacy.deidentification import (
    DeidentificationPolicy,
    DeidentifiedStore,
    deidentify_with_map,
)
from fedcrm.privacy.keys import StoreKeys
from fedcrm.privacy.pseudonyms import PseudonymMap

__all__ = ["BoundaryRelease", "release_for_purpose"]


@dataclass(frozen=True)
class BoundaryRelease:
    """What passes the boundary (``data``, ``consent``) and what stays (``pseudonym_map``)."""

    data: DeidentifiedStore
    consent: ConsentReport
    pseudonym_map: PseudonymMap = field(repr=False)


def release_for_purpose(
    store: StoreData,
    purpose: str,
    as_of: datetime | pd.Timestamp,
    keys: StoreKeys,
    *,
    policy: DeidentificationPolicy | None = None,
    reference_time: datetime | pd.Timestamp | None = None,
) -> BoundaryRelease:
    """Consented customers only (:func:`filter_by_consent`), de-identified by ``policy``.

    ``policy`` defaults to :meth:`DeidentificationPolicy.default`; ``reference_time`` (for age
    bands) defaults to ``as_of``.
    """
    decision = filter_by_consent(store, purpose, as_of)
    ref = decision.as_of if reference_time is None else reference_time
    data, pmap = deidentify_with_map(decision.data, policy, keys, ref)
    return BoundaryRelease(data=data, consent=decision.report, pseudonym_map=pmap)
