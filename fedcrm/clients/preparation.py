"""The store-side pipeline up to model-ready features: load, boundary, features, labels.

This is what a store agent runs before any training or query::

    store directory ──load+validate──▶ StoreData (raw, identifying)
        ──consent filter (purpose, processing time)──▶ consented customers only
        ──de-identification policy (fail closed)──▶ pseudonymised, generalised frames
        ──features before T, labels in [T, T+H)──▶ PreparedStore

Consent is evaluated at **processing time** (``consent_as_of``, default now), not at the
cutoff: a customer who withdrew after the cutoff but before this run is excluded too
(GDPR Art. 7(3), PIPL Art. 15). Pass ``consent_as_of`` explicitly to replay a past run.

The pseudonym map is written into the store's private directory for local scoring; everything
returned here is de-identified (still personal data under PIPL Art. 73) and stays in the store.
The reports carry counts only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.data.layout import StoreLayout
from fedcrm.data.store import StoreData, load_store
from fedcrm.errors import ConfigError
from fedcrm.models.features import build_store_features
from fedcrm.models.labels import Labels, build_labels
from fedcrm.models.snapshot import FeatureSnapshot, FeatureSpec
from fedcrm.models.vocabulary import CategoryVocabulary, SparseRows
from fedcrm.privacy.boundary import release_for_purpose
from fedcrm.privacy.consent import ConsentReport
from fedcrm.privacy.deidentification import DeidentificationPolicy, DeidentificationReport
from fedcrm.privacy.keys import StoreKeys, load_pseudonym_map, write_pseudonym_map
from fedcrm.privacy.pseudonyms import PseudonymMap

__all__ = ["PreparationRequest", "PreparedStore", "prepare_store", "store_data_end"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparationRequest:
    """What to prepare: for which purpose, at which cutoff and horizon."""

    cutoff: pd.Timestamp | None = None  # None: the latest with a full horizon of labels
    purpose: str = "model_training"
    horizon_days: int = 60
    consent_as_of: pd.Timestamp | None = None  # None: processing time (now)
    with_labels: bool = True
    policy_path: Path | None = None  # TOML de-identification policy; None: the default
    linkage_key_path: Path | None = None  # federation linkage key; off by default

    def __post_init__(self) -> None:
        if self.cutoff is not None:
            object.__setattr__(self, "cutoff", _timestamp(self.cutoff, "cutoff"))
        if self.consent_as_of is not None:
            object.__setattr__(
                self, "consent_as_of", _timestamp(self.consent_as_of, "consent_as_of")
            )
        if self.horizon_days < 1:
            raise ConfigError(f"horizon_days must be at least 1 (got {self.horizon_days})")


@dataclass(frozen=True)
class PreparedStore:
    """One store's model-ready view, and the statements of how it was made."""

    store_id: str
    consent: ConsentReport
    deidentification: DeidentificationReport
    features: FeatureSnapshot = field(repr=False)
    labels: Labels | None = field(repr=False)
    vocabulary: CategoryVocabulary = field(repr=False)
    data_end: pd.Timestamp
    history: SparseRows | None = field(default=None, repr=False)  # category line counts before T
    transactions: pd.DataFrame | None = field(default=None, repr=False)  # de-identified

    def with_vocabulary(self, vocabulary: CategoryVocabulary) -> PreparedStore:
        """The same preparation with labels and history over ``vocabulary`` (e.g. the
        federation's shared one), without loading or de-identifying the store again."""
        if self.transactions is None:
            raise ConfigError("this preparation kept no transactions to relabel")
        horizon = self.labels.horizon_days if self.labels is not None else None
        labels, history = _labels_and_history(
            self.features, self.transactions, vocabulary, horizon, self.data_end
        )
        return replace(self, labels=labels, history=history, vocabulary=vocabulary)

    def summary(self) -> dict[str, object]:
        """Counts and rates only; safe to print or log."""
        stages = pd.Series(self.features.lifecycle_stage).value_counts()
        tiers = pd.Series(self.features.value_tier).value_counts()
        out: dict[str, object] = {
            "store_id": self.store_id,
            "consent": self.consent.as_dict(),
            "features": {
                "customers": len(self.features.customer_ids),
                "columns": len(self.features.spec.feature_names),
                "cutoff": str(self.features.cutoff.date()),
            },
            "lifecycle_stages": {str(k): int(v) for k, v in stages.items()},
            "value_tiers": {str(k): int(v) for k, v in tiers.items()},
            "categories": len(self.vocabulary) - 1,
        }
        if self.labels is not None:
            out["labels"] = {
                "horizon_days": self.labels.horizon_days,
                "churn_rate": round(float(self.labels.churn.mean()), 4)
                if len(self.labels)
                else None,
            }
        return out


