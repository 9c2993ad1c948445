"""The true product catalog: a two-level category hierarchy, products, prices, co-purchases.

Categories are ``"top/leaf"`` strings. Each has a lognormal shelf-price distribution (median
and log-sd, in CNY), a mean number of extra units per line and a number of products. Product
prices are drawn once per chain from their category's lognormal; within a category products
are ranked by price, so premium shoppers reach further up the range.

The co-purchase matrix says which category fills the next line of a basket given its first
line: mostly the same top-level category, plus named affinities (formula with diapers, cat
food with litter, phones with accessories, ...), plus a little of everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.synthetic.sampling import normalise_rows

__all__ = ["CATEGORIES", "CO_PURCHASE_PAIRS", "Catalog", "Category", "build_catalog"]


@dataclass(frozen=True)
class Category:
    name: str  # "top/leaf"
    median_price: float  # CNY
    price_sigma: float  # log-sd of the lognormal price distribution
    extra_units: float  # mean of the Poisson number of units beyond the first
    products: int

    @property
    def top(self) -> str:
        return self.name.split("/", 1)[0]


CATEGORIES: tuple[Category, ...] = (
    Category("baby/infant_formula", 298, 0.25, 0.6, 40),
    Category("baby/diapers", 139, 0.30, 0.5, 30),
    Category("baby/baby_food", 35, 0.40, 1.0, 60),
    Category("baby/toddler_food", 39, 0.40, 0.8, 50),
    Category("baby/baby_care", 59, 0.50, 0.3, 80),
    Category("baby/toys", 129, 0.70, 0.1, 120),
    Category("pet/dog_food", 189, 0.50, 0.2, 40),
    Category("pet/cat_food", 159, 0.50, 0.3, 50),
    Category("pet/cat_litter", 69, 0.30, 0.5, 20),
    Category("pet/treats", 39, 0.50, 0.8, 60),
    Category("pet/accessories", 79, 0.80, 0.1, 80),
    Category("beauty/skincare", 268, 0.70, 0.2, 150),
    Category("beauty/makeup", 169, 0.60, 0.3, 150),
    Category("beauty/fragrance", 499, 0.50, 0.05, 60),
    Category("beauty/haircare", 69, 0.40, 0.3, 60),
    Category("electronics/phones", 3299, 0.50, 0.0, 40),
    Category("electronics/accessories", 89, 0.70, 0.2, 150),
    Category("electronics/audio", 499, 0.80, 0.02, 60),
    Category("electronics/computers", 5999, 0.40, 0.0, 30),
    Category("electronics/smart_home", 299, 0.70, 0.05, 60),
    Category("fresh/fruit", 29, 0.50, 1.5, 80),
    Category("fresh/vegetables", 9.9, 0.50, 2.0, 100),
    Category("fresh/meat", 45, 0.50, 1.0, 60),
    Category("fresh/seafood", 79, 0.60, 0.6, 50),
    Category("fresh/dairy", 25, 0.40, 1.2, 50),
    Category("grocery/rice_oil", 69, 0.40, 0.3, 40),
    Category("grocery/snacks", 19.9, 0.60, 1.5, 200),
    Category("grocery/beverages", 12, 0.60, 2.0, 120),
    Category("grocery/tea", 128, 0.90, 0.2, 60),
    Category("grocery/instant_food", 15, 0.50, 1.5, 80),
    Category("grocery/liquor", 239, 1.00, 0.3, 60),
    Category("household/cleaning", 29, 0.50, 0.8, 80),
    Category("household/paper", 39, 0.30, 1.0, 30),
    Category("household/personal_care", 25, 0.50, 0.8, 100),
    Category("health/supplements", 199, 0.60, 0.3, 80),
    Category("health/otc_medicine", 35, 0.50, 0.4, 60),
    Category("sports/apparel", 299, 0.50, 0.2, 100),
    Category("sports/equipment", 199, 0.90, 0.1, 80),
    Category("apparel/womens", 259, 0.60, 0.2, 200),
    Category("apparel/mens", 239, 0.60, 0.2, 150),
    Category("apparel/shoes", 399, 0.50, 0.05, 100),
    Category("apparel/accessories", 99, 0.80, 0.1, 100),
    Category("home/kitchenware", 99, 0.80, 0.2, 100),
    Category("home/bedding", 299, 0.60, 0.1, 60),
    Category("home/decor", 79, 0.80, 0.2, 100),
)

#: Symmetric basket affinities between leaves beyond "same top-level category".
CO_PURCHASE_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("baby/infant_formula", "baby/diapers", 6.0),
    ("baby/infant_formula", "baby/baby_care", 3.0),
    ("baby/diapers", "baby/baby_care", 3.0),
    ("baby/baby_food", "baby/diapers", 3.0),
    ("baby/toddler_food", "baby/toys", 3.0),
    ("baby/diapers", "household/paper", 2.0),
    ("pet/cat_food", "pet/cat_litter", 6.0),
    ("pet/dog_food", "pet/treats", 5.0),
    ("pet/cat_food", "pet/treats", 2.0),
    ("beauty/skincare", "beauty/makeup", 4.0),
    ("beauty/skincare", "household/personal_care", 1.5),
    ("beauty/makeup", "beauty/fragrance", 2.0),
    ("electronics/phones", "electronics/accessories", 8.0),
    ("electronics/computers", "electronics/accessories", 6.0),
    ("electronics/phones", "electronics/audio", 2.0),
    ("fresh/meat", "fresh/vegetables", 4.0),
    ("fresh/seafood", "fresh/vegetables", 2.0),
    ("grocery/rice_oil", "fresh/vegetables", 2.0),
    ("grocery/snacks", "grocery/beverages", 5.0),
    ("grocery/liquor", "grocery/snacks", 2.0),
    ("grocery/tea", "grocery/snacks", 1.5),
    ("household/cleaning", "household/paper", 3.0),
    ("health/supplements", "fresh/fruit", 1.0),
    ("sports/apparel", "sports/equipment", 4.0),
    ("sports/apparel", "apparel/shoes", 2.0),
    ("apparel/womens", "apparel/accessories", 3.0),
    ("apparel/mens", "apparel/shoes", 2.0),
    ("apparel/womens", "apparel/shoes", 2.0),
    ("home/bedding", "home/decor", 3.0),
    ("home/kitchenware", "household/cleaning", 2.0),
)

_SAME_TOP = 1.0
_SAME_LEAF = 0.6
_BACKGROUND = 0.04


@dataclass(frozen=True)
class Catalog:
    """Categories, products and the co-purchase matrix, as arrays indexed by category."""

    names: np.ndarray  # object array of "top/leaf"
    tops: np.ndarray  # object array of the top-level names
    extra_units: np.ndarray  # float64
    product_offset: np.ndarray  # int64, first product of each category (+ total at the end)
    product_ids: np.ndarray  # object array of product ids
    product_price: np.ndarray  # float64 shelf price, ascending within each category
    co_purchase: np.ndarray  # (L, L) row-stochastic

    @property
    def size(self) -> int:
        return int(self.names.shape[0])

    def index(self, name: str) -> int:
        """Index of a leaf by its full name."""
        found = np.flatnonzero(self.names == name)
        if found.size == 0:
            raise KeyError(f"unknown category {name!r}")
        return int(found[0])

    def mask(self, prefix: str) -> np.ndarray:
        """Categories matching ``prefix``: a top-level name or a full ``top/leaf`` name."""
        return np.array([n == prefix or n.startswith(prefix + "/") for n in self.names])

    def categories_frame(self) -> pd.DataFrame:
        """One row per category: the true hierarchy and price model (ground truth)."""
        specs = {c.name: c for c in CATEGORIES}
        return pd.DataFrame(
            {
                "category": pd.Series(self.names, dtype="str"),
                "top": pd.Series(self.tops, dtype="str"),
                "leaf": pd.Series([n.split("/", 1)[1] for n in self.names], dtype="str"),
                "median_price": [specs[n].median_price for n in self.names],
                "price_sigma": [specs[n].price_sigma for n in self.names],
                "extra_units": self.extra_units,
                "products": np.diff(self.product_offset),
            }
        )

    def products_frame(self) -> pd.DataFrame:
        counts = np.diff(self.product_offset)
        return pd.DataFrame(
            {
                "product_id": pd.Series(self.product_ids, dtype="str"),
                "category": pd.Series(np.repeat(self.names, counts), dtype="str"),
                "shelf_price": self.product_price,
            }
        )

    def co_purchase_frame(self) -> pd.DataFrame:
        """Long form of the co-purchase matrix: P(next line's category | first line's)."""
        n = self.size
        return pd.DataFrame(
            {
                "category": pd.Series(np.repeat(self.names, n), dtype="str"),
                "next_category": pd.Series(np.tile(self.names, n), dtype="str"),
                "probability": self.co_purchase.ravel(),
            }
        )


def _co_purchase(names: list[str]) -> np.ndarray:
    tops = np.array([n.split("/", 1)[0] for n in names])
    weights = np.full((len(names), len(names)), _BACKGROUND)
    weights += _SAME_TOP * (tops[:, None] == tops[None, :])
    np.fill_diagonal(weights, _SAME_LEAF)
    position = {n: i for i, n in enumerate(names)}
    for a, b, w in CO_PURCHASE_PAIRS:
        weights[position[a], position[b]] += w
        weights[position[b], position[a]] += w
    return normalise_rows(weights)


def build_catalog(rng: np.random.Generator) -> Catalog:
    """Draw the chain's products and their shelf prices."""
    names = [c.name for c in CATEGORIES]
    counts = np.array([c.products for c in CATEGORIES], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(counts)])
    prices = []
    ids: list[str] = []
    for index, category in enumerate(CATEGORIES):
        draw = category.median_price * np.exp(
            category.price_sigma * rng.standard_normal(category.products)
        )
        prices.append(np.sort(np.maximum(np.floor(draw), 0.0) + 0.9))  # shelf prices end in .9
        ids.extend(f"P{index:02d}{sku:04d}" for sku in range(category.products))
    return Catalog(
        names=np.array(names, dtype=object),
        tops=np.array([c.top for c in CATEGORIES], dtype=object),
        extra_units=np.array([c.extra_units for c in CATEGORIES]),
        product_offset=offset,
        product_ids=np.array(ids, dtype=object),
        product_price=np.concatenate(prices),
        co_purchase=_co_purchase(names),
    )
