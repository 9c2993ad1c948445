"""Model-ready customer features of one store at an observation cutoff ``T``.

Leakage guarantee: :func:`_history` slices every input once, at the top, with
:func:`~fedcrm.models.snapshot.before_cutoff` (``timestamp < T``); every feature is computed
from that :class:`_History` only. Rows at or after ``T`` (including ``timestamp == T``) are
never read, and ``joined_at >= T`` counts as unknown.

The population is every customer with at least one transaction before ``T``; rows are in
ascending ``customer_id`` order. Feature definitions are in ``docs/features.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.data.contract import INTERACTION_KINDS
from fedcrm.models.lifecycle import (
    LIFECYCLE_STAGES,
    VALUE_TIERS,
    LifecycleConfig,
    RfmConfig,
    customer_profile,
)
from fedcrm.models.snapshot import (
    TRANSACTION_COLUMNS,
    FeatureSnapshot,
    FeatureSpec,
    StoreFrames,
    as_cutoff,
    attribute_one_hot,
    before_cutoff,
    require_columns,
    timestamps_ns,
)
from fedcrm.models.vocabulary import (
    CategoryVocabulary,
    SparseRows,
    map_values,
    normalize_category,
    parent_of,
)

__all__ = ["build_features", "build_store_features", "purchase_history"]

DAY_NS = 86_400 * 10**9
_IX_REQUIRED = ("customer_id", "timestamp", "kind")


@dataclass(frozen=True)
class _History:
    """Everything feature code may see: rows strictly before the cutoff."""

    cutoff_ns: int
    ids: pd.Index
    tx: pd.DataFrame
    code: np.ndarray  # population index of each tx row
    t: np.ndarray  # ns timestamps of tx rows
    amount: np.ndarray
    ix: pd.DataFrame | None  # interactions of population customers, with "code" column
    customers: pd.DataFrame  # aligned to ids


def _history(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame,
    interactions: pd.DataFrame | None,
    cutoff: pd.Timestamp,
) -> _History:
    require_columns(transactions, TRANSACTION_COLUMNS, "transactions")
    tx = before_cutoff(transactions, cutoff, "transactions")
    code, ids = pd.factorize(tx["customer_id"], sort=True)
    ids = pd.Index(ids, name="customer_id")
    ix = None
    if interactions is not None and len(interactions):
        require_columns(interactions, _IX_REQUIRED, "interactions")
        pre_ix = before_cutoff(interactions, cutoff, "interactions")
        pre_ix = pre_ix.assign(code=ids.get_indexer(pre_ix["customer_id"]))
        ix = pre_ix.loc[pre_ix["code"] >= 0] if len(pre_ix) else None
    if customers is None:
        aligned = pd.DataFrame(index=ids)
    else:
        require_columns(customers, ("customer_id",), "customers")
        aligned = customers.drop_duplicates("customer_id").set_index("customer_id").reindex(ids)
    return _History(
        cutoff_ns=int(np.datetime64(cutoff, "ns").astype(np.int64)),
        ids=ids,
        tx=tx,
        code=code.astype(np.int64),
        t=timestamps_ns(tx["timestamp"], "transactions"),
        amount=np.nan_to_num(tx["amount"].to_numpy(dtype=np.float64)),
        ix=ix,
        customers=aligned,
    )


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Row indices where a run of equal (sorted) keys starts."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[:1] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _ends(starts: np.ndarray, n: int) -> np.ndarray:
    """Row indices where those runs end."""
    return np.append(starts[1:], n) - 1 if n else starts


def _log(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _token(value: object) -> str | None:
    return str(value).strip().lower() or None


def _one_hot(values: np.ndarray, labels: tuple[str, ...], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}__{lab}": (values == lab).astype(np.float64) for lab in labels}


def _codes(
    frame: pd.DataFrame, column: str, key: Callable[[Any], str | None], labels: tuple[str, ...]
) -> np.ndarray:
    """Per row: index of ``key(value)`` in ``labels``, ``len(labels)`` if unlisted, -1 if null."""
    if column not in frame:
        return np.full(len(frame), -1, dtype=np.int64)
    table = {v: i for i, v in enumerate(labels)}
    return map_values(
        frame[column], lambda u: -1 if (k := key(u)) is None else table.get(k, len(table))
    )


def _shares(
    h: _History, idx: np.ndarray, labels: tuple[str, ...], prefix: str
) -> dict[str, np.ndarray]:
    """Share of a customer's lines per label (rows with idx -1 are left out)."""
    n, k, ok = len(h.ids), len(labels), idx >= 0
    counts = np.bincount(h.code[ok] * k + idx[ok], minlength=n * k).reshape(n, k)
    total = counts.sum(axis=1)
    shares = np.divide(counts, total[:, None], out=np.zeros((n, k)), where=total[:, None] > 0)
    out = {f"{prefix}_share__{lab}": shares[:, i] for i, lab in enumerate(labels)}
    out[f"has_{prefix}_data"] = (total > 0).astype(np.float64)
    return out


