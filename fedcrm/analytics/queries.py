"""The federated analytics queries: public cells, a per-customer bound, store counts, a table.

A query is answered in four steps; this module holds all but the noise and the sums:

1. **cells**, fixed by :func:`build_query` from public inputs only (:class:`QueryContext`:
   store formats, the chain's taxonomy, cohort months, contribution bounds), never from a
   store's data: every store answers the same vector and the cells reveal nothing;
2. **a contribution bound**, ``l2_sensitivity``: the largest L2 norm of the change one customer
   can make to a store's count vector. :meth:`Query.counts` enforces it by clipping each
   customer's contribution (e.g. their ``max_categories_per_customer`` most-bought categories);
3. **counts**: the exact integer vector of one store's prepared (consented, de-identified) data.
   Noise (:mod:`fedcrm.analytics.mechanism`), secure aggregation and suppression are elsewhere;
4. **a table** of the chain-wide noisy totals (:meth:`Query.table`), post-processing only:
   noisy counts are clipped at 0, suppressed cells give NaN, and derived values use released
   cells only. Proportions (share, rate, confidence, retention) are capped at 1; lift is not.

Data windows: category queries read purchases in the 12 months before the cutoff,
``[T - 12 months, T)``; lifecycle, value tier and churn come from the feature snapshot at ``T``
(churn: the observed labels of ``[T, T + H)``); cohorts use every purchase before ``T``. Only the
feature population (consented customers with a purchase before ``T``) is counted. A *basket* is
one customer's lines with the same timestamp: the contract's ``transaction_id`` names a line,
not a basket, and the privacy boundary drops it.

Cells and bounds (C = ``max_categories_per_customer``, P = ``max_pairs_per_customer``, R =
``retention_months``, K = the number of consent purposes):

=================== ================================ ================================= ===========
query               dimensions                       example cell                      Δ₂
=================== ================================ ================================= ===========
lifecycle_funnel    stage                            ("mature",)                       1
lifecycle_by_format format, stage                    ("mall", "mature")                1
value_by_lifecycle  value_tier, stage                ("high", "new")                   1
churn_by_segment    measure, segment                 ("churned", "high/new")           √2
category_shares     category                         ("baby/toys",)                    √(1+C)
co_purchase         kind, antecedent, consequent     ("pair", "baby", "food")          √(1+C+P)
purchase_sequence   kind, antecedent, consequent     ("pair", "baby/a", "baby/b")      √(1+C+P)
cohort_retention    cohort, month                    ("2025-03", "2") or ("T-8", "2")  √(1+R)
consent_coverage    purpose                          ("customers",), ("marketing",)    √(1+K)
=================== ================================ ================================= ===========

``churn_by_segment`` segments are value tier × lifecycle stage ("high/new", ...: 15), so each
customer is in one segment. ``category_shares`` starts with ``("__customers__",)``: customers
with a known category in the window, the shares' denominator. The pair queries' cells are
``("customers", "", "")`` (the same denominator), one ``("single", a, "")`` per category and one
``("pair", a, b)`` per pair; co-purchase pairs are unordered (a < b), sequence pairs ordered
(a bought first). Without ``cohort_start`` cohorts are named by their offset from the cutoff's
month (``"T-12"`` ... ``"T-1"``), since the cells cannot depend on the run's cutoff.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedcrm.data.contract import PURPOSES
from fedcrm.data.store import StoreData
from fedcrm.errors import ConfigError, DataError
from fedcrm.models.lifecycle import LIFECYCLE_STAGES, VALUE_TIERS
from fedcrm.models.vocabulary import CategoryVocabulary
from fedcrm.privacy.consent import filter_by_consent

if TYPE_CHECKING:
    from fedcrm.clients.preparation import PreparedStore

__all__ = [
    "LIFECYCLE_STAGES",
    "MAX_PAIR_CATEGORIES",
    "QUERY_NAMES",
    "VALUE_TIERS",
    "WINDOW_MONTHS",
    "Query",
    "QueryContext",
    "StoreView",
    "build_query",
    "consent_coverage_counts",
]

#: Category queries read the purchases of this many months before the cutoff.
WINDOW_MONTHS = 12
#: Category-level pair queries are refused above this many categories (cells grow as n²).
MAX_PAIR_CATEGORIES = 200
PAIR_LEVELS: tuple[str, ...] = ("parent", "category")
CUSTOMERS = "customers"
CATEGORY_CUSTOMERS = "__customers__"
MEASURES: tuple[str, ...] = ("customers", "churned")
SEGMENTS: tuple[str, ...] = tuple(f"{t}/{s}" for t in VALUE_TIERS for s in LIFECYCLE_STAGES)


def _whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} (got {value!r})")


def _month_start(value: object) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cohort_start: not a date ({exc})") from None
    if pd.isna(ts) or ts.tzinfo is not None:
        raise ConfigError("cohort_start: give a store-local date without a time zone")
    return ts.to_period("M").to_timestamp()


@dataclass(frozen=True)
class QueryContext:
    """Public inputs the cells may depend on (chain-level facts, never a store's data)."""

    formats: tuple[str, ...] = ("flagship", "mall", "community", "livestream", "other")
    vocabulary: CategoryVocabulary | None = None  # the chain's taxonomy; None: no category query
    cohort_start: pd.Timestamp | None = None  # first cohort month; None: cutoff - 12 months
    cohort_months: int = 12
    retention_months: int = 6
    max_categories_per_customer: int = 5
    max_pairs_per_customer: int = 10
    pair_level: str = "parent"  # "parent" (top-level categories) | "category"

    def __post_init__(self) -> None:
        formats = tuple(self.formats)
        if not formats or len(set(formats)) != len(formats):
            raise ConfigError("formats must be a non-empty list of distinct names")
        if not all(isinstance(f, str) and f for f in formats):
            raise ConfigError("formats must be non-empty strings")
        object.__setattr__(self, "formats", formats)
        if self.cohort_start is not None:
            object.__setattr__(self, "cohort_start", _month_start(self.cohort_start))
        _whole("cohort_months", self.cohort_months, 1)
        _whole("retention_months", self.retention_months, 0)
        _whole("max_categories_per_customer", self.max_categories_per_customer, 1)
        _whole("max_pairs_per_customer", self.max_pairs_per_customer, 1)
        if self.pair_level not in PAIR_LEVELS:
            raise ConfigError(
                f"pair_level must be one of {', '.join(PAIR_LEVELS)} (got {self.pair_level!r})"
            )


@dataclass(frozen=True)
class StoreView:
    """What a store's query handler gives a query: its prepared analytics data + public facts.

    ``consent_coverage`` holds :func:`consent_coverage_counts` of the raw consent ledger (the
    analytics-consented population cannot measure coverage); only that query needs it.
    """

    store_format: str  # the manifest's format (public); unlisted formats count as "other"
    prepared: PreparedStore = field(repr=False)  # consented for analytics, de-identified
    consent_coverage: Mapping[str, int] | None = field(default=None, repr=False)


CountFn = Callable[[StoreView], np.ndarray]
DeriveFn = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Query:
    """One analytics query: public cells, the per-customer L2 bound, counts and a table."""

    name: str
    title: str
    dimensions: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    l2_sensitivity: float
    unit: str
    chart: str
    description: str
    count_fn: CountFn = field(repr=False, compare=False)
    derive: DeriveFn = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.cells or any(len(c) != len(self.dimensions) for c in self.cells):
            raise ValueError(f"{self.name}: every cell needs one label per dimension")
        if len(set(self.cells)) != len(self.cells):
            raise ValueError(f"{self.name}: cells must be distinct")
        if not self.l2_sensitivity > 0:
            raise ValueError(f"{self.name}: l2_sensitivity must be > 0")

    def counts(self, store: StoreView) -> np.ndarray:
        """The exact int64 count vector of one store, each customer's part clipped to the bound."""
        out = np.asarray(self.count_fn(store))
        if out.shape != (len(self.cells),):
            raise ValueError(f"{self.name}: {out.shape} counts for {len(self.cells)} cells")
        return out.astype(np.int64)

    def table(self, totals: np.ndarray, released: np.ndarray) -> pd.DataFrame:
        """The noisy chain-wide ``totals`` as a table; ``released`` False marks suppressed cells.

        One row per cell (``churn_by_segment``: per segment) with the dimension columns,
        ``count`` (clipped at 0, NaN when suppressed), ``suppressed`` and derived columns.
        """
        values = np.asarray(totals, dtype=np.float64)
        mask = np.asarray(released, dtype=bool)
        if values.shape != (len(self.cells),) or mask.shape != values.shape:
            raise ValueError(
                f"{self.name}: need {len(self.cells)} totals and release flags "
                f"(got {values.shape} and {mask.shape})"
            )
        frame = pd.DataFrame(list(self.cells), columns=list(self.dimensions), dtype="object")
        frame["count"] = np.where(mask, np.maximum(values, 0.0), np.nan)
        frame["suppressed"] = ~mask
        return self.derive(frame)


# -- store side ---------------------------------------------------------------------------


def _bincount(index: np.ndarray, n: int) -> np.ndarray:
    index = np.asarray(index, dtype=np.int64)
    return np.bincount(index[index >= 0], minlength=n).astype(np.int64)


def _profile_codes(store: StoreView, column: str, labels: tuple[str, ...]) -> np.ndarray:
    """Position of each customer's ``column`` value in ``labels`` (-1 if missing or unlisted)."""
    values = store.prepared.features.profile[column].astype("object")
    return pd.Categorical(values, categories=list(labels)).codes.astype(np.int64)


def _segment_codes(store: StoreView) -> np.ndarray:
    """Value tier × stage index of each customer (-1 when either is missing)."""
    stage = _profile_codes(store, "lifecycle_stage", LIFECYCLE_STAGES)
    tier = _profile_codes(store, "value_tier", VALUE_TIERS)
    return np.where((stage >= 0) & (tier >= 0), tier * len(LIFECYCLE_STAGES) + stage, -1)


def _format_index(context: QueryContext, store_format: str) -> int:
    if store_format in context.formats:
        return context.formats.index(store_format)
    if "other" in context.formats:
        return context.formats.index("other")
    raise ConfigError(f"store format {store_format!r} is not one of the query's formats")


def _transactions(store: StoreView) -> pd.DataFrame:
    """The store's transactions before the cutoff, of the feature population, with a
    ``customer`` column (row of the customer in ``features.customer_ids``)."""
    prepared = store.prepared
    tx = prepared.transactions
    if tx is None:
        raise DataError("the store's preparation kept no transactions")
    tx = tx.loc[tx["timestamp"] < prepared.features.cutoff]
    customer = pd.Index(prepared.features.customer_ids).get_indexer(tx["customer_id"])
    return tx.loc[customer >= 0].assign(customer=customer[customer >= 0])


def _window_lines(store: StoreView, vocabulary: CategoryVocabulary, level: str) -> pd.DataFrame:
    """``customer``, ``time`` and ``item`` (0-based index into the level's names) of each line
    with a known category in the window before the cutoff."""
    tx = _transactions(store)
    start = store.prepared.features.cutoff - pd.DateOffset(months=WINDOW_MONTHS)
    tx = tx.loc[tx["timestamp"] >= start]
    if "category" not in tx.columns:
        tx = tx.assign(category=None)
    encode = vocabulary.encode if level == "category" else vocabulary.encode_parents
    item = encode(tx["category"]) - 1  # drops the unknown bucket (0) and nulls (-1)
    keep = item >= 0
    return pd.DataFrame(
        {
            "customer": tx["customer"].to_numpy()[keep],
            "time": tx["timestamp"].to_numpy()[keep],
            "item": item[keep],
        }
    )


def _top(frame: pd.DataFrame, k: int, by: list[str], ascending: list[bool]) -> pd.DataFrame:
    """Each customer's first ``k`` rows of ``frame`` in the order ``by``: the clipping."""
    ordered = frame.sort_values(["customer", *by], ascending=[True, *ascending], kind="stable")
    return ordered.loc[ordered.groupby("customer").cumcount().to_numpy() < k]


def _top_items(lines: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each customer's ``k`` most-bought items (by lines; ties by name)."""
    per = lines.groupby(["customer", "item"]).size().rename("lines").reset_index()
    return _top(per, k, ["lines", "item"], [False, True])


def _pair_names(context: QueryContext) -> tuple[str, ...]:
    vocabulary = _vocabulary(context)
    return vocabulary.parents if context.pair_level == "parent" else vocabulary.categories


def _vocabulary(context: QueryContext) -> CategoryVocabulary:
    if context.vocabulary is None:
        raise ConfigError("this query needs the chain's category vocabulary (context has none)")
    return context.vocabulary


def _lifecycle_counts(store: StoreView) -> np.ndarray:
    stage = _profile_codes(store, "lifecycle_stage", LIFECYCLE_STAGES)
    return _bincount(stage, len(LIFECYCLE_STAGES))


def _format_counts(context: QueryContext, store: StoreView) -> np.ndarray:
    out = np.zeros((len(context.formats), len(LIFECYCLE_STAGES)), dtype=np.int64)
    out[_format_index(context, store.store_format)] = _lifecycle_counts(store)
    return out.ravel()


def _value_counts(store: StoreView) -> np.ndarray:
    return _bincount(_segment_codes(store), len(SEGMENTS))


def _churn_counts(store: StoreView) -> np.ndarray:
    labels = store.prepared.labels
    if labels is None:
        raise DataError("the store has no churn labels for this cutoff/horizon")
    segment = _segment_codes(store)
    row = pd.Index(labels.customer_ids).get_indexer(store.prepared.features.customer_ids)
    segment = np.where(row >= 0, segment, -1)  # a customer without a label is not counted
    churned = np.zeros(len(row), dtype=bool)
    churned[row >= 0] = np.asarray(labels.churn)[row[row >= 0]] > 0.5
    n = len(SEGMENTS)
    return np.concatenate([_bincount(segment, n), _bincount(np.where(churned, segment, -1), n)])


def _category_counts(context: QueryContext, store: StoreView) -> np.ndarray:
    vocabulary = _vocabulary(context)
    lines = _window_lines(store, vocabulary, "category")
    top = _top_items(lines, context.max_categories_per_customer)
    singles = _bincount(top["item"].to_numpy(), len(vocabulary.categories))
    return np.concatenate([[lines["customer"].nunique()], singles])


def _pair_index(m: int, ordered: bool) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The pairs of ``m`` items in cell order, and a matrix item × item → pair position."""
    pairs = list(
        itertools.permutations(range(m), 2) if ordered else itertools.combinations(range(m), 2)
    )
    index = np.full((m, m), -1, dtype=np.int64)
    if pairs:
        a, b = np.array(pairs).T
        index[a, b] = np.arange(len(pairs))
    return pairs, index


def _pair_counts(context: QueryContext, store: StoreView, *, ordered: bool) -> np.ndarray:
    names = _pair_names(context)
    lines = _window_lines(store, _vocabulary(context), context.pair_level)
    singles = _top_items(lines, context.max_categories_per_customer)
    if ordered:  # a's first purchase strictly before b's; closest successions first
        first = lines.groupby(["customer", "item"])["time"].min().reset_index()
        both = first.merge(first, on="customer", suffixes=("_a", "_b"))
        both = both.loc[both["time_a"] < both["time_b"]]
        both = both.assign(gap=both["time_b"] - both["time_a"])
        top = _top(both, context.max_pairs_per_customer, ["gap", "item_a", "item_b"], [True] * 3)
    else:  # bought in one basket; the pairs of most baskets first
        items = lines.drop_duplicates(["customer", "time", "item"])
        both = items.merge(items, on=["customer", "time"], suffixes=("_a", "_b"))
        both = both.loc[both["item_a"] < both["item_b"]]
        per = both.groupby(["customer", "item_a", "item_b"]).size().rename("baskets")
        top = _top(
            per.reset_index(),
            context.max_pairs_per_customer,
            ["baskets", "item_a", "item_b"],
            [False, True, True],
        )
    pairs, index = _pair_index(len(names), ordered)
    cells = index[top["item_a"].to_numpy(np.int64), top["item_b"].to_numpy(np.int64)]
    return np.concatenate(
        [
            [lines["customer"].nunique()],
            _bincount(singles["item"].to_numpy(), len(names)),
            _bincount(cells, len(pairs)),
        ]
    )


def _month_number(ts: pd.Series | pd.Timestamp) -> np.ndarray | int:
    if isinstance(ts, pd.Timestamp):
        return ts.year * 12 + ts.month - 1
    return (ts.dt.year * 12 + ts.dt.month - 1).to_numpy(np.int64)


def _cohort_counts(context: QueryContext, store: StoreView) -> np.ndarray:
    tx = _transactions(store)
    cutoff_month = int(_month_number(store.prepared.features.cutoff))
    start = (
        cutoff_month - WINDOW_MONTHS
        if context.cohort_start is None
        else int(_month_number(context.cohort_start))
    )
    visits = pd.DataFrame(
        {"customer": tx["customer"].to_numpy(), "month": _month_number(tx["timestamp"])}
    )
    visits = visits.drop_duplicates()
    first = visits.groupby("customer")["month"].transform("min").to_numpy()
    cohort = first - start
    offset = visits["month"].to_numpy() - first
    keep = (
        (cohort >= 0)
        & (cohort < context.cohort_months)
        & (offset <= context.retention_months)
        & ((offset == 0) | (visits["month"].to_numpy() < cutoff_month))  # full months only
    )
    width = context.retention_months + 1
    cells = np.where(keep, cohort * width + offset, -1)
    return _bincount(cells, context.cohort_months * width)


def _coverage_counts(store: StoreView) -> np.ndarray:
    coverage = store.consent_coverage
    if coverage is None:
        raise DataError("the store gave no consent coverage counts (from its consent ledger)")
    keys = (CUSTOMERS, *PURPOSES)
    missing = [k for k in keys if k not in coverage]
    if missing:
        raise DataError(f"the consent coverage counts lack {', '.join(missing)}")
    values = [coverage[k] for k in keys]
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in values):
        raise DataError("consent coverage counts must be integers")
    out = np.array(values, dtype=np.int64)
    if (out < 0).any() or (out[1:] > out[0]).any():
        raise DataError("consent coverage counts must be >= 0 and at most the customers on file")
    return out


def consent_coverage_counts(store: StoreData, as_of: pd.Timestamp) -> dict[str, int]:
    """Customers on file (``"customers"``) and, per consent purpose, how many have that consent
    in force as of ``as_of``, by the ledger rules of :func:`~fedcrm.privacy.consent.
    filter_by_consent`. Counts only; computed from the raw ledger inside the store."""
    counts: dict[str, int] = {}
    for purpose in PURPOSES:
        report = filter_by_consent(store, purpose, as_of).report
        counts.setdefault(CUSTOMERS, report.total_customers)
        counts[purpose] = report.included
    return counts


# -- tables -------------------------------------------------------------------------------


def _ratio(num: object, den: object) -> np.ndarray:
    """``num / den`` where both are released and ``den > 0``, else NaN."""
    n, d = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.full(n.shape, np.nan)
    np.divide(n, d, out=out, where=np.isfinite(n) & np.isfinite(d) & (d > 0))
    return out


def _proportion(num: object, den: object) -> np.ndarray:
    """:func:`_ratio` capped at 1 (noise can push a part above its whole)."""
    return np.minimum(_ratio(num, den), 1.0)


def _released_sum(values: pd.Series) -> float:
    return float(values.sum(min_count=1))  # NaN when nothing is released


def _share_of_total(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(share=_proportion(frame["count"], _released_sum(frame["count"])))


def _share_within_format(frame: pd.DataFrame) -> pd.DataFrame:
    whole = frame.groupby("format", sort=False)["count"].transform(_released_sum)
    return frame.assign(share=_proportion(frame["count"], whole))


def _share_of_first(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the first cell (the customers); NaN on that row."""
    share = _proportion(frame["count"], frame["count"].iloc[0])
    share[0] = np.nan
    return frame.assign(share=share)


def _churn_table(frame: pd.DataFrame) -> pd.DataFrame:
    n = len(SEGMENTS)
    customers, churned = frame.iloc[:n], frame.iloc[n:]
    tier, stage = zip(*(s.split("/") for s in SEGMENTS), strict=True)
    out = pd.DataFrame({"segment": list(SEGMENTS), "value_tier": tier, "stage": stage})
    out["customers"] = customers["count"].to_numpy()
    out["churned"] = churned["count"].to_numpy()
    out["suppressed"] = customers["suppressed"].to_numpy() | churned["suppressed"].to_numpy()
    out["rate"] = _proportion(out["churned"], out["customers"])
    return out


def _pair_table(frame: pd.DataFrame, *, ordered: bool) -> pd.DataFrame:
    """Support, confidence and lift of each pair row released with both of its singles."""
    kind = frame["kind"].to_numpy()
    is_pair = kind == "pair"
    customers = frame["count"].iloc[0]
    single = frame.loc[kind == "single"].set_index("antecedent")["count"]
    count_a = np.where(is_pair, frame["antecedent"].map(single), np.nan).astype(np.float64)
    count_b = np.where(is_pair, frame["consequent"].map(single), np.nan).astype(np.float64)
    hidden = is_pair & ~(np.isfinite(count_a) & np.isfinite(count_b))
    count = np.where(hidden, np.nan, frame["count"].to_numpy(np.float64))
    support = _proportion(count, customers)
    support[0] = np.nan
    out = frame.assign(count=count, suppressed=frame["suppressed"].to_numpy() | hidden)
    out["support"] = support
    if ordered:
        out["confidence"] = _proportion(count, count_a)
    else:
        out["confidence_ab"] = _proportion(count, count_a)
        out["confidence_ba"] = _proportion(count, count_b)
    expected = _proportion(count_a, customers) * _proportion(count_b, customers)
    out["lift"] = _ratio(support, expected)
    return out


def _retention_table(frame: pd.DataFrame) -> pd.DataFrame:
    first = frame.loc[frame["month"] == "0"].set_index("cohort")["count"]
    return frame.assign(retention=_proportion(frame["count"], frame["cohort"].map(first)))


# -- the queries --------------------------------------------------------------------------


def _lifecycle_funnel(context: QueryContext) -> Query:
    return Query(
        name="lifecycle_funnel",
        title="Lifecycle funnel",
        dimensions=("stage",),
        cells=tuple((s,) for s in LIFECYCLE_STAGES),
        l2_sensitivity=1.0,
        unit="customers",
        chart="bar",
        description="Customers per lifecycle stage at the cutoff; each customer counts once.",
        count_fn=_lifecycle_counts,
        derive=_share_of_total,
    )


def _lifecycle_by_format(context: QueryContext) -> Query:
    return Query(
        name="lifecycle_by_format",
        title="Lifecycle stages by store format",
        dimensions=("format", "stage"),
        cells=tuple(itertools.product(context.formats, LIFECYCLE_STAGES)),
        l2_sensitivity=1.0,
        unit="customers",
        chart="grouped_bar",
        description=(
            "Customers per lifecycle stage and store format; a store answers in its own "
            "format's cells. Share: of the format's released customers."
        ),
        count_fn=lambda store: _format_counts(context, store),
        derive=_share_within_format,
    )


def _value_by_lifecycle(context: QueryContext) -> Query:
    return Query(
        name="value_by_lifecycle",
        title="RFM value tier by lifecycle stage",
        dimensions=("value_tier", "stage"),
        cells=tuple(itertools.product(VALUE_TIERS, LIFECYCLE_STAGES)),
        l2_sensitivity=1.0,
        unit="customers",
        chart="heatmap",
        description=(
            "Customers per RFM value tier (store-relative quintiles) and lifecycle stage; "
            "share: of all released customers."
        ),
        count_fn=_value_counts,
        derive=_share_of_total,
    )


def _churn_by_segment(context: QueryContext) -> Query:
    return Query(
        name="churn_by_segment",
        title="Observed churn by segment",
        dimensions=("measure", "segment"),
        cells=tuple(itertools.product(MEASURES, SEGMENTS)),
        l2_sensitivity=math.sqrt(2.0),
        unit="customers",
        chart="bar",
        description=(
            "Customers and churned customers (no purchase in the label horizon) per value "
            "tier × lifecycle segment; the table has one row per segment with the churn rate."
        ),
        count_fn=_churn_counts,
        derive=_churn_table,
    )


def _category_shares(context: QueryContext) -> Query:
    vocabulary = _vocabulary(context)
    bound = context.max_categories_per_customer
    return Query(
        name="category_shares",
        title="Category reach",
        dimensions=("category",),
        cells=((CATEGORY_CUSTOMERS,), *((c,) for c in vocabulary.categories)),
        l2_sensitivity=math.sqrt(1 + bound),
        unit="customers",
        chart="bar",
        description=(
            f"Customers buying each category in the {WINDOW_MONTHS} months before the cutoff "
            f"(at most their {bound} most-bought categories), after a first cell of customers "
            "with any categorised purchase; share: of those customers."
        ),
        count_fn=lambda store: _category_counts(context, store),
        derive=_share_of_first,
    )


def _pair_cells(names: tuple[str, ...], ordered: bool) -> tuple[tuple[str, ...], ...]:
    pairs, _ = _pair_index(len(names), ordered)
    return (
        (CUSTOMERS, "", ""),
        *(("single", n, "") for n in names),
        *(("pair", names[a], names[b]) for a, b in pairs),
    )


def _pair_query(context: QueryContext, *, ordered: bool) -> Query:
    names = _pair_names(context)
    if context.pair_level == "category" and len(names) > MAX_PAIR_CATEGORIES:
        raise ConfigError(
            f"pair_level 'category' allows at most {MAX_PAIR_CATEGORIES} categories "
            f"(the vocabulary has {len(names)}); use pair_level 'parent'"
        )
    c, p = context.max_categories_per_customer, context.max_pairs_per_customer
    bounds = f"at most {c} categories and {p} pairs per customer"
    if ordered:
        name, title, what = (
            "purchase_sequence",
            "Purchase sequences",
            "a customer's first purchase of A strictly before their first of B",
        )
    else:
        name, title, what = "co_purchase", "Co-purchases", "A and B bought in one basket"
    return Query(
        name=name,
        title=title,
        dimensions=("kind", "antecedent", "consequent"),
        cells=_pair_cells(names, ordered),
        l2_sensitivity=math.sqrt(1 + c + p),
        unit="customers",
        chart="heatmap",
        description=(
            f"Customers with {what} ({context.pair_level} level, {WINDOW_MONTHS} months before "
            f"the cutoff; {bounds}), customers per category and customers with any; support, "
            "confidence and lift of each pair released with both of its categories."
        ),
        count_fn=lambda store: _pair_counts(context, store, ordered=ordered),
        derive=lambda frame: _pair_table(frame, ordered=ordered),
    )


def _cohort_labels(context: QueryContext) -> tuple[str, ...]:
    if context.cohort_start is None:
        return tuple(f"T{i - WINDOW_MONTHS:+d}" for i in range(context.cohort_months))
    months = pd.period_range(context.cohort_start, periods=context.cohort_months, freq="M")
    return tuple(str(m) for m in months)


def _cohort_retention(context: QueryContext) -> Query:
    months = tuple(str(m) for m in range(context.retention_months + 1))
    return Query(
        name="cohort_retention",
        title="Cohort retention",
        dimensions=("cohort", "month"),
        cells=tuple(itertools.product(_cohort_labels(context), months)),
        l2_sensitivity=math.sqrt(context.retention_months + 1),
        unit="customers",
        chart="line",
        description=(
            "Customers of each first-purchase month who bought again m months later (month 0: "
            "the whole cohort; only months complete before the cutoff); retention: of month 0."
        ),
        count_fn=lambda store: _cohort_counts(context, store),
        derive=_retention_table,
    )


def _consent_coverage(context: QueryContext) -> Query:
    return Query(
        name="consent_coverage",
        title="Consent coverage",
        dimensions=("purpose",),
        cells=((CUSTOMERS,), *((p,) for p in PURPOSES)),
        l2_sensitivity=math.sqrt(1 + len(PURPOSES)),
        unit="customers",
        chart="bar",
        description=(
            "Customers on file and those with each consent purpose in force at the cutoff "
            "(from the consent ledger); share: of customers on file."
        ),
        count_fn=_coverage_counts,
        derive=_share_of_first,
    )


_BUILDERS: dict[str, Callable[[QueryContext], Query]] = {
    "lifecycle_funnel": _lifecycle_funnel,
    "lifecycle_by_format": _lifecycle_by_format,
    "value_by_lifecycle": _value_by_lifecycle,
    "churn_by_segment": _churn_by_segment,
    "category_shares": _category_shares,
    "co_purchase": lambda context: _pair_query(context, ordered=False),
    "purchase_sequence": lambda context: _pair_query(context, ordered=True),
    "cohort_retention": _cohort_retention,
    "consent_coverage": _consent_coverage,
}
QUERY_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_query(name: str, context: QueryContext) -> Query:
    """The query ``name`` with its cells fixed by ``context``.

    :class:`ConfigError` for an unknown name (listing the valid ones) or a category query
    without a vocabulary in ``context``.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown query {name!r}; valid queries: {', '.join(QUERY_NAMES)}")
    return builder(context)
