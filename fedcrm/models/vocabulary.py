"""Vocabularies: categories (data-driven, with a '/' hierarchy) and the fixed attribute lists.

Also a small CSR structure (:class:`SparseRows`) for multi-hot and count matrices.

Category strings are normalised before anything else: each '/'-separated level is stripped
and lower-cased, empty levels are dropped (``" Baby / Infant_Formula "`` →
``"baby/infant_formula"``). The top-level *parent* of a category is its first level.

Index 0 of the vocabulary is always the unknown bucket :data:`UNKNOWN`; known categories
follow in name order, so the same set of names always gives the same indices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.errors import ConfigError
from fedcrm.privacy.generalisation import AGE_BANDS as _BOUNDARY_AGE_BANDS
from fedcrm.privacy.generalisation import REGIONS as _BOUNDARY_REGIONS

__all__ = [
    "AGE_BANDS",
    "GENDERS",
    "MEMBER_TIERS",
    "REGIONS",
    "UNKNOWN",
    "CategoryVocabulary",
    "SparseRows",
    "encode_attribute",
    "map_values",
    "normalize_category",
    "parent_of",
]

#: The token every unknown (pruned or never seen) category maps to; always index 0.
UNKNOWN = "__unknown__"
_FORMAT = "fedcrm.category_vocabulary"
_VERSION = 1


def normalize_category(value: object) -> str | None:
    """The canonical form of a category string, or ``None`` for null/empty values."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    levels = [part.strip().lower() for part in str(value).split("/")]
    name = "/".join(part for part in levels if part)
    return name or None


def parent_of(name: str) -> str:
    """The top-level parent of a normalised category (``"baby/formula"`` → ``"baby"``)."""
    return name.split("/", 1)[0]