def _activity(h: _History, spec: FeatureSpec, lc: LifecycleConfig, rfm: RfmConfig) -> tuple:
    """Recency, frequency, monetary, tenure, gaps; lifecycle and RFM profile."""
    n, T = len(h.ids), h.cutoff_ns
    order = np.lexsort((h.t, h.code))
    c, t = h.code[order], h.t[order]
    day = t // DAY_NS
    starts = _starts(c, day)  # a visit: one customer, one calendar day
    v_code, v_day, v_last = c[starts], day[starts], t[_ends(starts, len(c))]
    visits = np.bincount(v_code, minlength=n).astype(np.float64)
    first = _starts(c)
    recency = (T - t[_ends(first, len(c))]) / DAY_NS
    tenure = (T - t[first]) / DAY_NS
    spend = np.bincount(h.code, weights=h.amount, minlength=n)
    f: dict[str, np.ndarray] = {
        "recency_days_log1p": _log(recency),
        "tenure_days_log1p": _log(tenure),
        "visits_log1p": _log(visits),
        "lines_per_visit_log1p": _log(np.bincount(h.code, minlength=n) / visits),
        "spend_log1p": _log(spend),
        "spend_per_visit_log1p": _log(spend / visits),
    }
    for d in spec.windows:
        start = T - d * DAY_NS
        f[f"visits_{d}d_log1p"] = _log(np.bincount(v_code, v_last >= start, minlength=n))
        f[f"spend_{d}d_log1p"] = _log(np.bincount(h.code, h.amount * (h.t >= start), n))
    same = v_code[1:] == v_code[:-1]
    gaps, g_code = (v_day[1:] - v_day[:-1])[same].astype(np.float64), v_code[1:][same]
    k = visits - 1
    mean = _div(np.bincount(g_code, gaps, n), k)
    var = np.maximum(_div(np.bincount(g_code, gaps * gaps, n), k) - mean * mean, 0.0)
    f["gap_mean_days_log1p"], f["gap_std_days_log1p"] = _log(mean), _log(np.sqrt(var))
    f["recency_gap_ratio_log1p"] = _log(np.minimum(_div(recency, mean), spec.gap_ratio_cap))
    f["single_visit"] = (visits == 1).astype(np.float64)

    recent = np.bincount(v_code, v_last >= T - round(lc.recent_days * DAY_NS), n)
    profile = customer_profile(recency, tenure, recent, visits, spend, lc, rfm, index=h.ids)
    stage, tier = profile["lifecycle_stage"].to_numpy(), profile["value_tier"].to_numpy()
    f |= _one_hot(stage, LIFECYCLE_STAGES, "lifecycle") | _one_hot(tier, VALUE_TIERS, "value_tier")
    return f, profile


