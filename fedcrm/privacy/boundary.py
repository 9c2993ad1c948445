"""The store boundary in one call: erasure exclusion, consent filter for a purpose, then
de-identification.

Given the store's ``layout``, customers in the store's erasure register
(:mod:`fedcrm.privacy.erasure`) are dropped first, from every table, whatever their consent.

Nothing about a customer who has not consented to ``purpose`` as of ``as_of`` reaches the
de-identifier, so nothing about them can reach a model or a query. The pseudonym map returned
alongside is re-identifying and must stay in the store (persist it with
:func:`fedcrm.privacy.keys.write_pseudonym_map`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from fedcrm.data.layout import StoreLayout
from fedcrm.data.store import StoreData
from fedcrm.privacy.consent import ConsentReport, filter_by_consent
from fedcrm.privacy.deidentification import (
    DeidentificationPolicy,
    DeidentifiedStore,
    deidentify_with_map,
)
from fedcrm.privacy.erasure import exclude_erased
from fedcrm.privacy.keys import StoreKeys
from fedcrm.privacy.pseudonyms import PseudonymMap

__all__ = ["BoundaryRelease", "release_for_purpose"]


@dataclass(frozen=True)
class BoundaryRelease:
    """What passes the boundary (``data``, ``consent``) and what stays (``pseudonym_map``).

    ``erased_excluded`` counts the customers dropped by the erasure register before the consent
    filter (0 when no layout was given); ``consent`` counts only the customers left after it.
    """

    data: DeidentifiedStore
    consent: ConsentReport
    pseudonym_map: PseudonymMap = field(repr=False)
    erased_excluded: int = 0


def release_for_purpose(
    store: StoreData,
    purpose: str,
    as_of: datetime | pd.Timestamp,
    keys: StoreKeys,
    *,
    policy: DeidentificationPolicy | None = None,
    reference_time: datetime | pd.Timestamp | None = None,
    layout: StoreLayout | None = None,
) -> BoundaryRelease:
    """Consented customers only (:func:`filter_by_consent`), de-identified by ``policy``.

    With ``layout`` (the store's directory), erased customers are dropped first
    (:func:`~fedcrm.privacy.erasure.exclude_erased`; an unreadable register raises
    :class:`~fedcrm.errors.PrivacyError`). ``policy`` defaults to
    :meth:`DeidentificationPolicy.default`; ``reference_time`` (for age bands) defaults to
    ``as_of``.
    """
    erased = 0
    if layout is not None:
        store, erased = exclude_erased(store, layout, keys=keys)
    decision = filter_by_consent(store, purpose, as_of)
    ref = decision.as_of if reference_time is None else reference_time
    data, pmap = deidentify_with_map(decision.data, policy, keys, ref)
    return BoundaryRelease(
        data=data, consent=decision.report, pseudonym_map=pmap, erased_excluded=erased
    )
