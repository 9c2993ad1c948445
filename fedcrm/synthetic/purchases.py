"""Purchases of one store: visit times (BTYD with seasonality), baskets, prices, discounts.

Visit counts are Poisson with mean ``rate × ∫ demand`` over the member's active days
(the day after joining up to dropout, clipped to the window), and the days are drawn by
inverse CDF on the demand curve of the member's sensitivity class; thinning by
:func:`.lifecycle.activity` adds the ramp-up and the pre-dropout decline. Many members
also buy on the day they join, right after signing up.

A visit is a basket of lines: the first line's category comes from the member's own
weights (persona stage × store format × personal taste), later lines mostly follow the
co-purchase matrix. Festival days swap some lines to featured categories. Every line on a
promotion day carries a discount; elsewhere a few carry a coupon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.data.contract import KNOWN_CHANNELS
from fedcrm.synthetic.calendar import FESTIVALS, RetailCalendar
from fedcrm.synthetic.catalog import Catalog
from fedcrm.synthetic.formats import StoreFormat
from fedcrm.synthetic.lifecycle import Lifecycles, activity
from fedcrm.synthetic.personas import MAX_STAGES, PERSONAS, stage_bounds, stage_weights
from fedcrm.synthetic.sampling import RowSampler

__all__ = ["CHANNEL_HOURS", "Purchases", "channel_weights", "draw_purchases"]

FIRST_VISIT_SHARE = 0.6  # members who buy on the day they join
CO_PURCHASE_SHARE = 0.6  # later basket lines drawn from the co-purchase matrix
TASTE_SIGMA = 0.6  # log-sd of a member's personal category taste
CHANNEL_CONCENTRATION = 5.0  # Gamma shape of personal channel preferences
MAX_LINES = 15
PROMO_EXTRA_LINES = 0.8  # extra lines per basket of a discount-sensitive member on promo days
PROMO_UNITS = 1.8  # unit multiplier for them on promo days
COUPON_SHARE = {False: 0.03, True: 0.10}  # lines with a coupon on other days

_P = {"pos": [0] * 9 + [2, 4, 6, 6, 5, 4, 4, 5, 7, 8, 8, 6, 3, 1, 0],
      "app": [0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.5, 1.5, 2.5, 3, 3, 3, 4.5, 3.5, 3, 3, 3, 3.5, 4, 5,
              6, 6.5, 5, 2.5],
      "live_stream": [3, 1.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.8, 1, 1.5, 1.2, 1, 1, 1,
                      1.2, 1.5, 3, 8, 10, 8, 5]}  # fmt: skip
#: Weights of the hour of day of a purchase, per channel.
CHANNEL_HOURS: dict[str, np.ndarray] = {
    channel: np.array(_P.get(channel, _P["app"]), dtype=np.float64) for channel in KNOWN_CHANNELS
}


@dataclass(frozen=True)
class Purchases:
    """One entry per transaction line, in time order."""

    customer: np.ndarray  # member index
    seconds: np.ndarray  # int64 seconds since the window start
    category: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    discount: np.ndarray
    amount: np.ndarray
    channel: np.ndarray  # index into KNOWN_CHANNELS


def channel_weights(
    members: pd.DataFrame, fmt: StoreFormat, rng: np.random.Generator
) -> np.ndarray:
    """Each member's channel preferences: format mix × persona tilt × personal noise."""
    mix = np.array([fmt.channel_mix.get(c, 0.0) for c in KNOWN_CHANNELS])
    tilt = np.array(
        [[p.channel_tilt.get(c, 1.0) for c in KNOWN_CHANNELS] for p in PERSONAS.values()]
    )
    noise = rng.gamma(CHANNEL_CONCENTRATION, 1.0, size=(len(members), len(KNOWN_CHANNELS)))
    return mix[None, :] * tilt[members["persona_index"].to_numpy()] * noise


def _category_sampler(
    members: pd.DataFrame, fmt: StoreFormat, catalog: Catalog, rng: np.random.Generator
) -> RowSampler:
    """Rows ``member * MAX_STAGES + stage`` of category weights."""
    tilt = _tilt_vector(fmt, catalog)
    per_persona = np.stack([stage_weights(p, catalog) for p in PERSONAS.values()])
    taste = np.exp(TASTE_SIGMA * rng.standard_normal((len(members), catalog.size)))
    weights = per_persona[members["persona_index"].to_numpy()] * (tilt * taste)[:, None, :]
    return RowSampler(weights.reshape(-1, catalog.size))


