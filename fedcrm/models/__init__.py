"""Features, labels and (later) the churn and preference models.

- :func:`build_features` → :class:`FeatureSnapshot` (rows before the cutoff only), in the
  column order of a shared :class:`FeatureSpec`;
- :func:`build_labels` → :class:`Labels` (rows in ``[T, T + H)`` only);
- :class:`CategoryVocabulary` and :class:`SparseRows` for the preference model;
- lifecycle stage and RFM rules in :mod:`fedcrm.models.lifecycle`.
"""

from fedcrm.models.features import (
    build_features,
    build_store_features,
    purchase_history,
)
from fedcrm.models.labels import Labels, build_labels
from fedcrm.models.lifecycle import LifecycleConfig, RfmConfig
from fedcrm.models.snapshot import FeatureSnapshot, FeatureSpec, StoreFrames, population
from fedcrm.models.vocabulary import CategoryVocabulary, SparseRows

__all__ = [
    "CategoryVocabulary",
    "FeatureSnapshot",
    "FeatureSpec",
    "Labels",
    "LifecycleConfig",
    "RfmConfig",
    "SparseRows",
    "StoreFrames",
    "build_features",
    "build_labels",
    "build_store_features",
    "population",
    "purchase_history",
]
