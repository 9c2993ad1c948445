"""Build one store's tables (and its ground truth) from the chain's people.

Per store, and from generators keyed by (seed, store index, component): each member's
lifecycle, purchases, interactions and consent ledger, then the contract's tables with
their in-memory dtypes. What the store *records* about a person differs between stores:
its own customer id (numbered in joining order, with the store's prefix and leading zeros),
the mobile and e-mail as its systems typed them, and which optional fields it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.data.contract import INTERACTION_KINDS, KNOWN_CHANNELS, PURPOSES
from fedcrm.data.store import StoreData
from fedcrm.synthetic import identity
from fedcrm.synthetic.calendar import RetailCalendar
from fedcrm.synthetic.catalog import Catalog
from fedcrm.synthetic.consent import draw_consents
from fedcrm.synthetic.formats import StoreSpec
from fedcrm.synthetic.interactions import draw_interactions
from fedcrm.synthetic.lifecycle import Lifecycles, draw_lifecycles
from fedcrm.synthetic.personas import PERSONAS
from fedcrm.synthetic.population import Population
from fedcrm.synthetic.purchases import draw_purchases
from fedcrm.synthetic.sampling import stream

__all__ = ["BuiltStore", "build_store"]

STORE_STREAM = 1  # first key of every store-level generator
_LIFE, _PURCHASES, _INTERACTIONS, _CONSENTS, _RECORDS = range(5)
EMAIL_STYLES = (0.85, 0.10, 0.05)  # as given, upper-case, capitalised
UNKNOWN_GENDER = 0.01
BIRTH_DATE_ON_FILE = 0.85  # when no resident ID is on file
TIERS = (("regular", 0.60), ("silver", 0.85), ("gold", 0.96), ("platinum", 1.0))


@dataclass(frozen=True)
class BuiltStore:
    data: StoreData
    truth: pd.DataFrame  # one row per member: hidden parameters for evaluation


def _text(values: np.ndarray, present: np.ndarray | None = None) -> pd.Series:
    series = pd.Series(values, dtype="str")
    return series if present is None else series.where(present)


def _timestamps(start: np.datetime64, seconds: np.ndarray) -> np.ndarray:
    return start.astype("datetime64[ns]") + seconds.astype("timedelta64[s]")


def _customer_ids(index: int, join: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Membership numbers in joining order, with gaps, after the store's 3-digit prefix."""
    order = np.argsort(join, kind="stable")
    numbers = np.empty(join.shape[0], dtype=np.int64)
    numbers[order] = np.cumsum(rng.geometric(0.5, size=join.shape[0]))
    ids = (index + 1) * 10_000_000 + numbers
    return pd.Series(ids, dtype="int64").astype("str").str.zfill(10).to_numpy(dtype=object)


def _tiers(members: pd.DataFrame, life: Lifecycles, rng: np.random.Generator) -> np.ndarray:
    """Loyalty tier from the member's expected spend level (known at joining, no hindsight)."""
    persona = members["persona_index"].to_numpy()
    level = np.array([p.basket_lines * p.price_level for p in PERSONAS.values()])[persona]
    value = np.log(life.rate * level) + 0.3 * rng.standard_normal(len(members))
    rank = (np.argsort(np.argsort(value, kind="stable"), kind="stable") + 0.5) / max(
        len(members), 1
    )
    cut = np.array([c for _, c in TIERS])
    return np.array([t for t, _ in TIERS], dtype=object)[np.searchsorted(cut, rank)]


def _customers(
    spec: StoreSpec, members: pd.DataFrame, life: Lifecycles, ids: np.ndarray,
    start: np.datetime64, rng: np.random.Generator,
) -> pd.DataFrame:  # fmt: skip
    n = len(members)
    on_file = {col: rng.random(n) < share for col, share in spec.format.on_file.items()}
    mobile_style = rng.choice(4, size=n, p=np.array(spec.format.mobile_styles))
    email_style = rng.choice(3, size=n, p=np.array(EMAIL_STYLES))
    female = members["female"].to_numpy()
    gender = np.where(female, "F", "M").astype(object)
    gender[rng.random(n) < UNKNOWN_GENDER] = "unknown"
    has_birth = on_file["national_id"] | (rng.random(n) < BIRTH_DATE_ON_FILE)
    joined = _timestamps(start, np.round(life.join * 86400).astype(np.int64))
    return pd.DataFrame(
        {
            "customer_id": _text(ids),
            "name": _text(members["name"].to_numpy()),
            "mobile": _text(identity.format_mobiles(members["mobile"].to_numpy(), mobile_style)),
            "email": _text(
                identity.format_emails(members["email"].to_numpy(), email_style), on_file["email"]
            ),
            "national_id": _text(members["national_id"].to_numpy(), on_file["national_id"]),
            "birth_date": members["birth_date"].where(has_birth).astype("datetime64[ns]"),
            "gender": _text(gender),
            "address": _text(members["address"].to_numpy(), on_file["address"]),
            "city": _text(members["city"].to_numpy()),
            "postcode": _text(members["postcode"].to_numpy(), on_file["address"]),
            "member_tier": _text(_tiers(members, life, rng)),
            "joined_at": pd.Series(joined),
        }
    )


