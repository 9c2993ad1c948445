"""Store formats, and the plan of a chain's stores: which format, city and size each has.

Formats make stores non-IID: they differ in membership size, visit frequency, basket size,
channel mix, category mix, the personas they attract, and what they hold on file.

Size factors (``customers_per_store`` is the chain average; store ``i`` gets
``customers_per_store * S * factor_i / sum(factors)``, at least one):

============  ======  ===================================================
format        factor  character
============  ======  ===================================================
flagship      1.5     city-centre hypermarket: everything, app-savvy members
mall          1.0     shopping-mall store: apparel, beauty, sports
community     0.7     neighbourhood store: fresh food, frequent small trips
livestream    0.8     online partner / live-stream shop: national, promo-driven
============  ======  ===================================================

Formats cycle in that order across the stores; physical stores cycle through the cities,
the live-stream partner is based in Hangzhou and sells nationwide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcrm.synthetic.geography import CITIES, City, city_by_slug

__all__ = ["FORMATS", "FORMAT_CYCLE", "StoreFormat", "StoreSpec", "get_format", "plan_stores"]


@dataclass(frozen=True)
class StoreFormat:
    name: str  # ascii slug, part of the store id
    label: str  # Chinese suffix of the store's name
    size_factor: float
    visit_factor: float  # multiplies persona visit rates
    basket_factor: float  # multiplies persona basket sizes
    price_factor: float  # multiplies shelf prices
    pre_window_share: float  # members who joined before the window starts
    national: bool  # members come from every city, not the store's own
    channel_mix: Mapping[str, float]
    category_tilt: Mapping[str, float]  # prefix -> multiplier on category weights
    persona_tilt: Mapping[str, float]  # persona -> multiplier on its share
    signup_sources: Mapping[str, float]  # consent source of the joining declaration
    on_file: Mapping[str, float]  # optional customer column -> share of members with it
    mobile_styles: tuple[float, float, float, float]  # see identity.format_mobiles


FORMATS: dict[str, StoreFormat] = {
    f.name: f
    for f in (
        StoreFormat("flagship", "旗舰店", 1.5, 1.0, 1.0, 1.05, 0.35, False,
                    {"pos": 0.50, "app": 0.20, "mini_program": 0.15, "web": 0.10,
                     "live_stream": 0.05},
                    {"electronics": 1.4, "beauty": 1.2},
                    {"tech_enthusiast": 1.5, "beauty_lover": 1.3, "fashionista": 1.2},
                    {"pos_signup": 0.6, "app_signup": 0.3, "mini_program_signup": 0.1},
                    {"email": 0.75, "national_id": 0.5, "address": 0.7},
                    (0.80, 0.08, 0.08, 0.04)),
        StoreFormat("mall", "购物中心店", 1.0, 0.75, 0.8, 1.10, 0.30, False,
                    {"pos": 0.65, "mini_program": 0.20, "app": 0.10, "web": 0.05},
                    {"apparel": 2.2, "sports": 2.0, "beauty": 1.5, "fresh": 0.35, "grocery": 0.6},
                    {"fashionista": 2.5, "beauty_lover": 1.5, "fitness_fan": 1.8,
                     "young_professional": 1.3, "senior_saver": 0.5, "family_grocer": 0.5},
                    {"pos_signup": 0.7, "mini_program_signup": 0.3},
                    {"email": 0.6, "national_id": 0.3, "address": 0.5},
                    (0.75, 0.05, 0.15, 0.05)),
        StoreFormat("community", "社区店", 0.7, 1.4, 1.1, 0.95, 0.40, False,
                    {"pos": 0.72, "mini_program": 0.20, "app": 0.08},
                    {"fresh": 2.5, "household": 1.3, "electronics": 0.15, "apparel": 0.3,
                     "beauty": 0.4, "home": 0.5, "sports": 0.4},
                    {"family_grocer": 1.8, "senior_saver": 2.0, "new_parent": 1.2,
                     "tech_enthusiast": 0.3, "fashionista": 0.3, "beauty_lover": 0.5},
                    {"pos_signup": 0.85, "mini_program_signup": 0.15},
                    {"email": 0.35, "national_id": 0.2, "address": 0.8},
                    (0.85, 0.02, 0.10, 0.03)),
        StoreFormat("livestream", "直播电商合作店", 0.8, 0.8, 0.7, 0.98, 0.15, True,
                    {"live_stream": 0.45, "partner": 0.30, "app": 0.10, "mini_program": 0.10,
                     "web": 0.05},
                    {"fresh": 0.1, "beauty": 1.6, "pet": 1.3, "electronics": 1.2,
                     "grocery/snacks": 1.5},
                    {"beauty_lover": 2.2, "young_professional": 1.6, "tech_enthusiast": 1.3,
                     "new_parent": 1.3, "senior_saver": 0.3, "family_grocer": 0.4},
                    {"live_stream_signup": 0.6, "partner_import": 0.4},
                    {"email": 0.9, "national_id": 0.6, "address": 0.95},
                    (0.40, 0.30, 0.05, 0.25)),
    )
}  # fmt: skip

FORMAT_CYCLE: tuple[str, ...] = ("flagship", "mall", "community", "livestream")

_ONLINE_HOME = "hangzhou"


def get_format(name: str) -> StoreFormat:
    """The format called ``name``; ValueError listing the valid names otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown store format {name!r}; valid: {', '.join(FORMATS)}") from None


@dataclass(frozen=True)
class StoreSpec:
    """One planned store."""

    index: int
    store_id: str
    format: StoreFormat
    city: City
    customers: int

    @property
    def name(self) -> str:
        return f"{self.city.name}{self.format.label}"


def plan_stores(stores: int, customers_per_store: int) -> tuple[StoreSpec, ...]:
    """Formats, cities and sizes of ``stores`` stores (deterministic, no randomness)."""
    formats = [FORMATS[FORMAT_CYCLE[i % len(FORMAT_CYCLE)]] for i in range(stores)]
    factors = np.array([f.size_factor for f in formats])
    sizes = np.maximum(1, np.round(customers_per_store * stores * factors / factors.sum()))
    specs = []
    physical = 0
    for index, (fmt, size) in enumerate(zip(formats, sizes, strict=True)):
        if fmt.national:
            city = city_by_slug(_ONLINE_HOME)
        else:
            city = CITIES[physical % len(CITIES)]
            physical += 1
        store_id = f"s{index:02d}_{fmt.name}_{city.slug}"
        specs.append(StoreSpec(index, store_id, fmt, city, int(size)))
    return tuple(specs)
