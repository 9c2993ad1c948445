"""The chain's people: who they are, and at which stores they are members.

About :data:`MULTI_STORE_SHARE` of people are members of two or three stores (a third of
those of three), preferring big stores, stores in their own city and the national
live-stream partner. Everything that belongs to the *person* is drawn here, once: persona,
gender, birth date, name, contact details, address, resident ID, discount sensitivity,
attitude to privacy and a visit rate. What belongs to a membership (joining, dropout, local
id, how contact details were typed in) is drawn per store by :mod:`.store_builder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.synthetic import identity
from fedcrm.synthetic.formats import StoreSpec
from fedcrm.synthetic.geography import CITIES, city_weights
from fedcrm.synthetic.personas import PERSONAS
from fedcrm.synthetic.sampling import gumbel_top

__all__ = ["HOME_CITY_SHARE", "MULTI_STORE_SHARE", "Population", "build_population"]

MULTI_STORE_SHARE = 0.10  # of people
THREE_STORE_SHARE = 0.30  # of multi-store people, when the chain has three stores or more
HOME_CITY_SHARE = 0.90  # members of a physical store living in its city
_NEARBY_AFFINITY = 3.0  # preference for stores in one's city and for the national store

PERSONA_NAMES = np.array(list(PERSONAS), dtype=object)


@dataclass(frozen=True)
class Population:
    """``persons``: one row per person; ``memberships``: (person row, store index, home)."""

    persons: pd.DataFrame
    memberships: pd.DataFrame

    def members_of(self, store: int) -> pd.DataFrame:
        """The memberships of one store, with the person's columns joined on."""
        rows = self.memberships[self.memberships["store"] == store]
        persons = self.persons.iloc[rows["person"].to_numpy()].reset_index(drop=True)
        return persons.assign(
            person=rows["person"].to_numpy(), n_stores=rows["n_stores"].to_numpy()
        )


def _multi_store(
    specs: Sequence[StoreSpec], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Home stores of multi-store people, and their other (person, store) memberships."""
    sizes = np.array([s.customers for s in specs], dtype=np.int64)
    n_stores, total = len(specs), int(sizes.sum())
    count = round(MULTI_STORE_SHARE * total / (1 + MULTI_STORE_SHARE * (1 + THREE_STORE_SHARE)))
    if n_stores < 2 or count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    homes = rng.choice(np.repeat(np.arange(n_stores), sizes), size=count, replace=False)
    extra = 1 + (rng.random(count) < THREE_STORE_SHARE) * (n_stores >= 3)
    slug = np.array([s.city.slug for s in specs], dtype=object)
    national = np.array([s.format.national for s in specs])
    near = (slug[:, None] == slug[None, :]) | national[:, None] | national[None, :]
    log_w = np.log(sizes)[None, :] + np.log(np.where(near, _NEARBY_AFFINITY, 1.0))[homes]
    log_w[np.arange(count), homes] = -np.inf
    order = gumbel_top(log_w, rng)
    person = np.concatenate([np.flatnonzero(extra >= 1), np.flatnonzero(extra >= 2)])
    store = np.concatenate([order[extra >= 1, 0], order[extra >= 2, 1]])
    # Respect each store's size: drop surplus extra memberships at random.
    capacity = sizes - np.bincount(homes, minlength=n_stores)
    keep = np.ones(person.shape[0], dtype=bool)
    shuffled = rng.permutation(person.shape[0])
    for s in range(n_stores):
        at_store = shuffled[store[shuffled] == s]
        keep[at_store[capacity[s] :]] = False
    return homes, person[keep], store[keep]


def _personas(
    homes: np.ndarray, specs: Sequence[StoreSpec], rng: np.random.Generator
) -> np.ndarray:
    persona = np.zeros(homes.shape[0], dtype=np.int64)
    for spec in specs:
        tilt = spec.format.persona_tilt
        mix = np.array([p.share * tilt.get(name, 1.0) for name, p in PERSONAS.items()])
        at = np.flatnonzero(homes == spec.index)
        persona[at] = rng.choice(len(PERSONAS), size=at.shape[0], p=mix / mix.sum())
    return persona


def build_population(specs: Sequence[StoreSpec], end: str, rng: np.random.Generator) -> Population:
    """Draw the people of a chain whose stores are ``specs``; ages are as of ``end`` (ISO)."""
    sizes = np.array([s.customers for s in specs], dtype=np.int64)
    multi_homes, extra_person, extra_store = _multi_store(specs, rng)
    taken = np.bincount(multi_homes, minlength=len(specs)) + np.bincount(
        extra_store, minlength=len(specs)
    )
    homes = np.concatenate([multi_homes, np.repeat(np.arange(len(specs)), sizes - taken)])
    n = homes.shape[0]
    memberships = pd.DataFrame(
        {
            "person": np.concatenate([np.arange(n), extra_person]),
            "store": np.concatenate([homes, extra_store]),
            "home": np.concatenate(
                [np.ones(n, dtype=bool), np.zeros(extra_person.shape[0], dtype=bool)]
            ),
        }
    )
    memberships["n_stores"] = np.bincount(memberships["person"], minlength=n)[memberships["person"]]

    persona = _personas(homes, specs, rng)
    attrs = {name: np.array([getattr(p, name) for p in PERSONAS.values()]) for name in (
        "female_share", "discount_prone", "visits_per_year", "rate_shape")}  # fmt: skip
    ages = np.array([p.age_range for p in PERSONAS.values()], dtype=np.float64)[persona]
    female = rng.random(n) < attrs["female_share"][persona]
    age_days = (ages[:, 0] + rng.random(n) * (ages[:, 1] - ages[:, 0])) * 365.25
    birth = np.datetime64(end, "D") - age_days.astype(np.int64)

    national = np.array([s.format.national for s in specs])[homes]
    store_city = np.array([CITIES.index(s.city) for s in specs], dtype=np.int64)[homes]
    elsewhere = rng.choice(len(CITIES), size=n, p=city_weights())
    local = ~national & (rng.random(n) < HOME_CITY_SHARE)
    city = np.where(local, store_city, elsewhere)

    names = identity.draw_names(female, rng)
    address = identity.draw_addresses(city, rng)
    birth_year = pd.DatetimeIndex(birth.astype("datetime64[ns]")).year.to_numpy()
    shape = attrs["rate_shape"][persona]
    visits_per_year = rng.gamma(shape, attrs["visits_per_year"][persona] / shape)
    persons = pd.DataFrame(
        {
            "person_id": np.zeros(n, dtype=object),
            "persona": PERSONA_NAMES[persona],
            "persona_index": persona,
            "home_store": homes,
            "female": female,
            "birth_date": birth.astype("datetime64[ns]"),
            "name": names.full,
            "mobile": identity.draw_mobiles(n, rng),
            "email": identity.draw_emails(
                names.surname_pinyin, names.given_pinyin, birth_year, rng
            ),
            "national_id": identity.resident_ids(address.area_code, birth, ~female, rng),
            "address": address.address,
            "city": address.city,
            "postcode": address.postcode,
            "discount_sensitive": rng.random(n) < attrs["discount_prone"][persona],
            "privacy_attitude": rng.standard_normal(n),
            "visits_per_year": visits_per_year,
        }
    )
    numbers = rng.permutation(n) + 1
    persons["person_id"] = (
        pd.Series(numbers, dtype="int64")
        .astype("str")
        .str.zfill(7)
        .radd("P")
        .to_numpy(dtype=object)
    )
    return Population(persons=persons, memberships=memberships)
