"""Which store directory a row goes to: a stable hash of the customer, or a store column.

The hash is SHA-256 of the UTF-8 customer id, read as a big-endian integer, modulo the
number of stores: the same id lands in the same store on every machine, every run and every
row order (Python's ``hash()`` is salted per process and would not). Directory names of a
store column's values are filesystem-safe slugs; the original value stays the store id.

Consent events follow their customer: to the customer's hash bucket, or, with a store column,
to every store where the customer bought (consent belongs to the person). With a store column,
events of customers who bought nowhere in the file cannot be placed and are counted.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "SINGLE_STORE_ID",
    "StoreSplit",
    "bucket_names",
    "hash_buckets",
    "rows_by_store",
    "split_stores",
    "store_slugs",
]

#: Store id and directory name when the whole file is one store.
SINGLE_STORE_ID = "store_00"

_UNSAFE = re.compile(r"[^\w.-]+")
_MAX_SLUG = 60


def hash_buckets(customer_ids: Sequence[str], stores: int) -> np.ndarray:
    """The bucket (0..stores-1) of each id: ``int(sha256(id.encode("utf-8"))) % stores``.

    Call it with distinct ids only; it costs one SHA-256 per element.
    """
    if stores < 1:
        raise ValueError(f"stores must be at least 1, got {stores}")
    out = np.empty(len(customer_ids), dtype=np.int64)
    for i, cid in enumerate(customer_ids):
        digest = hashlib.sha256(cid.encode("utf-8")).digest()
        out[i] = int.from_bytes(digest, "big") % stores
    return out


def bucket_names(stores: int) -> list[str]:
    """Directory names (and store ids) of hash buckets: ``store_00`` .. ``store_NN``."""
    width = max(2, len(str(stores - 1)))
    return [f"store_{i:0{width}d}" for i in range(stores)]


def _slug(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).strip().casefold()
    text = _UNSAFE.sub("-", text).strip("-._")
    return text[:_MAX_SLUG].rstrip("-._") or "store"


def store_slugs(values: Iterable[str]) -> dict[str, str]:
    """A distinct, filesystem-safe directory name for each store value.

    Names keep letters and digits of any script, never start with ``.`` or ``_`` (such
    directories are not stores) and are unique even on case-insensitive filesystems; a
    value whose slug is taken gets a short hash suffix.
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for value in sorted(set(values)):
        slug = _slug(value)
        if slug in taken:
            suffix = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
            slug = f"{slug[: _MAX_SLUG - 9]}-{suffix}"
        taken.add(slug)
        out[value] = slug
    return out


@dataclass(frozen=True)
class StoreSplit:
    """Stores to write and where each transaction row and consent event goes.

    ``tx_store[i]`` is the store index of transaction row ``i``; consent events may go to
    several stores, so placements are pairs ``(consent_rows[j], consent_store[j])``.
    """

    kind: Literal["single", "hash", "column"]
    store_ids: tuple[str, ...]
    directories: tuple[str, ...]
    tx_store: np.ndarray
    consent_rows: np.ndarray
    consent_store: np.ndarray
    unplaced_events: int


def split_stores(
    customer_ids: pd.Series,
    *,
    store_values: pd.Series | None = None,
    stores: int | None = None,
    consent_ids: pd.Series | None = None,
) -> StoreSplit:
    """One store, ``stores`` hash buckets (empty ones left out), or one store per value."""
    if store_values is not None and stores is not None:
        raise ValueError("give store_values or stores, not both")
    consent_ids = consent_ids if consent_ids is not None else pd.Series([], dtype="str")
    n_events = len(consent_ids)
    if store_values is not None:
        return _split_by_column(customer_ids, store_values, consent_ids)
    if stores is None:
        return StoreSplit(
            "single",
            (SINGLE_STORE_ID,),
            (SINGLE_STORE_ID,),
            np.zeros(len(customer_ids), dtype=np.int64),
            np.arange(n_events),
            np.zeros(n_events, dtype=np.int64),
            0,
        )
    everyone = pd.Index(pd.concat([customer_ids, consent_ids], ignore_index=True).unique())
    buckets = hash_buckets([str(c) for c in everyone], stores)
    tx_bucket = buckets[everyone.get_indexer(customer_ids)]
    ce_bucket = buckets[everyone.get_indexer(consent_ids)]
    used = np.unique(np.concatenate([tx_bucket, ce_bucket]))
    names = bucket_names(stores)
    compact = np.full(stores, -1, dtype=np.int64)
    compact[used] = np.arange(len(used))
    ids = tuple(names[b] for b in used)
    return StoreSplit(
        "hash", ids, ids, compact[tx_bucket], np.arange(n_events), compact[ce_bucket], 0
    )


def _split_by_column(
    customer_ids: pd.Series, store_values: pd.Series, consent_ids: pd.Series
) -> StoreSplit:
    values = sorted(store_values.unique())
    slugs = store_slugs(values)
    index = pd.Index(values)
    tx_store = index.get_indexer(store_values).astype(np.int64)
    where = pd.DataFrame({"customer_id": customer_ids, "store": tx_store}).drop_duplicates()
    events = pd.DataFrame({"customer_id": consent_ids, "row": np.arange(len(consent_ids))})
    placed = events.merge(where, on="customer_id", how="inner").sort_values(["row", "store"])
    unplaced = len(consent_ids) - placed["row"].nunique()
    return StoreSplit(
        "column",
        tuple(values),
        tuple(slugs[v] for v in values),
        tx_store,
        placed["row"].to_numpy(np.int64),
        placed["store"].to_numpy(np.int64),
        unplaced,
    )


def rows_by_store(store_of_row: np.ndarray, stores: int) -> list[np.ndarray]:
    """For each store index, the positions of its rows, in their original order."""
    order = np.argsort(store_of_row, kind="stable")
    counts = np.bincount(store_of_row, minlength=stores)
    return np.split(order, np.cumsum(counts)[:-1])
