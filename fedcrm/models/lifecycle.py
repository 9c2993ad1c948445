"""Lifecycle stage and RFM rules: pure, vectorised functions of per-customer arrays.

Lifecycle stages are absolute (the same thresholds at every store). RFM scores are
quintiles *within one store's population* at one cutoff: store-relative by design, fine for
local targeting, not comparable across stores. ``docs/features.md`` states both rule sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.errors import ConfigError

__all__ = [
    "LIFECYCLE_STAGES",
    "RFM_SEGMENTS",
    "SEGMENT_RULES",
    "VALUE_TIERS",
    "LifecycleConfig",
    "RfmConfig",
    "customer_profile",
    "lifecycle_stage",
    "quintile_scores",
    "rfm_scores",
    "rfm_segment",
    "value_tier",
]

LIFECYCLE_STAGES: tuple[str, ...] = ("new", "growing", "mature", "declining", "dormant")
VALUE_TIERS: tuple[str, ...] = ("high", "medium", "low")

#: RFM segments by (R range, F range), inclusive; together they cover the 5x5 grid once.
SEGMENT_RULES: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("champions", (5, 5), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyalist", (3, 5), (2, 3)),
    ("new_customer", (3, 5), (1, 1)),
    ("cant_lose", (1, 2), (5, 5)),
    ("at_risk", (1, 2), (3, 4)),
    ("hibernating", (2, 2), (1, 2)),
    ("lost", (1, 1), (1, 2)),
)
RFM_SEGMENTS: tuple[str, ...] = tuple(name for name, _, _ in SEGMENT_RULES)


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:  # also rejects NaN
            raise ConfigError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class LifecycleConfig:
    """Thresholds of the lifecycle rules (days and ratios); see :func:`lifecycle_stage`."""

    dormant_days: float = 180.0
    new_days: float = 90.0
    recent_days: float = 90.0
    declining_recency_days: float = 90.0
    declining_ratio: float = 0.5
    growing_ratio: float = 1.5
    growing_min_visits: int = 2
    min_history_days: float = 90.0

    def __post_init__(self) -> None:
        _positive(
            dormant_days=self.dormant_days,
            new_days=self.new_days,
            recent_days=self.recent_days,
            declining_recency_days=self.declining_recency_days,
            declining_ratio=self.declining_ratio,
            growing_ratio=self.growing_ratio,
            min_history_days=self.min_history_days,
        )
        if self.declining_ratio >= self.growing_ratio:
            raise ConfigError(
                f"declining_ratio ({self.declining_ratio}) must be below growing_ratio "
                f"({self.growing_ratio})"
            )
        if self.declining_recency_days > self.dormant_days:
            raise ConfigError("declining_recency_days must not exceed dormant_days")
        if self.growing_min_visits < 1:
            raise ConfigError(f"growing_min_visits must be >= 1, got {self.growing_min_visits}")


@dataclass(frozen=True)
class RfmConfig:
    """Value tier cut-offs on the summed R+F+M score (3..15)."""

    high_min: int = 12
    medium_min: int = 8

    def __post_init__(self) -> None:
        if not 3 < self.medium_min < self.high_min <= 15:
            raise ConfigError(
                f"need 3 < medium_min < high_min <= 15, got medium_min={self.medium_min}, "
                f"high_min={self.high_min}"
            )


def lifecycle_stage(
    recency_days: np.ndarray,
    tenure_days: np.ndarray,
    visits_recent: np.ndarray,
    visits_earlier: np.ndarray,
    config: LifecycleConfig | None = None,
) -> np.ndarray:
    """The lifecycle stage of each customer; the first matching rule wins.

    ``visits_recent`` counts visits in the last ``recent_days`` before the cutoff,
    ``visits_earlier`` the visits before that. The customer's own expected visits in a
    recent window are ``visits_earlier * recent_days / max(tenure_days - recent_days,
    min_history_days)``.

    1. dormant   — recency ≥ ``dormant_days``;
    2. new       — first purchase less than ``new_days`` before the cutoff;
    3. declining — recency ≥ ``declining_recency_days`` or recent < ``declining_ratio`` × expected;
    4. growing   — recent ≥ ``growing_ratio`` × expected and recent ≥ ``growing_min_visits``;
    5. mature    — everything else.
    """
    cfg = config or LifecycleConfig()
    recency = np.asarray(recency_days, dtype=np.float64)
    tenure = np.asarray(tenure_days, dtype=np.float64)
    recent = np.asarray(visits_recent, dtype=np.float64)
    span = np.maximum(tenure - cfg.recent_days, cfg.min_history_days)
    expected = np.asarray(visits_earlier, dtype=np.float64) * cfg.recent_days / span
    conditions = [
        recency >= cfg.dormant_days,
        tenure < cfg.new_days,
        (recency >= cfg.declining_recency_days) | (recent < cfg.declining_ratio * expected),
        (recent >= cfg.growing_ratio * expected) & (recent >= cfg.growing_min_visits),
    ]
    choices = ["dormant", "new", "declining", "growing"]
    return np.select(conditions, choices, default="mature").astype(object)


def quintile_scores(values: np.ndarray) -> np.ndarray:
    """Scores 1..5 by rank within ``values`` (higher value, higher score).

    ``score = 1 + 5 * (rank - 1) // n`` with 1-based ``min`` ranks: tied values share the
    lower score, so e.g. all one-visit customers get F = 1.
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_v[1:] != sorted_v[:-1]
    min_rank_sorted = np.maximum.accumulate(np.where(first, np.arange(1, n + 1), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = min_rank_sorted
    return (1 + (5 * (ranks - 1)) // n).astype(np.int8)


def rfm_scores(
    recency_days: np.ndarray, visits: np.ndarray, spend: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R, F, M quintile scores (1..5) within the given population; recent means high R."""
    r = quintile_scores(-np.asarray(recency_days, dtype=np.float64))
    return r, quintile_scores(visits), quintile_scores(spend)


def value_tier(
    r: np.ndarray, f: np.ndarray, m: np.ndarray, config: RfmConfig | None = None
) -> np.ndarray:
    """``high`` if R+F+M ≥ ``high_min``, ``medium`` if ≥ ``medium_min``, else ``low``."""
    cfg = config or RfmConfig()
    total = np.asarray(r, dtype=np.int64) + np.asarray(f) + np.asarray(m)
    tiers = np.select([total >= cfg.high_min, total >= cfg.medium_min], ["high", "medium"], "low")
    return tiers.astype(object)


def rfm_segment(r: np.ndarray, f: np.ndarray) -> np.ndarray:
    """The named segment of each (R, F) pair by :data:`SEGMENT_RULES`."""
    r = np.asarray(r)
    f = np.asarray(f)
    if len(r) and (r.min() < 1 or r.max() > 5 or f.min() < 1 or f.max() > 5):
        raise ValueError("R and F scores must lie in 1..5")
    conditions = [
        (r >= r_lo) & (r <= r_hi) & (f >= f_lo) & (f <= f_hi)
        for _, (r_lo, r_hi), (f_lo, f_hi) in SEGMENT_RULES
    ]
    return np.select(conditions, list(RFM_SEGMENTS), default="").astype(object)


def customer_profile(
    recency_days: np.ndarray,
    tenure_days: np.ndarray,
    visits_recent: np.ndarray,
    visits: np.ndarray,
    spend: np.ndarray,
    lifecycle: LifecycleConfig | None = None,
    rfm: RfmConfig | None = None,
    *,
    index: pd.Index | None = None,
) -> pd.DataFrame:
    """Lifecycle stage, value tier, RFM segment and R/F/M scores of a store population."""
    r, f, m = rfm_scores(recency_days, visits, spend)
    stage = lifecycle_stage(
        recency_days, tenure_days, visits_recent, np.asarray(visits) - visits_recent, lifecycle
    )
    return pd.DataFrame(
        {
            "lifecycle_stage": pd.array(stage, dtype="str"),
            "value_tier": pd.array(value_tier(r, f, m, rfm), dtype="str"),
            "rfm_segment": pd.array(rfm_segment(r, f), dtype="str"),
            "r_score": r,
            "f_score": f,
            "m_score": m,
        },
        index=index,
    )
