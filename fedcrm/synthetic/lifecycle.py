"""One membership's hidden life: joining, buying rate, satisfaction and dropout.

Times are float days since the window start (negative = before it). Buy-till-you-die:

- **joining**: a format-specific share joined up to three years before the window, the rest
  during it, more on busy days (sign-ups follow demand); never before the 18th birthday;
- **rate**: the person's Gamma-distributed visit rate, scaled by the store format, a
  membership-level lognormal factor, and split across the stores a person uses;
- **dropout**: an exponential lifetime whose rate is Gamma-distributed around the persona's
  mean lifetime, and higher for dissatisfied members;
- **lifecycle**: :func:`activity` thins visits to a ramp-up after joining and a decline in
  the weeks before dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.synthetic.calendar import RetailCalendar
from fedcrm.synthetic.formats import StoreFormat
from fedcrm.synthetic.personas import PERSONAS

__all__ = ["Lifecycles", "activity", "draw_lifecycles"]

PRE_WINDOW_YEARS = 3.0
RAMP_DAYS = 45.0  # ramp-up time constant after joining
RAMP_FLOOR = 0.5  # relative activity on the day of joining
DECLINE_DAYS = 60.0  # decline time constant before dropout
DECLINE_DEPTH = 0.7  # activity lost just before dropout
DROPOUT_SHAPE = 1.5  # Gamma shape of dropout rates
SATISFACTION_EFFECT = 0.35  # log-hazard change per sd of (dis)satisfaction
RATE_NOISE = 0.25  # log-sd of the membership-level rate factor
STORE_SPLIT = 0.3  # rate divided by n_stores ** STORE_SPLIT


@dataclass(frozen=True)
class Lifecycles:
    """Arrays with one entry per member of a store."""

    join: np.ndarray  # days since start; < 0 joined before the window
    rate: np.ndarray  # visits per day at full activity
    dropout_rate: np.ndarray  # per day
    dropout: np.ndarray  # days since start; may lie beyond the window
    satisfaction: np.ndarray  # standard normal, higher = happier
    anchor: np.ndarray  # days since start of the persona's sequence anchor


def draw_lifecycles(
    members: pd.DataFrame,
    fmt: StoreFormat,
    calendar: RetailCalendar,
    rng: np.random.Generator,
) -> Lifecycles:
    """Draw the hidden lifecycle of each member (rows of :meth:`Population.members_of`)."""
    n = len(members)
    personas = list(PERSONAS.values())
    persona = members["persona_index"].to_numpy()
    n_days = calendar.n_days

    before = rng.random(n) < fmt.pre_window_share
    in_window = calendar.sample_days("regular", np.zeros(n, np.int64), np.full(n, n_days), rng)
    hour = (9.0 + 13.0 * rng.random(n)) / 24.0
    join = np.where(before, -PRE_WINDOW_YEARS * 365.0 * rng.random(n), in_window + hour)
    birth = members["birth_date"].to_numpy().astype("datetime64[D]")
    adult = (birth - calendar.start).astype(np.int64) + 18 * 365.25
    join = np.where(join < adult, adult + 30.0 * rng.random(n) + hour, join)
    join = np.minimum(join, n_days - 1.0 - rng.random(n))

    satisfaction = rng.standard_normal(n)
    rate = (
        members["visits_per_year"].to_numpy()
        * fmt.visit_factor
        * np.exp(RATE_NOISE * rng.standard_normal(n) - RATE_NOISE**2 / 2)
        / members["n_stores"].to_numpy() ** STORE_SPLIT
        / 365.0
    )
    mean_life = np.array([p.lifetime_years for p in personas])[persona] * 365.0
    dropout_rate = rng.gamma(DROPOUT_SHAPE, 1.0 / (mean_life * DROPOUT_SHAPE)) * np.exp(
        -SATISFACTION_EFFECT * satisfaction
    )
    dropout = join + rng.exponential(1.0, n) / dropout_rate
    bounds = np.array([p.anchor_days for p in personas])[persona]
    anchor = join + bounds[:, 0] + rng.random(n) * (bounds[:, 1] - bounds[:, 0])
    return Lifecycles(join, rate, dropout_rate, dropout, satisfaction, anchor)


def activity(since_join: np.ndarray, until_dropout: np.ndarray) -> np.ndarray:
    """Relative activity in (0, 1] given days since joining and days left before dropout."""
    ramp = 1.0 - (1.0 - RAMP_FLOOR) * np.exp(-np.maximum(since_join, 0.0) / RAMP_DAYS)
    decline = 1.0 - DECLINE_DEPTH * np.exp(-np.maximum(until_dropout, 0.0) / DECLINE_DAYS)
    return ramp * decline
