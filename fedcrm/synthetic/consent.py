"""The consent ledger of one store: append-only grant, refusal and revocation events.

At joining, a member is asked about every purpose the privacy notice then in force covers
(``model_training`` only from notice 2023.1 on) and grants each with a purpose-specific
probability; refusals are recorded explicitly. Decisions are correlated through the
person's attitude to privacy. A few members are never asked at all.

Afterwards, per purpose: granted members revoke at a few percent a year, refusers and
revokers sometimes grant later, and every new privacy notice prompts members still active
when it takes effect to confirm or change their choices (a re-consent event carrying the
new version). All events happen at or after joining and before the window's end; joining
declarations of members who joined before the window lie before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from fedcrm.data.contract import PURPOSES
from fedcrm.synthetic.formats import StoreFormat
from fedcrm.synthetic.lifecycle import Lifecycles

__all__ = ["GRANT_RATES", "POLICIES", "ConsentEvents", "Policy", "draw_consents"]


@dataclass(frozen=True)
class Policy:
    version: str
    effective: str  # ISO date
    purposes: tuple[str, ...]


POLICIES: tuple[Policy, ...] = (
    Policy("2017.1", "1990-01-01", ("analytics", "marketing")),
    Policy("2021.2", "2021-11-01", ("analytics", "marketing")),  # PIPL takes effect
    Policy("2023.1", "2023-03-01", PURPOSES),  # asks about model training for the first time
    Policy("2024.1", "2024-09-01", PURPOSES),
    Policy("2025.1", "2025-06-01", PURPOSES),
)
GRANT_RATES = {"analytics": 0.90, "model_training": 0.80, "marketing": 0.60}  # at joining
REVOKE_PER_YEAR = {"analytics": 0.02, "model_training": 0.03, "marketing": 0.06}
REGRANT_PER_YEAR = {"analytics": 0.05, "model_training": 0.04, "marketing": 0.08}
KEEP_AT_PROMPT = 0.97  # granted members confirming at a new notice
GRANT_AT_PROMPT = 0.08  # refusers granting at a new notice
NEVER_ASKED = 0.02
ATTITUDE_WEIGHT = 0.6  # correlation of decisions with the person's privacy attitude
PROMPT_DELAY_DAYS = 20.0  # mean delay between a notice and the member seeing it
_STEPS = 2  # transitions simulated per period between notices

LATER_SOURCES = {True: ("app_privacy_center", "customer_service", "marketing_campaign"),
                 False: ("app_privacy_center", "customer_service", "unsubscribe_link")}  # fmt: skip
PROMPT_SOURCE = "policy_update_popup"


@dataclass(frozen=True)
class ConsentEvents:
    customer: np.ndarray
    days: np.ndarray  # float days since the window start
    purpose: np.ndarray  # object
    granted: np.ndarray  # bool
    source: np.ndarray  # object
    version: np.ndarray  # object


class _Ledger:
    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        who: np.ndarray,
        days: np.ndarray,
        purpose: str,
        granted: np.ndarray,
        source: np.ndarray,
    ) -> None:
        n = who.shape[0]
        self.parts.append((who, days, np.full(n, purpose, dtype=object), granted, source))


def _decide(attitude: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(attitude.shape[0])
    latent = ATTITUDE_WEIGHT * attitude + np.sqrt(1 - ATTITUDE_WEIGHT**2) * noise
    return latent < NormalDist().inv_cdf(rate)


def _transitions(
    ledger: _Ledger, purpose: str, state: np.ndarray, asked: np.ndarray, now: np.ndarray,
    until: np.ndarray, rng: np.random.Generator,
) -> None:  # fmt: skip
    """Revocations and later grants in ``[now, until)``; updates ``state`` and ``now``."""
    for _ in range(_STEPS):
        rate = np.where(state, REVOKE_PER_YEAR[purpose], REGRANT_PER_YEAR[purpose]) / 365.0
        when = now + rng.exponential(1.0, now.shape[0]) / rate
        who = np.flatnonzero(asked & (when < until))
        new = ~state[who]
        pick = rng.integers(0, 3, size=who.shape[0])
        source = np.where(new, np.array(LATER_SOURCES[True], dtype=object)[pick],
                          np.array(LATER_SOURCES[False], dtype=object)[pick])  # fmt: skip
        ledger.add(who, when[who], purpose, new, source)
        state[who] = new
        now[who] = when[who]
    np.maximum(now, until, out=now)  # memoryless: the rest of the period passed quietly


def draw_consents(
    members: pd.DataFrame,
    life: Lifecycles,
    fmt: StoreFormat,
    start: np.datetime64,
    n_days: int,
    rng: np.random.Generator,
) -> ConsentEvents:
    """Draw one store's consent ledger (unsorted; the caller orders and de-duplicates)."""
    n = life.join.shape[0]
    attitude = members["privacy_attitude"].to_numpy()
    eligible = rng.random(n) >= NEVER_ASKED
    effective = np.array(
        [(np.datetime64(p.effective, "D") - start).astype(np.int64) for p in POLICIES],
        dtype=np.float64,
    )
    at_join = np.searchsorted(effective, life.join, side="right") - 1
    sources = list(fmt.signup_sources)
    weights = np.array([fmt.signup_sources[s] for s in sources])
    signup = np.array(sources, dtype=object)[
        rng.choice(len(sources), size=n, p=weights / weights.sum())
    ]
    ledger = _Ledger()
    for purpose in PURPOSES:
        covered = np.array([purpose in p.purposes for p in POLICIES])
        asked = eligible & covered[at_join]
        state = np.zeros(n, dtype=bool)
        state[asked] = _decide(attitude[asked], GRANT_RATES[purpose], rng)
        who = np.flatnonzero(asked)
        ledger.add(who, life.join[who], purpose, state[who], signup[who])
        now = life.join.copy()
        for index, day in enumerate(effective):
            if index == 0 or day >= n_days:
                continue
            seen = day + rng.exponential(PROMPT_DELAY_DAYS, n)
            prompted = (
                eligible
                & covered[index]
                & (life.join < day)
                & (life.dropout > seen)
                & (seen < n_days)
            )
            _transitions(ledger, purpose, state, asked, now, np.where(prompted, seen, day), rng)
            who = np.flatnonzero(prompted)
            decision = np.where(
                asked[who],
                np.where(
                    state[who],
                    rng.random(who.shape[0]) < KEEP_AT_PROMPT,
                    rng.random(who.shape[0]) < GRANT_AT_PROMPT,
                ),
                _decide(attitude[who], GRANT_RATES[purpose], rng),
            )
            ledger.add(
                who,
                seen[who],
                purpose,
                decision,
                np.full(who.shape[0], PROMPT_SOURCE, dtype=object),
            )
            state[who], asked[who], now[who] = decision, True, seen[who]
        _transitions(ledger, purpose, state, asked, now, np.full(n, float(n_days)), rng)
    customer, days, purpose_col, granted, source = (
        np.concatenate(c) for c in zip(*ledger.parts, strict=True)
    )
    version = np.array([p.version for p in POLICIES], dtype=object)[
        np.searchsorted(effective, days, side="right") - 1
    ]
    return ConsentEvents(customer, days, purpose_col, granted.astype(bool), source, version)