def map_values(values: pd.Series | Iterable[object], code_of: Callable[[Any], int]) -> np.ndarray:
    """``code_of(value)`` for every value (int64), -1 for nulls.

    ``code_of`` runs once per distinct value, so this is fast on millions of rows.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return np.array([*map(code_of, uniques), -1], dtype=np.int64)[codes]  # -1 picks the last


# Attribute vocabularies: the LAST value is the fallback for null, missing or unlisted values.
# Age bands and regions are the ones the privacy boundary's generalisers produce
# (fedcrm.privacy.generalisation), so the two can never drift apart.
GENDERS: tuple[str, ...] = ("F", "M", "U")
AGE_BANDS: tuple[str, ...] = (*_BOUNDARY_AGE_BANDS, "unknown")
MEMBER_TIERS: tuple[str, ...] = ("regular", "silver", "gold", "platinum", "unknown")
#: China's seven macro-regions, then "other" (unknown or unmapped places).
REGIONS: tuple[str, ...] = _BOUNDARY_REGIONS
_LEADING_INT = re.compile(r"^\s*(\d+)")


def _band_lower(label: str) -> int | None:
    if label.startswith("<"):
        return 0
    match = _LEADING_INT.match(label)
    return int(match.group(1)) if match else None


def encode_attribute(
    values: pd.Series, vocabulary: tuple[str, ...], *, age: bool = False
) -> np.ndarray:
    """Index of each value in ``vocabulary`` (case-insensitive); unlisted → last index.

    With ``age=True`` a band not in the list (``"25-29"``, ``"60+"``) goes to the listed
    band containing its lower bound, so differently generalised imports still line up.
    """
    lookup = {v.casefold(): i for i, v in enumerate(vocabulary)}
    bounds = [(b, i) for i, v in enumerate(vocabulary[:-1]) if (b := _band_lower(v)) is not None]
    fallback = len(vocabulary) - 1

    def code_of(value: object) -> int:
        key = str(value).strip().casefold()
        idx = lookup.get(key)
        if idx is None and age and (lower := _band_lower(key)) is not None:
            idx = max(((b, i) for b, i in bounds if b <= lower), default=(0, None))[1]
        return fallback if idx is None else idx

    codes = map_values(values, code_of)
    return np.where(codes < 0, fallback, codes)


@dataclass(frozen=True)
class SparseRows:
    """A CSR matrix as plain numpy arrays (``indptr``, ``indices``, ``data``).

    Row ``i`` holds the columns ``indices[indptr[i]:indptr[i + 1]]`` (sorted) with values
    ``data[...]``. Usable as-is by ``torch.sparse_csr_tensor`` or ``scipy.sparse.csr_matrix``.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.data) or self.indptr[-1] != len(self.indices):
            raise ValueError("SparseRows: indptr, indices and data do not agree")

    @classmethod
    def from_pairs(
        cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int, *, binary: bool
    ) -> SparseRows:
        """Build from (row, col) pairs; duplicates are summed, or set to 1 when ``binary``."""
        if n_cols < 1:
            raise ValueError(f"n_cols must be >= 1, got {n_cols}")
        keys = np.asarray(rows, dtype=np.int64) * n_cols + np.asarray(cols, dtype=np.int64)
        keys, counts = np.unique(keys, return_counts=True)
        r = keys // n_cols
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
        data = np.ones(len(keys), dtype=np.float32) if binary else counts.astype(np.float32)
        return cls(indptr, keys % n_cols, data, n_cols)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.indptr) - 1, self.n_cols)

    def row(self, i: int) -> np.ndarray:
        """The column indices of row ``i``."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    def take(self, rows: np.ndarray) -> SparseRows:
        """The rows ``rows`` (integer positions, in that order) as a new matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        picked = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseRows(indptr, self.indices[picked], self.data[picked], self.n_cols)

    def to_dense(self, dtype: Any = np.float32) -> np.ndarray:
        out = np.zeros(self.shape, dtype=dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out


@dataclass(frozen=True)
class CategoryVocabulary:
    """Known categories (sorted) and their top-level parents (sorted), plus an unknown bucket.

    Build it with :meth:`fit` (data-driven, with min-count pruning) or :meth:`from_categories`
    (a fixed list, e.g. agreed across stores). ``parents`` may hold a parent whose children
    were all pruned: a parent's count is the sum over all of its children.
    """

    categories: tuple[str, ...]
    parents: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _parent_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label, names in (("categories", self.categories), ("parents", self.parents)):
            if list(names) != sorted(set(names)):
                raise ConfigError(f"vocabulary {label} must be unique and sorted by name")
            bad = [n for n in names if n == UNKNOWN or normalize_category(n) != n]
            if bad:
                raise ConfigError(f"vocabulary {label} not normalised or reserved: {bad[:5]}")
        missing = sorted({parent_of(c) for c in self.categories} - set(self.parents))
        if missing:
            raise ConfigError(f"vocabulary lacks the parents {missing[:5]} of its categories")
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.categories)})
        object.__setattr__(self, "_parent_index", {p: i + 1 for i, p in enumerate(self.parents)})

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        values: pd.Series | Iterable[object],
        *,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> CategoryVocabulary:
        """Learn a vocabulary from category values (nulls ignored).

        Categories seen fewer than ``min_count`` times map to :data:`UNKNOWN`; with
        ``max_size`` only the most frequent categories are kept (ties broken by name).
        """
        if min_count < 1 or (max_size is not None and max_size < 1):
            raise ConfigError(f"min_count and max_size must be >= 1, got {min_count}, {max_size}")
        raw = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
        counts: dict[str, int] = {}
        for value, n in raw.value_counts(dropna=True).items():
            if (name := normalize_category(value)) is not None:
                counts[name] = counts.get(name, 0) + int(n)
        parent_counts: dict[str, int] = {}
        for name, n in counts.items():
            parent_counts[parent_of(name)] = parent_counts.get(parent_of(name), 0) + n
        kept = sorted(
            (name for name, n in counts.items() if n >= min_count),
            key=lambda name: (-counts[name], name),
        )[:max_size]
        parents = {p for p, n in parent_counts.items() if n >= min_count}
        parents |= {parent_of(c) for c in kept}
        return cls(tuple(sorted(kept)), tuple(sorted(parents)))

    @classmethod
    def from_categories(cls, names: Iterable[str]) -> CategoryVocabulary:
        """A vocabulary of exactly these categories (normalised) and their parents."""
        cats = sorted({n for n in (normalize_category(x) for x in names) if n is not None})
        return cls(tuple(cats), tuple(sorted({parent_of(c) for c in cats})))

    # -- lookup ---------------------------------------------------------------------------
    @property
    def tokens(self) -> tuple[str, ...]:
        """Column labels of the category index space: ``(UNKNOWN, *categories)``."""
        return (UNKNOWN, *self.categories)

    @property
    def parent_tokens(self) -> tuple[str, ...]:
        """Column labels of the parent index space: ``(UNKNOWN, *parents)``."""
        return (UNKNOWN, *self.parents)

    def __len__(self) -> int:
        return len(self.categories) + 1

    def index(self, name: str) -> int:
        """Index of a category (0 for unknown)."""
        norm = normalize_category(name)
        return self._index.get(norm, 0) if norm is not None else 0

    def parent_index(self, name: str) -> int:
        """Index of a category's top-level parent in :attr:`parent_tokens` (0 for unknown)."""
        norm = normalize_category(name)
        return self._parent_index.get(parent_of(norm), 0) if norm is not None else 0

    def encode(self, values: pd.Series | Iterable[object]) -> np.ndarray:
        """Category index of each value; -1 for null values, 0 for unknown ones."""
        return map_values(values, lambda v: self.index(v) if normalize_category(v) else -1)

    def encode_parents(self, values: pd.Series | Iterable[object]) -> np.ndarray:
        """Parent index of each value; -1 for null values, 0 for unknown parents."""
        return map_values(values, lambda v: self.parent_index(v) if normalize_category(v) else -1)

    # -- serialisation (names only: counts would disclose store statistics) ---------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "categories": list(self.categories),
            "parents": list(self.parents),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> CategoryVocabulary:
        if payload.get("format") != _FORMAT or payload.get("version") != _VERSION:
            raise ConfigError(
                f"not a {_FORMAT} v{_VERSION} document (format={payload.get('format')!r}, "
                f"version={payload.get('version')!r})"
            )
        return cls(tuple(payload["categories"]), tuple(payload["parents"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CategoryVocabulary:
        return cls.from_dict(json.loads(text))
