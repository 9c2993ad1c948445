"""One store observed at one cutoff: which rows it may see, its schema and its features.

:func:`before_cutoff` is the only place that decides which rows feature code sees.

A :class:`FeatureSpec` fixes the feature names and their order. Every store of a federation
uses the same spec, so the same column means the same thing everywhere, even at a store
whose data lacks some channels, categories or optional columns (those columns are 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from fedcrm.data.contract import INTERACTION_KINDS, KNOWN_CHANNELS
from fedcrm.errors import ConfigError, DataError
from fedcrm.models.lifecycle import LIFECYCLE_STAGES, VALUE_TIERS
from fedcrm.models.vocabulary import (
    AGE_BANDS,
    GENDERS,
    MEMBER_TIERS,
    REGIONS,
    CategoryVocabulary,
    encode_attribute,
    normalize_category,
)

__all__ = [
    "TRANSACTION_COLUMNS",
    "FeatureSnapshot",
    "FeatureSpec",
    "StoreFrames",
    "as_cutoff",
    "attribute_one_hot",
    "before_cutoff",
    "check_event_table",
    "population",
    "require_columns",
    "timestamps_ns",
]

#: Transaction columns features and labels cannot do without.
TRANSACTION_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "amount")


class StoreFrames(Protocol):
    """Anything with de-identified ``customers``, ``transactions``, ``interactions`` frames."""

    @property
    def customers(self) -> pd.DataFrame: ...
    @property
    def transactions(self) -> pd.DataFrame: ...
    @property
    def interactions(self) -> pd.DataFrame | None: ...


# -- the cutoff discipline: one place decides which rows a snapshot at T may see ----------
def as_cutoff(value: Any) -> pd.Timestamp:
    """A naive :class:`pandas.Timestamp` (store-local time, like the data)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cutoff {value!r} is not a timestamp") from exc
    if ts is pd.NaT or ts.tzinfo is not None:
        raise ConfigError(f"cutoff must be a naive (store-local) timestamp, got {value!r}")
    return ts


def _check_datetime(series: pd.Series, table: str) -> None:
    if not pd.api.types.is_datetime64_dtype(series.dtype):  # False for tz-aware too
        raise DataError(f"{table}.{series.name} must be naive datetime64, got {series.dtype}")


def check_event_table(frame: pd.DataFrame, table: str) -> None:
    """``frame`` has ``customer_id`` and a naive datetime ``timestamp``."""
    require_columns(frame, ("customer_id", "timestamp"), table)
    _check_datetime(frame["timestamp"], table)


def timestamps_ns(series: pd.Series, table: str) -> np.ndarray:
    """A naive datetime column as int64 nanoseconds (any stored resolution)."""
    _check_datetime(series, table)
    return series.to_numpy(dtype="datetime64[ns]").view(np.int64)


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{table} lacks the required columns {missing}")


def before_cutoff(frame: pd.DataFrame, cutoff: pd.Timestamp, table: str) -> pd.DataFrame:
    """THE feature slice: rows with a customer and ``timestamp < cutoff`` (NaT excluded)."""
    check_event_table(frame, table)
    return frame.loc[(frame["timestamp"] < cutoff) & frame["customer_id"].notna()]


def population(transactions: pd.DataFrame, cutoff: Any) -> pd.Index:
    """Customers with at least one transaction before ``cutoff``, sorted."""
    require_columns(transactions, TRANSACTION_COLUMNS, "transactions")
    pre = before_cutoff(transactions, as_cutoff(cutoff), "transactions")
    return pd.Index(np.sort(pre["customer_id"].unique()), name="customer_id")