def _truth(spec: StoreSpec, members: pd.DataFrame, life: Lifecycles, ids: np.ndarray,
           n_days: int, start: np.datetime64, lines: np.ndarray) -> pd.DataFrame:  # fmt: skip
    staged = np.array([bool(p.stages) for p in PERSONAS.values()])[
        members["persona_index"].to_numpy()
    ]
    churned = life.dropout < n_days
    dropout = _timestamps(
        start, np.round(np.minimum(life.dropout, n_days) * 86400).astype(np.int64)
    )
    anchor = _timestamps(
        start, np.round(np.clip(life.anchor, -36500, n_days) * 86400).astype(np.int64)
    )
    return pd.DataFrame(
        {
            "store_id": _text(np.full(len(members), spec.store_id, dtype=object)),
            "customer_id": _text(ids),
            "person_id": _text(members["person_id"].to_numpy()),
            "persona": _text(members["persona"].to_numpy()),
            "n_stores": members["n_stores"].to_numpy().astype(np.int64),
            "home_store": members["home_store"].to_numpy() == spec.index,
            "joined_at": _timestamps(start, np.round(life.join * 86400).astype(np.int64)),
            "purchase_rate": life.rate * 365.0,  # visits per year at full activity
            "dropout_rate": life.dropout_rate * 365.0,  # per year
            "dropout_at": pd.Series(dropout).where(churned),
            "alive_at_end": ~churned,
            "discount_sensitive": members["discount_sensitive"].to_numpy(),
            "satisfaction": life.satisfaction,
            "persona_anchor_at": pd.Series(anchor).where(staged),
            "true_gender": _text(np.where(members["female"].to_numpy(), "F", "M").astype(object)),
            "transactions": lines.astype(np.int64),
        }
    )


def build_store(
    spec: StoreSpec, population: Population, calendar: RetailCalendar, catalog: Catalog, seed: int
) -> BuiltStore:
    """Draw one store's members' lives and write them down as the store's tables."""

    def rng(component: int) -> np.random.Generator:
        return stream(seed, STORE_STREAM, spec.index, component)

    start, n_days = calendar.start, calendar.n_days
    members = population.members_of(spec.index)
    life = draw_lifecycles(members, spec.format, calendar, rng(_LIFE))
    records = rng(_RECORDS)
    ids = _customer_ids(spec.index, life.join, records)
    customers = _customers(spec, members, life, ids, start, records)

    p = draw_purchases(members, life, spec.format, calendar, catalog, rng(_PURCHASES))
    seq = pd.Series(np.arange(1, p.customer.shape[0] + 1), dtype="int64").astype("str").str.zfill(9)
    transactions = pd.DataFrame(
        {
            "transaction_id": f"T{spec.index:03d}" + seq,
            "customer_id": _text(ids[p.customer]),
            "timestamp": _timestamps(start, p.seconds),
            "amount": p.amount,
            "quantity": p.quantity,
            "category": _text(catalog.names[p.category]),
            "product_id": _text(catalog.product_ids[p.product]),
            "channel": _text(np.array(KNOWN_CHANNELS, dtype=object)[p.channel]),
            "store_id": _text(np.full(p.customer.shape[0], spec.store_id, dtype=object)),
            "discount": p.discount,
        }
    )

    it = draw_interactions(life, p, catalog, n_days, rng(_INTERACTIONS))
    interactions = pd.DataFrame(
        {
            "customer_id": _text(ids[it.customer]),
            "timestamp": _timestamps(start, it.seconds),
            "kind": _text(np.array(INTERACTION_KINDS, dtype=object)[it.kind]),
            "category": _text(catalog.names[np.maximum(it.category, 0)], it.category >= 0),
            "score": it.score,
        }
    )

    c = draw_consents(members, life, spec.format, start, n_days, rng(_CONSENTS))
    seconds = np.round(c.days * 86400).astype(np.int64)
    purpose_code = pd.Categorical(c.purpose, categories=list(PURPOSES)).codes
    order = np.lexsort((purpose_code, c.customer, seconds))
    ledger = pd.DataFrame(
        {
            "customer_id": ids[c.customer[order]],
            "purpose": c.purpose[order],
            "granted": c.granted[order],
            "timestamp": _timestamps(start, seconds[order]),
            "source": c.source[order],
            "policy_version": c.version[order],
        }
    )
    ledger = ledger[~ledger.duplicated(["customer_id", "purpose", "timestamp"], keep="first")]
    ledger = ledger[ledger["timestamp"] < _timestamps(start, np.array([n_days * 86400]))[0]]
    consents = ledger.reset_index(drop=True).astype(
        {"customer_id": "str", "purpose": "str", "source": "str", "policy_version": "str"}
    )
    lines = np.bincount(p.customer, minlength=len(members))
    truth = _truth(spec, members, life, ids, n_days, start, lines)
    # Rows in customer-id (joining) order: member order would reveal who shops elsewhere.
    by_id = np.argsort(ids.astype(str), kind="stable")
    data = StoreData(
        store_id=spec.store_id,
        customers=customers.iloc[by_id].reset_index(drop=True),
        transactions=transactions,
        consents=consents,
        interactions=interactions,
    )
    return BuiltStore(data=data, truth=truth.iloc[by_id].reset_index(drop=True))
