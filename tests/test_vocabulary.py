"""CategoryVocabulary and SparseRows: normalisation, pruning, hierarchy, JSON, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedcrm.errors import ConfigError
from fedcrm.models.vocabulary import (
    UNKNOWN,
    CategoryVocabulary,
    SparseRows,
    map_values,
    normalize_category,
    parent_of,
)

VALUES = [
    "baby/infant_formula",
    "baby/infant_formula",
    "Baby / Infant_Formula ",  # same category once normalised
    "baby/diapers",
    "food/snacks/chips",
    "food/snacks/chips",
    "toys",
    None,
]


def test_normalisation_and_parent() -> None:
    assert normalize_category(" Baby / Infant_Formula ") == "baby/infant_formula"
    assert normalize_category("a//b/") == "a/b"
    assert normalize_category(None) is None
    assert normalize_category(float("nan")) is None
    assert normalize_category(" / ") is None
    assert parent_of("food/snacks/chips") == "food"
    assert parent_of("toys") == "toys"


def test_fit_orders_by_name_with_unknown_first() -> None:
    vocab = CategoryVocabulary.fit(VALUES)
    assert vocab.categories == ("baby/diapers", "baby/infant_formula", "food/snacks/chips", "toys")
    assert vocab.parents == ("baby", "food", "toys")
    assert vocab.tokens[0] == UNKNOWN and len(vocab) == 5
    assert vocab.index("baby/diapers") == 1
    assert vocab.index("TOYS") == 4
    assert vocab.index("garden/tools") == 0  # unknown bucket
    assert vocab.parent_tokens == (UNKNOWN, "baby", "food", "toys")
    assert vocab.parent_index("food/snacks/chips") == 2
    assert vocab.parent_index("garden/tools") == 0


def test_fit_is_deterministic_whatever_the_input_order() -> None:
    rng = np.random.default_rng(7)
    shuffled = list(np.array(VALUES, dtype=object)[rng.permutation(len(VALUES))])
    assert CategoryVocabulary.fit(shuffled) == CategoryVocabulary.fit(VALUES)
    assert CategoryVocabulary.fit(pd.Series(VALUES, dtype="str")) == CategoryVocabulary.fit(VALUES)


def test_min_count_prunes_leaves_but_keeps_a_frequent_parent() -> None:
    vocab = CategoryVocabulary.fit(VALUES, min_count=2)
    # baby/diapers (1) and toys (1) are pruned; "baby" keeps 4 lines in total, "toys" only 1.
    assert vocab.categories == ("baby/infant_formula", "food/snacks/chips")
    assert vocab.parents == ("baby", "food")
    assert vocab.index("baby/diapers") == 0
    assert vocab.parent_index("baby/diapers") == 1  # still has its parent
    assert vocab.parent_index("toys") == 0


def test_max_size_keeps_most_frequent_then_sorts_by_name() -> None:
    vocab = CategoryVocabulary.fit(VALUES, max_size=2)
    assert vocab.categories == ("baby/infant_formula", "food/snacks/chips")
    # ties are broken by name: among the 1-count leaves "baby/diapers" comes first
    assert CategoryVocabulary.fit(VALUES, max_size=3).categories[0] == "baby/diapers"


def test_fit_rejects_bad_limits() -> None:
    with pytest.raises(ConfigError, match="min_count"):
        CategoryVocabulary.fit(VALUES, min_count=0)


def test_encode_maps_nulls_to_minus_one_and_unknowns_to_zero() -> None:
    vocab = CategoryVocabulary.fit(VALUES)
    values = pd.Series(["toys", None, "garden/tools", "BABY/diapers"], dtype="str")
    assert vocab.encode(values).tolist() == [4, -1, 0, 1]
    assert vocab.encode_parents(values).tolist() == [3, -1, 0, 1]


def test_json_roundtrip_keeps_indices_and_holds_no_counts() -> None:
    vocab = CategoryVocabulary.fit(VALUES, min_count=2)
    text = vocab.to_json()
    again = CategoryVocabulary.from_json(text)
    assert again == vocab
    assert again.encode(VALUES).tolist() == vocab.encode(VALUES).tolist()
    assert set(json.loads(text)) == {"format", "version", "categories", "parents"}


def test_from_dict_rejects_foreign_documents() -> None:
    with pytest.raises(ConfigError, match=r"not a fedcrm\.category_vocabulary"):
        CategoryVocabulary.from_dict({"categories": [], "parents": []})


def test_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="sorted"):
        CategoryVocabulary(("b", "a"), ("a", "b"))
    with pytest.raises(ConfigError, match="parents"):
        CategoryVocabulary(("baby/x",), ())
    with pytest.raises(ConfigError, match="normalised"):
        CategoryVocabulary(("Baby",), ("Baby",))


def test_from_categories_derives_parents() -> None:
    vocab = CategoryVocabulary.from_categories(["food/b", "Food/A", "toys"])
    assert vocab.categories == ("food/a", "food/b", "toys")
    assert vocab.parents == ("food", "toys")


def test_vocabulary_is_frozen() -> None:
    vocab = CategoryVocabulary.fit(VALUES)
    with pytest.raises(AttributeError):
        vocab.categories = ()  # type: ignore[misc]


def test_map_values_calls_per_distinct_value() -> None:
    seen: list[object] = []

    def code_of(v: object) -> int:
        seen.append(v)
        return len(str(v))

    out = map_values(pd.Series(["ab", None, "ab", "c"], dtype="str"), code_of)
    assert out.tolist() == [2, -1, 2, 1]
    assert sorted(map(str, seen)) == ["ab", "c"]


def test_sparse_rows_from_pairs() -> None:
    rows = np.array([2, 0, 2, 2])
    cols = np.array([1, 3, 1, 0])
    counts = SparseRows.from_pairs(rows, cols, n_rows=4, n_cols=4, binary=False)
    assert counts.shape == (4, 4)
    assert counts.indptr.tolist() == [0, 1, 1, 3, 3]
    assert counts.row(2).tolist() == [0, 1]
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[0, 3], expected[2, 0], expected[2, 1] = 1, 1, 2
    np.testing.assert_array_equal(counts.to_dense(), expected)
    binary = SparseRows.from_pairs(rows, cols, n_rows=4, n_cols=4, binary=True)
    np.testing.assert_array_equal(binary.to_dense(), np.minimum(expected, 1))
    with pytest.raises(ValueError, match="do not agree"):
        SparseRows(np.array([0, 2]), np.array([1]), np.array([1.0]), 3)


# -- the shared taxonomy in a federation: rare and store-only categories ---------------------
TAXONOMY = ("baby/diapers", "baby/infant_formula", "fresh/fruit", "pet/aquarium")


def _store_transactions(categories: list[str]) -> pd.DataFrame:
    n = len(categories)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "customer_id": ["c1", "c2"] * (n // 2) + ["c1"] * (n % 2),
            "timestamp": pd.to_datetime("2025-01-01") + pd.to_timedelta(range(n), unit="D"),
            "amount": [10.0] * n,
            "category": categories,
        }
    )


def test_rare_category_has_the_same_column_at_every_store() -> None:
    """A category only one store sells (here pet/aquarium) keeps its column everywhere: the
    columns come from the taxonomy, never from what a store sells, so nothing in the plan or
    in a store's matrix shape says which store sells it."""
    from fedcrm.models.preference import category_history

    vocabulary = CategoryVocabulary.from_categories(TAXONOMY)
    ids = pd.Index(["c1", "c2"])
    seller = _store_transactions(["pet/aquarium", "fresh/fruit", "pet/aquarium", "baby/diapers"])
    other = _store_transactions(["fresh/fruit", "fresh/fruit"])
    cutoff = pd.Timestamp("2026-01-01")
    a = category_history(ids, seller, cutoff, vocabulary)
    b = category_history(ids, other, cutoff, vocabulary)
    assert a.shape == b.shape == (2, len(TAXONOMY) + 1)
    column = vocabulary.tokens.index("pet/aquarium")
    assert a.to_dense()[:, column].sum() == 2 and b.to_dense()[:, column].sum() == 0
    # the vocabulary a store receives is the taxonomy alone: no counts, no store names
    document = json.loads(vocabulary.to_json())
    assert "count" not in json.dumps(document) and "store" not in json.dumps(document)
    assert CategoryVocabulary.from_dict(document) == vocabulary