def attribute_one_hot(customers: pd.DataFrame, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """One-hot gender, age band, member tier and region; a missing column → fallback value."""
    out: dict[str, np.ndarray] = {}
    for col, vocab in (
        ("gender", spec.genders),
        ("age_band", spec.age_bands),
        ("member_tier", spec.member_tiers),
        ("region", spec.regions),
    ):
        if col in customers:
            idx = encode_attribute(customers[col], vocab, age=col == "age_band")
        else:
            idx = np.full(len(customers), len(vocab) - 1)
        out |= {f"{col}__{v}": (idx == i).astype(np.float64) for i, v in enumerate(vocab)}
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """Feature names in a fixed order, and the fixed vocabularies behind the one-hot groups.

    ``top_categories`` should be the federation's shared vocabulary parents
    (:meth:`from_vocabulary`); lines of any other top-level category count as ``other``.
    """

    top_categories: tuple[str, ...] = ()
    windows: tuple[int, ...] = (30, 90, 180)
    interaction_window_days: int = 90
    gap_ratio_cap: float = 10.0
    review_score_max: float = 5.0
    channels: tuple[str, ...] = KNOWN_CHANNELS
    genders: tuple[str, ...] = GENDERS
    age_bands: tuple[str, ...] = AGE_BANDS
    member_tiers: tuple[str, ...] = MEMBER_TIERS
    regions: tuple[str, ...] = REGIONS
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.windows or list(self.windows) != sorted(set(self.windows)):
            raise ConfigError(f"windows must be unique, increasing days, got {self.windows}")
        if min(self.windows) < 1 or self.interaction_window_days < 1:
            raise ConfigError("windows and interaction_window_days must be >= 1 day")
        if not (self.gap_ratio_cap > 0 and self.review_score_max > 0):
            raise ConfigError("gap_ratio_cap and review_score_max must be > 0")
        if "other" in self.top_categories or "other" in self.channels:
            raise ConfigError("'other' is reserved for the catch-all channel/category column")
        names = (*self.top_categories, *self.channels)
        odd = [c for c in names if normalize_category(c) != c or "/" in c]
        if odd:
            raise ConfigError(f"channels and top categories must be lower-case, one level: {odd}")
        for label, vocab in (
            ("genders", self.genders),
            ("age_bands", self.age_bands),
            ("member_tiers", self.member_tiers),
            ("regions", self.regions),
        ):
            if len(vocab) < 1 or len({v.casefold() for v in vocab}) != len(vocab):
                raise ConfigError(f"{label} must be non-empty and unique, got {vocab}")
        object.__setattr__(self, "_names", self._build_names())
        if len(set(self._names)) != len(self._names):
            raise ConfigError("feature names collide; check channel and category names")

    @classmethod
    def from_vocabulary(cls, vocabulary: CategoryVocabulary, **kwargs: Any) -> FeatureSpec:
        return cls(top_categories=vocabulary.parents, **kwargs)

    def _build_names(self) -> tuple[str, ...]:
        w = self.windows
        iw = self.interaction_window_days
        return (
            "recency_days_log1p",
            "tenure_days_log1p",
            "member_tenure_days_log1p",
            "has_joined_at",
            "visits_log1p",
            *[f"visits_{d}d_log1p" for d in w],
            "lines_per_visit_log1p",
            "spend_log1p",
            "spend_per_visit_log1p",
            *[f"spend_{d}d_log1p" for d in w],
            "gap_mean_days_log1p",
            "gap_std_days_log1p",
            "recency_gap_ratio_log1p",
            "single_visit",
            *[f"channel_share__{c}" for c in (*self.channels, "other")],
            "has_channel_data",
            *[f"category_share__{c}" for c in (*self.top_categories, "other")],
            "has_category_data",
            "discount_line_share",
            "discount_spend_share",
            "has_discount_data",
            *[f"interactions_{iw}d_log1p__{k}" for k in INTERACTION_KINDS],
            "complaints_log1p",
            "review_score_mean_scaled",
            "has_review_score",
            "has_interaction_data",
            *[f"lifecycle__{s}" for s in LIFECYCLE_STAGES],
            *[f"value_tier__{t}" for t in VALUE_TIERS],
            *[f"gender__{v}" for v in self.genders],
            *[f"age_band__{v}" for v in self.age_bands],
            *[f"member_tier__{v}" for v in self.member_tiers],
            *[f"region__{v}" for v in self.regions],
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_categories": list(self.top_categories),
            "windows": list(self.windows),
            "interaction_window_days": self.interaction_window_days,
            "gap_ratio_cap": self.gap_ratio_cap,
            "review_score_max": self.review_score_max,
            "channels": list(self.channels),
            "genders": list(self.genders),
            "age_bands": list(self.age_bands),
            "member_tiers": list(self.member_tiers),
            "regions": list(self.regions),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> FeatureSpec:
        known = set(cls().to_dict())
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ConfigError(f"unknown FeatureSpec keys {unknown}; valid keys: {sorted(known)}")
        args: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in payload.items()
        }
        return cls(**args)


@dataclass(frozen=True)
class FeatureSnapshot:
    """Features of one store's population at one cutoff.

    ``matrix`` (float32, read-only) has one row per entry of ``customer_ids`` and one column
    per ``spec.feature_names``. ``profile`` holds the human-readable ``lifecycle_stage``,
    ``value_tier``, ``rfm_segment`` and the R/F/M scores, indexed like ``matrix``, for local
    scoring; it is store-relative and never leaves the store.
    """

    cutoff: pd.Timestamp
    customer_ids: pd.Index
    matrix: np.ndarray
    spec: FeatureSpec
    profile: pd.DataFrame

    def __post_init__(self) -> None:
        n = len(self.customer_ids)
        if self.matrix.shape != (n, len(self.spec)) or self.matrix.dtype != np.float32:
            raise ValueError(f"matrix must be float32 of shape {(n, len(self.spec))}")
        if len(self.profile) != n:
            raise ValueError("profile must have one row per customer")
        self.matrix.flags.writeable = False

    def __len__(self) -> int:
        return len(self.customer_ids)

    def __repr__(self) -> str:  # never print rows: pseudonyms are still personal data
        return (
            f"FeatureSnapshot(cutoff={self.cutoff}, customers={len(self)}, "
            f"features={len(self.spec)})"
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.spec.feature_names

    @property
    def lifecycle_stage(self) -> pd.Series:
        return self.profile["lifecycle_stage"]

    @property
    def value_tier(self) -> pd.Series:
        return self.profile["value_tier"]

    @property
    def rfm_segment(self) -> pd.Series:
        return self.profile["rfm_segment"]

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a DataFrame (a copy), columns in spec order."""
        return pd.DataFrame(
            self.matrix.copy(), index=self.customer_ids, columns=list(self.feature_names)
        )

    def column(self, name: str) -> np.ndarray:
        """One feature column by name."""
        try:
            return self.matrix[:, self.feature_names.index(name)]
        except ValueError:
            raise KeyError(f"no feature {name!r}") from None
