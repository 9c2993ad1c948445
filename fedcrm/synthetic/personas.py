"""Shopper personas: who buys what, how often, for how long, and in which order.

A persona fixes the Pareto/NBD-style parameters of its customers (Gamma-distributed visit
rates, exponential lifetimes with a Gamma-distributed dropout rate), basket size, price
level, share of discount-sensitive shoppers, demographics, and category preferences.

Sequence patterns come from *stages*: category boosts that change with the time since a
persona-specific anchor (a baby's birth, a new pet, a new phone). A new parent buys infant
formula first, diapers and baby food months later, toddler food and toys after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcrm.synthetic.catalog import Catalog

__all__ = ["MAX_STAGES", "PERSONAS", "Persona", "Stage", "get_persona", "stage_weights"]

MAX_STAGES = 3

#: What everybody buys a little of (top-level or leaf prefixes).
_BASELINE: Mapping[str, float] = {
    "fresh": 1.0, "grocery": 1.0, "grocery/liquor": 0.3, "grocery/tea": 0.4,
    "household": 0.8, "health": 0.3, "baby": 0.03, "pet": 0.05, "beauty": 0.25,
    "electronics": 0.08, "electronics/accessories": 0.25, "sports": 0.1, "apparel": 0.2,
    "home": 0.15,
}  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """Category boosts while ``days since anchor < until``."""

    until: float
    boosts: Mapping[str, float]


@dataclass(frozen=True)
class Persona:
    name: str
    share: float  # share of the population before store-format tilts
    visits_per_year: float  # mean of the Gamma visit rate
    rate_shape: float  # Gamma shape: lower = more heterogeneous
    lifetime_years: float  # mean expected lifetime with a store
    basket_lines: float  # mean lines per basket
    price_level: float  # >1 reaches for pricier products
    discount_prone: float  # probability of being discount-sensitive
    female_share: float
    age_range: tuple[int, int]  # age at the end of the window
    boosts: Mapping[str, float]
    stages: tuple[Stage, ...] = ()
    anchor_days: tuple[float, float] = (0.0, 0.0)  # anchor = joining + U(lo, hi) days
    channel_tilt: Mapping[str, float] = field(default_factory=dict)


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona("family_grocer", 0.22, 26, 1.5, 4.0, 2.8, 1.0, 0.35, 0.65, (30, 60),
                {"fresh": 3.0, "grocery/rice_oil": 2.0, "household": 1.5},
                channel_tilt={"pos": 1.5, "mini_program": 1.2}),
        Persona("new_parent", 0.10, 20, 2.0, 3.0, 2.5, 1.1, 0.50, 0.75, (25, 40),
                {"baby": 1.0, "health/supplements": 2.0},
                stages=(
                    Stage(180, {"baby/infant_formula": 400, "baby/baby_care": 120,
                                "baby/diapers": 40}),
                    Stage(540, {"baby/infant_formula": 150, "baby/diapers": 330,
                                "baby/baby_food": 260, "baby/baby_care": 60}),
                    Stage(np.inf, {"baby/toddler_food": 330, "baby/toys": 160,
                                   "baby/diapers": 60, "baby/infant_formula": 20}),
                ),
                anchor_days=(-90.0, 0.0), channel_tilt={"app": 1.5, "mini_program": 1.5}),
        Persona("pet_owner", 0.09, 14, 1.5, 3.5, 2.0, 1.0, 0.40, 0.60, (22, 55),
                {"pet": 30.0},
                stages=(
                    Stage(90, {"pet/accessories": 5.0, "pet/treats": 2.0}),
                    Stage(np.inf, {"pet/cat_food": 1.5, "pet/dog_food": 1.5,
                                   "pet/cat_litter": 1.5}),
                ),
                anchor_days=(-30.0, 30.0)),
        Persona("beauty_lover", 0.12, 9, 1.2, 2.5, 2.0, 1.2, 0.70, 0.92, (20, 42),
                {"beauty": 14.0, "apparel": 2.0, "household/personal_care": 2.0},
                stages=(
                    Stage(120, {"beauty/skincare": 3.0, "beauty/haircare": 2.0}),
                    Stage(np.inf, {"beauty/makeup": 2.0, "beauty/fragrance": 2.0}),
                ),
                anchor_days=(0.0, 30.0),
                channel_tilt={"live_stream": 2.0, "app": 1.5, "mini_program": 1.3}),
        Persona("tech_enthusiast", 0.08, 5, 1.0, 2.5, 1.6, 1.3, 0.45, 0.20, (19, 45),
                {"electronics": 20.0},
                stages=(
                    Stage(45, {"electronics/phones": 4.0, "electronics/computers": 3.0}),
                    Stage(np.inf, {"electronics/accessories": 3.0, "electronics/audio": 2.0,
                                   "electronics/smart_home": 2.0, "electronics/phones": 0.3,
                                   "electronics/computers": 0.2}),
                ),
                anchor_days=(0.0, 60.0), channel_tilt={"web": 2.0, "app": 1.5}),
        Persona("young_professional", 0.14, 12, 1.3, 2.0, 2.0, 0.8, 0.55, 0.55, (19, 30),
                {"grocery/snacks": 4.0, "grocery/beverages": 4.0, "grocery/instant_food": 5.0,
                 "electronics/accessories": 3.0, "apparel": 3.0, "beauty/makeup": 2.0,
                 "fresh/vegetables": 0.4, "fresh/meat": 0.4},
                channel_tilt={"mini_program": 1.8, "app": 1.8, "live_stream": 1.5, "pos": 0.7}),
        Persona("fitness_fan", 0.06, 10, 1.3, 2.5, 2.0, 1.1, 0.35, 0.50, (20, 45),
                {"sports": 25.0, "health/supplements": 6.0, "fresh/fruit": 2.0, "fresh/dairy": 2.0},
                channel_tilt={"app": 1.5}),
        Persona("senior_saver", 0.09, 20, 2.0, 5.0, 2.4, 0.9, 0.30, 0.60, (58, 80),
                {"fresh": 3.0, "grocery/tea": 4.0, "health": 5.0, "grocery/instant_food": 0.3},
                channel_tilt={"pos": 2.5, "web": 0.3, "live_stream": 0.5}),
        Persona("fashionista", 0.06, 6, 1.0, 2.0, 1.8, 1.3, 0.60, 0.80, (20, 40),
                {"apparel": 30.0, "beauty": 3.0, "sports/apparel": 3.0},
                channel_tilt={"live_stream": 1.8, "app": 1.3}),
        Persona("home_maker", 0.04, 7, 1.2, 3.0, 2.0, 1.1, 0.45, 0.70, (28, 55),
                {"home": 20.0, "household": 3.0},
                channel_tilt={"web": 1.5}),
    )
}  # fmt: skip


def get_persona(name: str) -> Persona:
    """The persona called ``name``; ValueError listing the valid names otherwise."""
    try:
        return PERSONAS[name]
    except KeyError:
        raise ValueError(f"unknown persona {name!r}; valid: {', '.join(PERSONAS)}") from None


def _apply(weights: np.ndarray, boosts: Mapping[str, float], catalog: Catalog) -> np.ndarray:
    """Multiply by each boost; leaf entries apply after (and on top of) top-level ones."""
    out = weights.copy()
    for prefix in sorted(boosts, key=lambda p: p.count("/")):
        out[catalog.mask(prefix)] *= boosts[prefix]
    return out


def _baseline(catalog: Catalog) -> np.ndarray:
    weights = np.full(catalog.size, 0.1)
    for prefix in sorted(_BASELINE, key=lambda p: p.count("/")):
        weights[catalog.mask(prefix)] = _BASELINE[prefix]
    return weights


def stage_weights(persona: Persona, catalog: Catalog) -> np.ndarray:
    """Unnormalised category weights of each stage, shape ``(MAX_STAGES, L)``.

    Personas without stages (or with fewer than :data:`MAX_STAGES`) repeat their last row.
    """
    base = _apply(_baseline(catalog), persona.boosts, catalog)
    rows = [_apply(base, stage.boosts, catalog) for stage in persona.stages] or [base]
    rows += [rows[-1]] * (MAX_STAGES - len(rows))
    return np.stack(rows)


def stage_bounds(persona: Persona) -> np.ndarray:
    """Stage upper bounds in days since anchor, padded with ``inf`` to ``MAX_STAGES - 1``."""
    bounds = [s.until for s in persona.stages[:-1]]
    bounds += [np.inf] * (MAX_STAGES - 1 - len(bounds))
    return np.array(bounds, dtype=np.float64)
