"""Interactions of one store, tied to behaviour: views, carts, shares, reviews, complaints.

- **view / cart**: before purchases, far more on online channels than at the till; plus
  browsing without buying, spread over the active period;
- **share**: after purchases, mostly from live-stream shopping;
- **review** (score 1-5): after some purchases; scores follow the member's satisfaction
  and fall as dropout approaches;
- **complaint**: at a low base rate (higher when dissatisfied), and clustered in the three
  months before a dropout;
- **service** (score 1-5 when the survey was answered): customer-service contacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcrm.data.contract import INTERACTION_KINDS, KNOWN_CHANNELS
from fedcrm.synthetic.catalog import Catalog
from fedcrm.synthetic.lifecycle import DECLINE_DAYS, Lifecycles
from fedcrm.synthetic.purchases import Purchases
from fedcrm.synthetic.sampling import RowSampler

__all__ = ["Interactions", "draw_interactions"]

_ONLINE = np.array([c != "pos" for c in KNOWN_CHANNELS])
VIEWS_PER_LINE = (0.1, 1.2)  # (at the till, online)
CART_SHARE_ONLINE = 0.6
SHARE_RATE = np.array([0.12 if c == "live_stream" else 0.02 for c in KNOWN_CHANNELS])
REVIEW_RATE = (0.015, 0.06)
BROWSE_PER_YEAR = 6.0
COMPLAINTS_PER_YEAR = 0.12
COMPLAINTS_BEFORE_DROPOUT = 0.6  # mean number in the 90 days before a dropout
SERVICE_PER_YEAR = 0.3
SERVICE_SCORED = 0.6

_KIND = {k: i for i, k in enumerate(INTERACTION_KINDS)}


@dataclass(frozen=True)
class Interactions:
    customer: np.ndarray
    seconds: np.ndarray  # int64 seconds since the window start
    kind: np.ndarray  # index into INTERACTION_KINDS
    category: np.ndarray  # index into the catalog, -1 for none
    score: np.ndarray  # float64, NaN for none


class _Builder:
    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        customer: np.ndarray,
        days: np.ndarray,
        kind: str,
        category: np.ndarray | None = None,
        score: np.ndarray | None = None,
    ) -> None:
        n = customer.shape[0]
        self.parts.append((
            customer, days, np.full(n, _KIND[kind]),
            np.full(n, -1) if category is None else category,
            np.full(n, np.nan) if score is None else score,
        ))  # fmt: skip


def _score(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.round(base + rng.normal(0.0, 0.7, base.shape[0])), 1, 5)


def _uniform_events(
    rate_per_year: np.ndarray, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson events at uniform times in ``[lo, hi)`` per member: (member, day)."""
    span = np.maximum(hi - lo, 0.0)
    member = np.repeat(np.arange(lo.shape[0]), rng.poisson(rate_per_year * span / 365.0))
    return member, lo[member] + rng.random(member.shape[0]) * span[member]


def draw_interactions(
    life: Lifecycles, purchases: Purchases, catalog: Catalog, n_days: int, rng: np.random.Generator
) -> Interactions:
    """Draw one store's interactions, sorted by time."""
    n = life.join.shape[0]
    out = _Builder()
    p = purchases
    t = p.seconds / 86400.0
    online = _ONLINE[p.channel]

    views = rng.poisson(np.where(online, VIEWS_PER_LINE[1], VIEWS_PER_LINE[0]))
    line = np.repeat(np.arange(t.shape[0]), views)
    out.add(
        p.customer[line], t[line] - rng.exponential(1.0, line.shape[0]), "view", p.category[line]
    )
    line = np.flatnonzero(online & (rng.random(t.shape[0]) < CART_SHARE_ONLINE))
    out.add(
        p.customer[line],
        t[line] - rng.exponential(2.0 / 24, line.shape[0]),
        "cart",
        p.category[line],
    )
    line = np.flatnonzero(rng.random(t.shape[0]) < SHARE_RATE[p.channel])
    out.add(
        p.customer[line],
        t[line] + rng.exponential(1.0 / 24, line.shape[0]),
        "share",
        p.category[line],
    )

    line = np.flatnonzero(rng.random(t.shape[0]) < np.where(online, REVIEW_RATE[1], REVIEW_RATE[0]))
    when = t[line] + rng.exponential(3.0, line.shape[0])
    member = p.customer[line]
    near_dropout = np.exp(-np.maximum(life.dropout[member] - when, 0.0) / DECLINE_DAYS)
    base = 3.9 + 0.8 * life.satisfaction[member] - 1.5 * near_dropout
    out.add(member, when, "review", p.category[line], _score(base, rng))

    lo = np.maximum(life.join, 0.0)
    hi = np.minimum(life.dropout, float(n_days))
    lines_of = np.bincount(p.customer, minlength=n)
    first_line = np.cumsum(lines_of) - lines_of
    member, when = _uniform_events(BROWSE_PER_YEAR * (lines_of > 0), lo, hi, rng)
    seen = p.category[
        first_line[member] + (rng.random(member.shape[0]) * lines_of[member]).astype(np.int64)
    ]
    out.add(member, when, "view", RowSampler(catalog.co_purchase).sample(seen, rng))

    complaint_rate = COMPLAINTS_PER_YEAR * np.exp(-0.5 * life.satisfaction)
    out.add(*_uniform_events(complaint_rate, lo, hi, rng), "complaint")
    churned = life.dropout < n_days
    late_rate = np.where(churned, COMPLAINTS_BEFORE_DROPOUT * 365.0 / 90.0, 0.0)
    out.add(*_uniform_events(late_rate, np.maximum(lo, life.dropout - 90.0), hi, rng), "complaint")

    member, when = _uniform_events(np.full(n, SERVICE_PER_YEAR), lo, hi, rng)
    base = 4.0 + 0.7 * life.satisfaction[member]
    scored = rng.random(member.shape[0]) < SERVICE_SCORED
    out.add(member, when, "service", None, np.where(scored, _score(base, rng), np.nan))

    customer, days, kind, category, score = (
        np.concatenate(c) for c in zip(*out.parts, strict=True)
    )
    seconds = np.round(days * 86400).astype(np.int64)
    # Nothing before joining (or the window), nothing at or after its end.
    keep = (seconds >= np.ceil(lo[customer] * 86400)) & (seconds < n_days * 86400)
    order = np.lexsort((kind[keep], customer[keep], seconds[keep]))
    return Interactions(
        customer=customer[keep][order],
        seconds=seconds[keep][order],
        kind=kind[keep][order],
        category=category[keep][order],
        score=score[keep][order],
    )
