"""The store's privacy boundary: consent filtering and de-identification (DP follows).

- :func:`filter_by_consent` — who may be processed for a purpose, as of a time;
- :func:`deidentify` — a declared per-column policy (:class:`DeidentificationPolicy`: drop,
  keyed pseudonym, generalise, keep), fail-closed on any column it does not cover;
- :class:`StoreKeys` — custody of the store's pseudonym key and the optional linkage key;
- :func:`release_for_purpose` — both steps in one call.

The output is de-identified, not anonymised (PIPL Art. 73; GDPR recital 26): the store can
re-identify it with its key and pseudonym map. Weaker guarantees are announced at run time with
:class:`fedcrm.errors.PrivacyWarning`.
"""

from fedcrm.privacy.boundary import BoundaryRelease, release_for_purpose
from fedcrm.privacy.consent import ConsentDecision, ConsentReport, filter_by_consent
from fedcrm.privacy.deidentification import (
    DeidentificationReport,
    DeidentifiedStore,
    deidentify,
    deidentify_with_map,
)
from fedcrm.privacy.keys import StoreKeys, load_pseudonym_map, write_pseudonym_map
from fedcrm.privacy.policy import Action, ColumnRule, DeidentificationPolicy
from fedcrm.privacy.pseudonyms import PseudonymMap

__all__ = [
    "Action",
    "BoundaryRelease",
    "ColumnRule",
    "ConsentDecision",
    "ConsentReport",
    "DeidentificationPolicy",
    "DeidentificationReport",
    "DeidentifiedStore",
    "PseudonymMap",
    "StoreKeys",
    "deidentify",
    "deidentify_with_map",
    "filter_by_consent",
    "load_pseudonym_map",
    "release_for_purpose",
    "write_pseudonym_map",
]
