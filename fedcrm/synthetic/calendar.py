"""The Chinese retail calendar: festivals, shopping festivals and daily demand curves.

Demand on a day is ``weekday factor × festival lift``, scaled to a mean of one over the whole
calendar years the window touches (so a rate means the same thing whatever the window).
Promotion days carry a discount depth. Two *sensitivity classes* see different curves:
regular customers buy a little more on promotion days, discount-sensitive customers buy far
more then and a little less otherwise (they wait for the sale).

Event days are drawn by inverse CDF on a class's cumulative curve ``C`` (``C[0] = 0``,
``C[d + 1] - C[d]`` = intensity of day ``d``): a uniform ``u`` in ``[C[a], C[b])`` lands on
day ``searchsorted(C, u, 'right') - 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FESTIVALS",
    "SENSITIVITY_CLASSES",
    "SPRING_FESTIVAL",
    "Festival",
    "RetailCalendar",
    "build_calendar",
]

#: Lunar New Year's day (Spring Festival), the anchor of the biggest retail season.
SPRING_FESTIVAL: dict[int, str] = {
    1997: "1997-02-07", 1998: "1998-01-28", 1999: "1999-02-16", 2000: "2000-02-05",
    2001: "2001-01-24", 2002: "2002-02-12", 2003: "2003-02-01", 2004: "2004-01-22",
    2005: "2005-02-09", 2006: "2006-01-29", 2007: "2007-02-18", 2008: "2008-02-07",
    2009: "2009-01-26", 2010: "2010-02-14", 2011: "2011-02-03", 2012: "2012-01-23",
    2013: "2013-02-10", 2014: "2014-01-31", 2015: "2015-02-19", 2016: "2016-02-08",
    2017: "2017-01-28", 2018: "2018-02-16", 2019: "2019-02-05", 2020: "2020-01-25",
    2021: "2021-02-12", 2022: "2022-02-01", 2023: "2023-01-22", 2024: "2024-02-10",
    2025: "2025-01-29", 2026: "2026-02-17", 2027: "2027-02-06", 2028: "2028-01-26",
    2029: "2029-02-13", 2030: "2030-02-03", 2031: "2031-01-23", 2032: "2032-02-11",
    2033: "2033-01-31", 2034: "2034-02-19", 2035: "2035-02-08", 2036: "2036-01-28",
    2037: "2037-02-15", 2038: "2038-02-04", 2039: "2039-01-24", 2040: "2040-02-12",
}  # fmt: skip

_Day = np.datetime64
_DaySpan = Callable[[int], tuple[np.datetime64, np.datetime64]]


def _fixed(first: str, last: str) -> _DaySpan:
    return lambda y: (_Day(f"{y}-{first}"), _Day(f"{y}-{last}"))


def _around_spring(first: int, last: int) -> _DaySpan:
    return lambda y: (_Day(SPRING_FESTIVAL[y]) + first, _Day(SPRING_FESTIVAL[y]) + last)


@dataclass(frozen=True)
class Festival:
    """A yearly retail event: its days, demand lift and (for promotions) discount depth."""

    name: str
    days: _DaySpan  # year -> (first day, last day), inclusive
    lift: float  # demand multiplier for every customer
    depth: float = 0.0  # typical discount rate on its days; 0 = not a promotion
    featured: tuple[str, ...] = ()  # categories the event pushes (top-level or leaf)
    feature_share: float = 0.0  # share of lines switched to a featured category


#: Later entries win where two overlap.
FESTIVALS: tuple[Festival, ...] = (
    Festival("spring_festival_shopping", _around_spring(-20, -2), 1.4, 0.10,
             ("grocery/liquor", "grocery/snacks", "grocery/tea", "fresh/meat", "fresh/seafood",
              "apparel"), 0.25),
    Festival("spring_festival_holiday", _around_spring(-1, 6), 0.45),
    Festival("womens_day", _fixed("03-06", "03-08"), 1.15, 0.10, ("beauty",), 0.25),
    Festival("618", _fixed("06-01", "06-17"), 1.15, 0.12, ("electronics",), 0.10),
    Festival("618_peak", _fixed("06-18", "06-18"), 2.5, 0.20, ("electronics",), 0.15),
    Festival("golden_week", _fixed("10-01", "10-07"), 1.25),
    Festival("double_11_presale", _fixed("10-24", "11-10"), 1.10, 0.15, ("beauty",), 0.10),
    Festival("double_11", _fixed("11-11", "11-11"), 4.0, 0.25, ("beauty", "electronics"), 0.20),
    Festival("double_12", _fixed("12-10", "12-12"), 1.6, 0.12),
)  # fmt: skip

#: Weekday demand factors, Monday first.
_WEEKDAY = np.array([0.88, 0.88, 0.9, 0.92, 1.02, 1.3, 1.2])

#: Sensitivity class -> (factor on promotion days, factor on other days).
SENSITIVITY_CLASSES: dict[str, tuple[float, float]] = {
    "regular": (1.15, 1.0),
    "discount_sensitive": (3.0, 0.85),
}


@dataclass(frozen=True)
class RetailCalendar:
    """Daily arrays over the window ``[start, end)``; day ``d`` is ``start + d``."""

    start: np.datetime64  # datetime64[D]
    days: np.ndarray  # datetime64[D], one per day of the window
    event: np.ndarray  # int64 index into FESTIVALS, -1 on ordinary days
    depth: np.ndarray  # float64 discount depth, 0 on non-promotion days
    base: np.ndarray  # float64 demand factor, mean 1 over whole calendar years
    cumulative: dict[str, np.ndarray]  # class -> float64 C of length n_days + 1

    @property
    def n_days(self) -> int:
        return int(self.days.shape[0])

    @property
    def is_promo(self) -> np.ndarray:
        return self.depth > 0

    def intensity(self, cls: str) -> np.ndarray:
        """The daily demand curve of a sensitivity class."""
        return np.diff(self.cumulative[cls])

    def mass(self, cls: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Integrated demand over days ``[lo, hi)`` (0 where ``hi <= lo``)."""
        c = self.cumulative[cls]
        return np.where(hi > lo, c[np.maximum(hi, lo)] - c[lo], 0.0)

    def sample_days(
        self, cls: str, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One day per entry, drawn within ``[lo, hi)`` in proportion to the class's demand."""
        c = self.cumulative[cls]
        u = c[lo] + rng.random(lo.shape[0]) * (c[hi] - c[lo])
        day = np.searchsorted(c, u, side="right") - 1
        return np.clip(day, lo, hi - 1)


def build_calendar(first_day: str, end_day: str) -> RetailCalendar:
    """The calendar of the window ``[first_day, end_day)`` (ISO dates)."""
    start, end = np.datetime64(first_day, "D"), np.datetime64(end_day, "D")
    first_year = int(str(start)[:4])
    last_year = int(str(end - 1)[:4])
    year_start = np.datetime64(f"{first_year}-01-01")
    full = np.arange(year_start, np.datetime64(f"{last_year + 1}-01-01"))
    event = np.full(full.shape[0], -1, dtype=np.int64)
    lift = np.ones(full.shape[0])
    depth = np.zeros(full.shape[0])
    # Spring Festival seasons reach across New Year: look one year either side.
    for year in range(first_year - 1, last_year + 2):
        if year not in SPRING_FESTIVAL:
            continue
        for index, festival in enumerate(FESTIVALS):
            first, last = festival.days(year)
            lo = int((first - year_start).astype(np.int64))
            hi = int((last - year_start).astype(np.int64)) + 1
            lo, hi = max(lo, 0), min(hi, full.shape[0])
            if lo >= hi:
                continue
            event[lo:hi] = index
            lift[lo:hi] = festival.lift
            depth[lo:hi] = festival.depth
    weekday = (full.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    base = _WEEKDAY[weekday] * lift
    base = base / base.mean()
    window = slice(
        int((start - year_start).astype(np.int64)), int((end - year_start).astype(np.int64))
    )
    cumulative = {}
    for cls, (on_promo, off_promo) in SENSITIVITY_CLASSES.items():
        curve = base[window] * np.where(depth[window] > 0, on_promo, off_promo)
        cumulative[cls] = np.concatenate([[0.0], np.cumsum(curve)])
    return RetailCalendar(
        start=start,
        days=full[window],
        event=event[window],
        depth=depth[window],
        base=base[window],
        cumulative=cumulative,
    )
