"""Churn and preference labels on hand-made cases; the [T, T + H) window and its check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcrm.errors import ConfigError
from fedcrm.models import CategoryVocabulary, build_labels
from fedcrm.models.labels import check_label_window, churn_labels, preference_labels

T = pd.Timestamp("2024-07-01")
H = 30
END = T + pd.Timedelta(days=H)
VOCAB = CategoryVocabulary.from_categories(["baby/formula", "baby/diapers", "toys"])
IDS = pd.Index(["a", "b", "c", "d", "e"])


def tx(rows: list[tuple[str, pd.Timestamp, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows]),
            "amount": 1.0,
            "category": [r[2] for r in rows],
        }
    )


def data() -> pd.DataFrame:
    second = pd.Timedelta(seconds=1)
    return tx(
        [
            ("a", T - pd.Timedelta(days=5), "toys"),  # before T: not a label
            ("a", T + pd.Timedelta(days=3), "baby/formula"),
            ("a", T + pd.Timedelta(days=4), "Baby/Formula"),  # same category twice
            ("a", T + pd.Timedelta(days=5), "toys"),
            ("b", END, "toys"),  # exactly T + H: outside the window
            ("c", T, "baby/diapers"),  # exactly T: inside
            ("c", END - second, "garden/hose"),  # last second inside; unknown category
            ("d", T - pd.Timedelta(days=1), "toys"),  # only before T
            ("e", T + pd.Timedelta(days=1), None),  # bought, category unknown
            ("zz", T + pd.Timedelta(days=2), "toys"),  # not in the population
            ("b", END + pd.Timedelta(days=10), "toys"),  # data continues past the window
        ]
    )


def test_churn_window_is_closed_at_t_and_open_at_t_plus_h() -> None:
    churn = churn_labels(IDS, data(), T, H)
    assert churn.dtype == np.int8
    assert dict(zip(IDS, churn.tolist(), strict=True)) == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}


def test_preference_multi_hot() -> None:
    pref = preference_labels(IDS, data(), T, H, VOCAB)
    # tokens: unknown, baby/diapers, baby/formula, toys
    assert pref.shape == (5, 4)
    assert pref.to_dense().tolist() == [
        [0, 0, 1, 1],  # a: formula (bought twice → 1) and toys; the pre-T toys line is ignored
        [0, 0, 0, 0],  # b: bought only at T + H
        [1, 1, 0, 0],  # c: diapers at T, garden/hose → unknown bucket
        [0, 0, 0, 0],
        [0, 0, 0, 0],  # e: null category
    ]
    assert pref.row(0).tolist() == [2, 3]


def test_preference_at_parent_level() -> None:
    pref = preference_labels(IDS, data(), T, H, VOCAB, level="parent")
    # parent tokens: unknown, baby, toys
    assert pref.to_dense().tolist() == [[0, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(ConfigError, match="level"):
        preference_labels(IDS, data(), T, H, VOCAB, level="leaf")  # type: ignore[arg-type]


def test_no_category_column_gives_empty_preferences() -> None:
    pref = preference_labels(IDS, data().drop(columns="category"), T, H, VOCAB)
    assert pref.to_dense().sum() == 0


def test_labels_ignore_rows_before_the_cutoff() -> None:
    changed = data()
    changed.loc[changed["timestamp"] < T, "category"] = "baby/diapers"
    changed = pd.concat([changed, tx([("b", T - pd.Timedelta(days=1), "toys")])])
    labels, base = (
        build_labels(IDS, changed, T, H, vocabulary=VOCAB),
        build_labels(IDS, data(), T, H, vocabulary=VOCAB),
    )
    np.testing.assert_array_equal(labels.churn, base.churn)
    np.testing.assert_array_equal(labels.preference.to_dense(), base.preference.to_dense())


def test_window_beyond_the_data_is_refused() -> None:
    short = data()
    short = short[short["timestamp"] < T + pd.Timedelta(days=10)]  # last row: T + 5 days
    with pytest.raises(ConfigError, match="ends after the observed data") as info:
        churn_labels(IDS, short, T, H)
    assert "data_end" in str(info.value)
    # the export is known to cover the whole window: say so explicitly
    ok = churn_labels(IDS, short, T, H, data_end=END)
    assert ok.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError):
        churn_labels(IDS, short, T, H, data_end=END - pd.Timedelta(seconds=1))
    # a window ending exactly at the last timestamp is covered
    assert check_label_window(data(), T, H) == (T, END)
    exact = tx([("a", T - pd.Timedelta(days=1), "toys"), ("a", END, "toys")])
    assert churn_labels(pd.Index(["a"]), exact, T, H).tolist() == [1]


def test_horizon_is_validated() -> None:
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ConfigError, match="horizon_days"):
            check_label_window(data(), T, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no timestamps"):
        check_label_window(data().iloc[0:0], T, H)


def test_build_labels_bundles_everything() -> None:
    labels = build_labels(IDS, data(), T, H, vocabulary=VOCAB)
    assert len(labels) == 5 and labels.cutoff == T and labels.horizon_days == H
    assert labels.customer_ids.tolist() == IDS.tolist()
    assert labels.vocabulary == VOCAB and labels.preference is not None
    assert "churn_rate=0.400" in repr(labels)
    assert build_labels(IDS, data(), T, H).preference is None
    with pytest.raises(ValueError, match="unique"):
        churn_labels(pd.Index(["a", "a"]), data(), T, H)