def _visits(
    life: Lifecycles, sensitive: np.ndarray, calendar: RetailCalendar, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Member, day and (for sign-up visits) exact time of every visit."""
    n_days = calendar.n_days
    lo = np.clip(np.floor(life.join) + 1, 0, n_days).astype(np.int64)
    hi = np.clip(np.floor(life.dropout), 0, n_days).astype(np.int64)
    hi = np.maximum(hi, lo)
    members, days = [], []
    for cls, mask in (("regular", ~sensitive), ("discount_sensitive", sensitive)):
        idx = np.flatnonzero(mask)
        counts = rng.poisson(life.rate[idx] * calendar.mass(cls, lo[idx], hi[idx]))
        member = np.repeat(idx, counts)
        day = calendar.sample_days(cls, lo[member], hi[member], rng)
        t = day + 0.5
        keep = rng.random(member.shape[0]) < activity(
            t - life.join[member], life.dropout[member] - t
        )
        members.append(member[keep])
        days.append(day[keep])
    signup = (
        (life.join >= 0)
        & (life.dropout > life.join)
        & (rng.random(life.join.shape[0]) < FIRST_VISIT_SHARE)
    )
    first = np.flatnonzero(signup)
    first_time = life.join[first] + (2.0 + 38.0 * rng.random(first.shape[0])) / 1440.0
    exact = np.concatenate([np.full(sum(m.shape[0] for m in members), np.nan), first_time])
    members.append(first)
    days.append(np.floor(first_time).astype(np.int64))
    return np.concatenate(members), np.concatenate(days), exact


def draw_purchases(
    members: pd.DataFrame,
    life: Lifecycles,
    fmt: StoreFormat,
    calendar: RetailCalendar,
    catalog: Catalog,
    rng: np.random.Generator,
) -> Purchases:
    """Draw every transaction line of one store."""
    sensitive = members["discount_sensitive"].to_numpy()
    persona = members["persona_index"].to_numpy()
    member, day, exact = _visits(life, sensitive, calendar, rng)

    channel = RowSampler(channel_weights(members, fmt, rng)).sample(member, rng)
    second_of_day = np.zeros(member.shape[0], dtype=np.int64)
    for code, name in enumerate(KNOWN_CHANNELS):
        at = np.flatnonzero(channel == code)
        hours = CHANNEL_HOURS[name]
        second_of_day[at] = rng.choice(24, size=at.shape[0], p=hours / hours.sum()) * 3600
    second_of_day += rng.integers(0, 3600, size=member.shape[0])
    seconds = np.where(
        np.isnan(exact), day * 86400 + second_of_day, np.round(np.nan_to_num(exact) * 86400)
    )
    seconds = seconds.astype(np.int64)
    order = np.lexsort((member, seconds))
    member, day, channel, seconds = member[order], day[order], channel[order], seconds[order]

    promo = calendar.depth[day] > 0
    boosted = promo & sensitive[member]
    mean_lines = (
        np.array([p.basket_lines for p in PERSONAS.values()])[persona[member]] * fmt.basket_factor
    )
    lines = (
        1
        + rng.poisson(np.maximum(mean_lines - 1.0, 0.1))
        + rng.poisson(PROMO_EXTRA_LINES * boosted)
    )
    lines = np.minimum(lines, MAX_LINES)
    visit = np.repeat(np.arange(member.shape[0]), lines)
    position = np.arange(visit.shape[0]) - np.repeat(np.cumsum(lines) - lines, lines)
    cust, day_l = member[visit], day[visit]
    t = seconds[visit] / 86400.0

    bounds = np.stack([stage_bounds(p) for p in PERSONAS.values()])[persona[cust]]
    stage = ((t - life.anchor[cust])[:, None] >= bounds).sum(axis=1)
    own = _category_sampler(members, fmt, catalog, rng).sample(cust * MAX_STAGES + stage, rng)
    tilted = catalog.co_purchase * _tilt_vector(fmt, catalog)[None, :]
    co = RowSampler(tilted).sample(own[np.repeat(np.cumsum(lines) - lines, lines)], rng)
    follow = (position > 0) & (rng.random(visit.shape[0]) < CO_PURCHASE_SHARE)
    category = np.where(follow, co, own)
    for index, festival in enumerate(FESTIVALS):
        if not festival.featured:
            continue
        featured = np.flatnonzero(np.any([catalog.mask(p) for p in festival.featured], axis=0))
        swap = (calendar.event[day_l] == index) & (
            rng.random(visit.shape[0]) < festival.feature_share
        )
        category[swap] = featured[rng.integers(0, featured.shape[0], size=int(swap.sum()))]

    price_level = np.array([p.price_level for p in PERSONAS.values()])[persona[cust]]
    counts = np.diff(catalog.product_offset)[category]
    sku = np.minimum(
        (counts * rng.random(visit.shape[0]) ** (1.6 / price_level)).astype(np.int64), counts - 1
    )
    product = catalog.product_offset[category] + sku
    price = np.floor(catalog.product_price[product] * fmt.price_factor) + 0.9
    line_boost = boosted[visit]
    quantity = 1 + rng.poisson(
        catalog.extra_units[category] * np.where(line_boost, PROMO_UNITS, 1.0)
    )
    depth = calendar.depth[day_l]
    coupon = rng.random(visit.shape[0]) < np.where(
        sensitive[cust], COUPON_SHARE[True], COUPON_SHARE[False]
    )
    rate = np.where(
        depth > 0,
        depth * (0.7 + 0.6 * rng.random(visit.shape[0])),
        np.where(coupon, 0.05 + 0.15 * rng.random(visit.shape[0]), 0.0),
    )
    gross = np.round(price * quantity, 2)
    discount = np.round(gross * rate, 2)
    return Purchases(
        customer=cust,
        seconds=seconds[visit],
        category=category,
        product=product,
        quantity=quantity.astype(np.int64),
        discount=discount,
        amount=np.round(gross - discount, 2),
        channel=channel[visit],
    )


def _tilt_vector(fmt: StoreFormat, catalog: Catalog) -> np.ndarray:
    tilt = np.ones(catalog.size)
    for prefix in sorted(fmt.category_tilt, key=lambda p: p.count("/")):
        tilt[catalog.mask(prefix)] *= fmt.category_tilt[prefix]
    return tilt
