"""Ranking metrics and baselines: hand-computed examples, UNKNOWN handling, tie-breaks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcrm.models.ranking import (
    ndcg_at_k,
    own_history_ranking,
    popularity_ranking,
    precision_at_k,
    recall_at_k,
    top_k,
)
from fedcrm.models.vocabulary import SparseRows


def sparse(rows: list[dict[int, float]], n_cols: int) -> SparseRows:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [col for row in rows for col in row]
    d = [v for row in rows for v in row.values()]
    keys = np.array(r, dtype=np.int64) * n_cols + np.array(c, dtype=np.int64)
    order = np.argsort(keys)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(np.array(r, dtype=np.int64), minlength=len(rows)), out=indptr[1:])
    return SparseRows(
        indptr, np.array(c, dtype=np.int64)[order], np.array(d, np.float32)[order], n_cols
    )


def multi_hot(rows: list[set[int]], n_cols: int) -> SparseRows:
    return sparse([dict.fromkeys(sorted(row), 1.0) for row in rows], n_cols)


# V = 5 columns (0 = UNKNOWN, 1..4 categories)
TRUTH = multi_hot([{1, 3}, {0, 2}, {0}, set()], 5)
RANKED = np.array([[3, 2, 1], [2, 4, 1], [1, 2, 3], [4, 3, 2]])


def test_hand_computed_at_2() -> None:
    # customer 0: truth {1, 3}, top-2 [3, 2] → hits [1, 0]
    #   recall 1/2, precision 1/2, DCG 1/log2(2) = 1, IDCG 1 + 1/log2(3) → nDCG 0.6131
    # customer 1: truth {0, 2} → {2} (UNKNOWN dropped), top-2 [2, 4] → hits [1, 0]
    #   recall 1, precision 1/2, DCG 1 = IDCG (one true item) → nDCG 1
    # customers 2 (only UNKNOWN) and 3 (nothing) have no truth: left out of the means
    assert recall_at_k(TRUTH, RANKED, k=2) == pytest.approx((0.5 + 1.0) / 2)
    assert precision_at_k(TRUTH, RANKED, k=2) == pytest.approx(0.5)
    ndcg0 = 1 / (1 + 1 / math.log2(3))
    assert ndcg0 == pytest.approx(0.6131, abs=1e-4)
    assert ndcg_at_k(TRUTH, RANKED, k=2) == pytest.approx((ndcg0 + 1.0) / 2)


def test_hand_computed_at_3() -> None:
    # customer 0: top-3 [3, 2, 1] → hits [1, 0, 1]: recall 1, precision 2/3,
    #   DCG 1 + 1/log2(4) = 1.5, IDCG 1 + 1/log2(3) → nDCG 0.9197
    # customer 1: top-3 [2, 4, 1] → hits [1, 0, 0]: recall 1, precision 1/3, nDCG 1
    assert recall_at_k(TRUTH, RANKED, k=3) == pytest.approx(1.0)
    assert precision_at_k(TRUTH, RANKED, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    ndcg0 = 1.5 / (1 + 1 / math.log2(3))
    assert ndcg0 == pytest.approx(0.9197, abs=1e-4)
    assert ndcg_at_k(TRUTH, RANKED, k=3) == pytest.approx((ndcg0 + 1.0) / 2)


def test_ideal_dcg_uses_min_of_truth_size_and_k() -> None:
    # truth {1, 2, 3, 4}, k = 2, top-2 [1, 2] → perfect: nDCG 1 (IDCG over 2 positions, not 4)
    truth = multi_hot([{1, 2, 3, 4}], 5)
    ranked = np.array([[1, 2]])
    assert ndcg_at_k(truth, ranked, k=2) == pytest.approx(1.0)
    assert recall_at_k(truth, ranked, k=2) == pytest.approx(0.5)
    # top-2 [3, 4] hits both too; [4, 0]-style rankings are refused below
    assert ndcg_at_k(truth, np.array([[3, 4]]), k=2) == pytest.approx(1.0)


def test_counts_as_truth_and_explicit_zeros_are_not_true() -> None:
    # a count matrix works as truth (any positive value); a stored 0 is not a true category
    truth = sparse([{1: 3.0, 2: 0.0}], 5)
    # truth {1}: top-2 [2, 1] → hit at position 2 → nDCG (1/log2(3)) / 1
    assert recall_at_k(truth, np.array([[2, 1]]), k=2) == pytest.approx(1.0)
    assert ndcg_at_k(truth, np.array([[2, 1]]), k=2) == pytest.approx(1 / math.log2(3))


def test_no_customer_with_truth_gives_nan() -> None:
    truth = multi_hot([{0}, set()], 5)
    ranked = np.array([[1, 2], [3, 4]])
    for metric in (recall_at_k, precision_at_k, ndcg_at_k):
        assert math.isnan(metric(truth, ranked, k=2))


def test_bad_rankings_are_refused() -> None:
    with pytest.raises(ValueError, match="column 0"):
        recall_at_k(TRUTH, np.array([[0, 1], [1, 2], [1, 2], [1, 2]]), k=2)
    with pytest.raises(ValueError, match="twice"):
        recall_at_k(TRUTH, np.array([[1, 1], [1, 2], [1, 2], [1, 2]]), k=2)
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(TRUTH, RANKED, k=4)  # only 3 columns ranked
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(TRUTH, RANKED[:2], k=2)
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(TRUTH, np.ones((4, 5), dtype=int), k=5)  # only 4 rankable columns
    with pytest.raises(ValueError, match="integer"):
        recall_at_k(TRUTH, RANKED.astype(float), k=2)


def test_top_k_excludes_unknown_and_breaks_ties_by_index() -> None:
    scores = np.array(
        [
            [9.0, 1.0, 5.0, 5.0, 2.0],  # column 0 is the best score but never ranked
            [0.0, 1.0, 1.0, 1.0, 1.0],  # all tied: lowest indices first
            [0.0, 3.0, 1.0, 1.0, 2.0],  # the k-th place is a tie across the boundary
        ]
    )
    assert top_k(scores, 2).tolist() == [[2, 3], [1, 2], [1, 4]]
    assert top_k(scores, 3).tolist() == [[2, 3, 4], [1, 2, 3], [1, 4, 2]]
    assert top_k(scores, 2).dtype == np.int64
    with pytest.raises(ValueError, match="exceeds"):
        top_k(scores, 5)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.0, np.nan, 1.0]]), 1)


def test_top_k_matches_a_stable_full_sort() -> None:
    rng = np.random.default_rng(0)
    ints = rng.integers(0, 6, size=(300, 40))  # many ties
    expected = np.argsort(-ints[:, 1:], axis=1, kind="stable")[:, :7] + 1
    np.testing.assert_array_equal(top_k(ints, 7), expected)
    scores = ints.astype(np.float32)
    scores[:, 5] = -np.inf
    expected = np.argsort(-scores[:, 1:], axis=1, kind="stable")[:, :7] + 1
    np.testing.assert_array_equal(top_k(scores, 7), expected)


def test_popularity_ranking_is_the_same_for_everyone() -> None:
    popularity = np.array([100.0, 5.0, 9.0, 9.0, 1.0])  # UNKNOWN most popular: never listed
    ranked = popularity_ranking(popularity, 2, 3)
    assert ranked.tolist() == [[2, 3, 1], [2, 3, 1]]  # 2 and 3 tie at 9: index order
    assert popularity_ranking(popularity, 0, 3).shape == (0, 3)


def test_own_history_ranking_buys_again_then_fills_with_popular() -> None:
    # popularity order (column 0 aside): 2 (9), 3 (9), 5 (7), 1 (5), 4 (1)
    popularity = np.array([100.0, 5.0, 9.0, 9.0, 1.0, 7.0])
    history = sparse(
        [
            {0: 5.0, 1: 1.0, 3: 1.0, 4: 2.0},  # 4 (2), then 1 and 3 tie → 3 (more popular)
            {},  # no history: the popularity ranking
            {1: 1.0, 2: 1.0, 3: 1.0, 4: 3.0, 5: 1.0},  # more own categories than k
            {2: 1.0},  # own category is also the most popular: not listed twice
            {1: 1.0, 3: 1.0},
        ],
        6,
    )
    ranked = own_history_ranking(history, popularity, 4)
    assert ranked.tolist() == [
        [4, 3, 1, 2],
        [2, 3, 5, 1],
        [4, 2, 3, 5],
        [2, 3, 5, 1],
        [3, 1, 2, 5],
    ]
    assert own_history_ranking(history, popularity, 1).tolist() == [[4], [2], [4], [2], [3]]
    with pytest.raises(ValueError, match="columns"):
        own_history_ranking(history, popularity[:5], 2)


def test_own_history_ranking_at_scale_has_no_duplicates_or_unknown() -> None:
    rng = np.random.default_rng(1)
    n, v, k = 2_000, 50, 10
    rows = rng.integers(0, n, 20_000)
    cols = rng.integers(0, v, 20_000)
    history = SparseRows.from_pairs(rows, cols, n, v, binary=False)
    ranked = own_history_ranking(history, rng.random(v), k)
    assert ranked.shape == (n, k) and (ranked >= 1).all() and (ranked < v).all()
    ordered = np.sort(ranked, axis=1)
    assert not (ordered[:, 1:] == ordered[:, :-1]).any()
    # every listed own category comes before any category the customer never bought
    dense = history.to_dense()
    bought = np.take_along_axis(dense, ranked, axis=1) > 0
    assert not (~bought[:, :-1] & bought[:, 1:]).any()