def _mix(h: _History, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Channel and category shares, discount sensitivity."""
    n, tx = len(h.ids), h.tx
    ch = _codes(tx, "channel", _token, spec.channels)
    cat = _codes(
        tx, "category", lambda v: (x := normalize_category(v)) and parent_of(x), spec.top_categories
    )
    f = _shares(h, ch, (*spec.channels, "other"), "channel")
    f |= _shares(h, cat, (*spec.top_categories, "other"), "category")
    if "discount" in tx:
        disc = tx["discount"].to_numpy(dtype=np.float64, na_value=np.nan)
        known, used = ~np.isnan(disc), np.nan_to_num(disc) > 0
    else:
        known = used = np.zeros(len(tx), dtype=bool)
    known_lines = np.bincount(h.code, known, n)
    f["discount_line_share"] = _div(np.bincount(h.code, used, n), known_lines)
    f["discount_spend_share"] = _div(
        np.bincount(h.code, h.amount * used, n), np.bincount(h.code, h.amount * known, n)
    )
    f["has_discount_data"] = (known_lines > 0).astype(np.float64)
    return f


def _interactions(h: _History, spec: FeatureSpec) -> dict[str, np.ndarray]:
    n, kinds, iw = len(h.ids), INTERACTION_KINDS, spec.interaction_window_days
    f = {f"interactions_{iw}d_log1p__{k}": np.zeros(n) for k in kinds}
    zero = ("complaints_log1p", "review_score_mean_scaled", "has_review_score")
    f |= {name: np.zeros(n) for name in (*zero, "has_interaction_data")}
    if h.ix is None:
        return f
    code = h.ix["code"].to_numpy(dtype=np.int64)
    kind = _codes(h.ix, "kind", _token, kinds)  # unlisted kinds match no column
    recent = timestamps_ns(h.ix["timestamp"], "interactions") >= h.cutoff_ns - iw * DAY_NS
    for i, k in enumerate(kinds):
        f[f"interactions_{iw}d_log1p__{k}"] = _log(np.bincount(code, recent & (kind == i), n))
    f["complaints_log1p"] = _log(np.bincount(code, kind == kinds.index("complaint"), n))
    if "score" in h.ix:
        score = h.ix["score"].to_numpy(dtype=np.float64, na_value=np.nan)
        rated = (kind == kinds.index("review")) & ~np.isnan(score)
        count = np.bincount(code, rated, n)
        mean = _div(np.bincount(code, np.where(rated, score, 0.0), n), count)
        f["review_score_mean_scaled"] = np.clip(mean / spec.review_score_max, 0.0, 1.0)
        f["has_review_score"] = (count > 0).astype(np.float64)
    f["has_interaction_data"] = np.ones(n)
    return f


def _membership(h: _History) -> dict[str, np.ndarray]:
    """Days since joining; ``joined_at`` at or after the cutoff counts as unknown."""
    n, cust = len(h.ids), h.customers
    tenure, has = np.zeros(n), np.zeros(n)
    if "joined_at" in cust:
        joined = timestamps_ns(cust["joined_at"], "customers")
        known = cust["joined_at"].notna().to_numpy() & (joined < h.cutoff_ns)
        has = known.astype(np.float64)
        tenure = (h.cutoff_ns - np.where(known, joined, h.cutoff_ns)) / DAY_NS
    return {"member_tenure_days_log1p": _log(tenure), "has_joined_at": has}


def build_features(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame,
    interactions: pd.DataFrame | None,
    cutoff: Any,
    *,
    spec: FeatureSpec | None = None,
    lifecycle: LifecycleConfig | None = None,
    rfm: RfmConfig | None = None,
) -> FeatureSnapshot:
    """Features at ``cutoff`` from rows strictly before it, in ``spec`` order.

    Pass the federation's shared ``spec``; without one the category columns come from this
    store's own categories (a warning says so) and will not line up with other stores.
    """
    T = as_cutoff(cutoff)
    h = _history(customers, transactions, interactions, T)
    if spec is None:
        vocab = CategoryVocabulary.fit(h.tx.get("category", []))
        spec = FeatureSpec.from_vocabulary(vocab)
        warnings.warn(
            "no FeatureSpec given: category columns are this store's own; pass the "
            "federation's FeatureSpec so columns line up across stores",
            stacklevel=2,
        )
    cols, profile = _activity(h, spec, lifecycle or LifecycleConfig(), rfm or RfmConfig())
    cols |= _mix(h, spec) | _interactions(h, spec) | _membership(h)
    cols |= attribute_one_hot(h.customers, spec)
    matrix = np.empty((len(h.ids), len(spec)), dtype=np.float32)
    for j, name in enumerate(spec.feature_names):
        matrix[:, j] = cols[name]
    return FeatureSnapshot(cutoff=T, customer_ids=h.ids, matrix=matrix, spec=spec, profile=profile)


def build_store_features(store: StoreFrames, cutoff: Any, **kwargs: Any) -> FeatureSnapshot:
    """:func:`build_features` on a de-identified store object."""
    return build_features(store.customers, store.transactions, store.interactions, cutoff, **kwargs)


def purchase_history(
    customer_ids: pd.Index, transactions: pd.DataFrame, cutoff: Any, vocabulary: CategoryVocabulary
) -> SparseRows:
    """Lines bought per customer and vocabulary category before ``cutoff`` (CSR counts).

    Rows follow ``customer_ids``; lines with a null category or of other customers are
    left out; categories outside the vocabulary count in column 0 (unknown).
    """
    require_columns(transactions, TRANSACTION_COLUMNS, "transactions")
    pre = before_cutoff(transactions, as_cutoff(cutoff), "transactions")
    ids = pd.Index(customer_ids)
    rows = ids.get_indexer(pre["customer_id"])
    cols = vocabulary.encode(pre["category"]) if "category" in pre else np.full(len(pre), -1)
    ok = (rows >= 0) & (cols >= 0)
    return SparseRows.from_pairs(rows[ok], cols[ok], len(ids), len(vocabulary), binary=False)