def test_store_only_category_outside_the_taxonomy_is_unknown_and_never_recommended() -> None:
    """A store's own category that the taxonomy lacks counts in the UNKNOWN column (so the
    store's history totals stay right), is never a training target and never ranked."""
    from fedcrm.clients.store_agent import _preference_data
    from fedcrm.models.labels import preference_labels
    from fedcrm.models.preference import category_history
    from fedcrm.models.ranking import top_k

    vocabulary = CategoryVocabulary.from_categories(TAXONOMY)
    ids = pd.Index(["c1", "c2"])
    local = "Local / Hairy Crab"  # sold at this store only, not in the chain's taxonomy
    tx = _store_transactions([local, "fresh/fruit", local, local, "fresh/fruit", local])
    cutoff = pd.Timestamp("2025-01-04")
    history = category_history(ids, tx, cutoff, vocabulary)
    assert history.to_dense()[0, 0] == 2  # c1's two hairy-crab lines, in UNKNOWN
    labels = preference_labels(ids, tx, cutoff, 30, vocabulary, data_end="2025-03-01")
    assert labels.to_dense()[:, 0].sum() > 0  # bought after the cutoff, as UNKNOWN

    class _Labels:
        preference = labels

    class _Prepared:
        pass

    prepared = _Prepared()
    prepared.history, prepared.labels = history, _Labels()  # type: ignore[attr-defined]
    data = _preference_data(prepared, np.zeros((2, 1), np.float32), np.array([False, True]))
    assert data.y_train[:, 0].sum() == 0 and data.y_eval[:, 0].sum() == 0  # never a target
    scores = np.zeros((2, len(vocabulary)))
    scores[:, 0] = 100.0  # even a model that loves UNKNOWN cannot recommend it
    assert 0 not in top_k(scores, len(TAXONOMY))