def prepare_store(
    root: Path,
    request: PreparationRequest,
    *,
    spec: FeatureSpec | None = None,
    vocabulary: CategoryVocabulary | None = None,
    store: StoreData | None = None,
) -> PreparedStore:
    """Run the store pipeline on the store directory ``root``.

    ``spec`` and ``vocabulary`` should be the federation's shared ones so that every store's
    columns mean the same; without them the store's own categories are used (fine for local
    use, not for federated models). ``store`` is the store's data when the caller has already
    loaded it from ``root``.
    """
    layout = StoreLayout(Path(root))
    if not layout.root.is_dir():
        raise ConfigError(f"{layout.root}: no such store directory")
    if store is None:
        store = load_store(layout.root)
    data_end = store_data_end(store.transactions, store.manifest)
    cutoff = request.cutoff
    if cutoff is None:
        cutoff = (data_end - pd.Timedelta(days=request.horizon_days)).normalize()
    as_of = request.consent_as_of if request.consent_as_of is not None else pd.Timestamp.now()
    if as_of < cutoff:
        raise ConfigError(
            f"consent is checked at {as_of:%Y-%m-%d}, before the cutoff {cutoff:%Y-%m-%d}: "
            "data up to the cutoff can only be processed at or after it"
        )
    keys = StoreKeys.load_or_create(layout, request.linkage_key_path)
    policy = (
        DeidentificationPolicy.from_toml(request.policy_path)
        if request.policy_path is not None
        else DeidentificationPolicy.default()
    )
    release = release_for_purpose(
        store, request.purpose, as_of, keys, policy=policy, reference_time=cutoff, layout=layout
    )
    _persist_pseudonym_map(layout, release.pseudonym_map)
    data = release.data
    if vocabulary is None:
        categories = data.transactions.get("category", pd.Series(dtype="str"))
        vocabulary = CategoryVocabulary.fit(categories[data.transactions["timestamp"] < cutoff])
    if spec is None:
        spec = FeatureSpec.from_vocabulary(vocabulary)
    features = build_store_features(data, cutoff, spec=spec)
    if len(features.customer_ids) == 0:
        raise ConfigError(
            f"{store.store_id}: no consented customer has a purchase before the cutoff "
            f"{cutoff:%Y-%m-%d} (data ends {data_end:%Y-%m-%d}); choose a later cutoff "
            "or a shorter horizon"
        )
    horizon = request.horizon_days if request.with_labels else None
    labels, history = _labels_and_history(
        features, data.transactions, vocabulary, horizon, data_end
    )
    logger.info(
        "prepared store %s: %d of %d customers consented to %s; %d feature rows",
        store.store_id,
        release.consent.included,
        release.consent.total_customers,
        request.purpose,
        len(features.customer_ids),
    )
    return PreparedStore(
        store_id=store.store_id,
        consent=release.consent,
        deidentification=data.report,
        features=features,
        labels=labels,
        vocabulary=vocabulary,
        data_end=data_end,
        history=history,
        transactions=data.transactions,
    )


def _labels_and_history(
    features: FeatureSnapshot,
    transactions: pd.DataFrame,
    vocabulary: CategoryVocabulary,
    horizon_days: int | None,
    data_end: pd.Timestamp,
) -> tuple[Labels | None, SparseRows]:
    """Labels in [T, T + H) (none without a horizon) and the category history before T."""
    labels = None
    if horizon_days is not None:
        labels = build_labels(
            features.customer_ids,
            transactions,
            features.cutoff,
            horizon_days,
            vocabulary=vocabulary,
            data_end=data_end,
        )
    n = len(features.customer_ids)
    history = SparseRows(  # a store without category data has an empty history
        np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), len(vocabulary)
    )
    if "category" in transactions.columns:
        from fedcrm.models.features import purchase_history

        history = purchase_history(features.customer_ids, transactions, features.cutoff, vocabulary)
    return labels, history


def _persist_pseudonym_map(layout: StoreLayout, new: PseudonymMap) -> None:
    """Add this run's pseudonyms to the store's map (a union: runs for other purposes, or
    other consent sets, keep their entries, so local scoring can always re-identify)."""
    frames = [new.frame]
    if layout.pseudonym_map_path.is_file():
        frames.insert(0, load_pseudonym_map(layout).frame)
    merged = pd.concat(frames, ignore_index=True).drop_duplicates("pseudonym", keep="last")
    write_pseudonym_map(layout, merged.reset_index(drop=True))


def store_data_end(transactions: pd.DataFrame, manifest: dict[str, object]) -> pd.Timestamp:
    """The end of the store's history: the manifest's declared end, or the last purchase.

    A generated store declares ``window.end`` (exclusive); an exporter may declare
    ``data_end``.
    """
    window = manifest.get("window")
    declared = manifest.get("data_end") or (window.get("end") if isinstance(window, dict) else None)
    if declared:
        try:
            return pd.Timestamp(str(declared))
        except (TypeError, ValueError):
            raise ConfigError(
                f"store.json: declared end of data is not a date: {declared!r}"
            ) from None
    if transactions.empty:
        raise ConfigError("the store has no transactions")
    return pd.Timestamp(transactions["timestamp"].max())


def _timestamp(value: object, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: not a date or time ({exc})") from exc
    if pd.isna(ts):
        raise ConfigError(f"{name}: a date or time is required")
    if ts.tzinfo is not None:
        raise ConfigError(f"{name}: give a store-local time without a time zone (got {value})")
    return ts
