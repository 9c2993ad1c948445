"""Federated analytics end to end on Flower's simulation engine: noise in each store, exact
sums under SecAgg+, nothing unmasked at the coordinator, refusals, suppression, files.

A small chain (3 stores x 300 customers) is generated once; each federated run works on its
own copy, because every answer spends the stores' lifetime budget.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcrm.analytics.exact import exact_totals
from fedcrm.analytics.plan import QueryPlan, context_to_json
from fedcrm.analytics.queries import QueryContext, build_query
from fedcrm.analytics.release import release, write_release
from fedcrm.clients.analytics_agent import read_releases
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.federation import run_analytics_queries
from fedcrm.privacy.ledger import LEDGER_FILE_NAME
from fedcrm.server.analytics import ANSWER_CLIPPING_RANGE
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

QUERIES = "lifecycle_funnel,consent_coverage"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("an") / "chain"
    generate_chain(out, ChainParams(stores=3, customers_per_store=300, seed=5))
    return out


@pytest.fixture
def chain(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "chain"
    shutil.copytree(pristine, copy)
    return copy


def _arrays_and_blobs(message: Any) -> tuple[list[np.ndarray], list[bytes]]:
    """Every array and every bytes value in a reply's content, as it reached the coordinator.

    Call it inside the tap: Flower's legacy workflows consume a reply's records as they
    convert it, so the same message inspected later is empty.
    """
    arrays, blobs = [], []
    if message.has_error():
        return arrays, blobs
    content = message.content
    for record in content.array_records.values():
        for array in record.values():
            blobs.append(bytes(array.data))
            with contextlib.suppress(Exception):  # not an ndarray payload: bytes still checked
                arrays.append(np.asarray(array.numpy()))
    for record in content.config_records.values():
        for value in record.values():
            values = value if isinstance(value, list) else [value]
            blobs.extend(v for v in values if isinstance(v, bytes))
    return arrays, blobs


def _run(chain: Path, out: Path, tap: Callable[[Any], object], **overrides: Any) -> dict:
    config = {"analytics-queries": QUERIES, "analytics-epsilon": 1.0, "analytics-k": 0,
              "lifetime-epsilon": 10.0, **overrides}  # fmt: skip
    return run_analytics_queries(out, chain, overrides=config, tap=tap)


def _store_vectors(chain: Path, query: str) -> list[np.ndarray]:
    vectors = []
    for store in discover_stores(chain):
        released = [r for r in read_releases(StoreLayout(store).private_dir) if r["query"] == query]
        assert len(released) == 1, f"{store.name} released {query} {len(released)} times"
        vectors.append(np.asarray(released[0]["noisy_values"], dtype=np.float64))
    return vectors


def test_released_totals_are_the_exact_sum_and_no_single_answer_reaches_the_coordinator(
    chain: Path, tmp_path: Path
) -> None:
    seen: list[tuple[list[np.ndarray], list[bytes]]] = []
    summary = _run(chain, tmp_path / "out", lambda m: seen.append(_arrays_and_blobs(m)))
    assert {q["status"] for q in summary["queries"].values()} == {"released"}
    assert sum(len(blobs) for _, blobs in seen) > 0  # the masked answers did arrive
    for name in QUERIES.split(","):
        document = json.loads((tmp_path / "out" / f"{name}.json").read_text(encoding="utf-8"))
        vectors = _store_vectors(chain, name)
        total = np.sum(vectors, axis=0)
        released = [c["count"] for c in document["cells"]]
        # k = 0: released iff the total reaches the noise floor (3 noise stds), and then it
        # is exactly the stores' sum
        floor = 3 * document["noise_std_total"]
        assert document["threshold"] == pytest.approx(floor)
        assert any(c is not None for c in released)
        for got, want in zip(released, total, strict=True):
            assert got == (int(want) if want >= floor else None)
        assert document["secure_aggregation"] is True
        # the noise each store declared is the one its plan calls for
        for numbers in document["stores"].values():
            assert numbers["epsilon"] == 1.0 and numbers["noise_scale"] > 3.0
        # nothing the coordinator received holds any store's own vector, as an array or bytes
        for arrays, blobs in seen:
            for vector in vectors:
                # the plain answer, and its SecAgg+ quantization before masking (x + range)
                forms = [vector.tobytes()] + [
                    (vector + ANSWER_CLIPPING_RANGE).astype(kind).tobytes()
                    for kind in (np.int32, np.int64)
                ]
                assert not any(a.shape == vector.shape and np.allclose(a, vector) for a in arrays)
                assert not any(form in blob for form in forms for blob in blobs)
    # each store booked one analytics spend per query in its lifetime ledger
    for store in discover_stores(chain):
        ledger = json.loads((StoreLayout(store).private_dir / LEDGER_FILE_NAME).read_text())
        assert [e["purpose"] for e in ledger["entries"]] == ["analytics"] * 2


def test_without_secure_aggregation_the_coordinator_sees_each_answer(
    chain: Path, tmp_path: Path
) -> None:
    """The control of the test above: the same check does find the vectors in the clear."""
    seen: list[tuple[list[np.ndarray], list[bytes]]] = []
    summary = _run(chain, tmp_path / "out", lambda m: seen.append(_arrays_and_blobs(m)),
                   secagg=False, **{"analytics-queries": "lifecycle_funnel"})  # fmt: skip
    assert summary["queries"]["lifecycle_funnel"]["status"] == "released"
    arrays = [a for found, _ in seen for a in found]
    blobs = [b for _, found in seen for b in found]
    for vector in _store_vectors(chain, "lifecycle_funnel"):
        assert any(a.shape == vector.shape and np.allclose(a, vector) for a in arrays) or any(
            vector.tobytes() in blob for blob in blobs
        )
    document = json.loads((tmp_path / "out" / "lifecycle_funnel.json").read_text())
    assert document["secure_aggregation"] is False


def test_a_query_over_budget_is_refused_and_nothing_is_released(
    chain: Path, tmp_path: Path
) -> None:
    from fedcrm.cli import app

    config = tmp_path / "small.toml"
    # lifetime ε 2 → the analytics share is 0.4: one query at ε = 1 does not fit
    config.write_text("[privacy]\nlifetime_epsilon = 2.0\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["analytics", "--data", str(chain), "--query", "lifecycle_funnel", "--epsilon", "1",
         "--out", str(out), "--config", str(config)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "refused" in result.output and "requested" in result.output
    document = json.loads((out / "lifecycle_funnel.json").read_text(encoding="utf-8"))
    assert document["status"] == "refused" and document["cells"] == []
    assert len(document["stores"]) == 3
    for numbers in document["stores"].values():
        assert numbers["requested_epsilon"] > numbers["remaining_epsilon"]
        assert numbers["difference_epsilon"] == pytest.approx(
            numbers["requested_epsilon"] - numbers["remaining_epsilon"]
        )
    assert not (out / "lifecycle_funnel.csv").exists()
    assert not (out / "lifecycle_funnel.png").exists()
    for store in discover_stores(chain):  # nothing spent, nothing released
        private = StoreLayout(store).private_dir
        assert read_releases(private) == []
        path = private / LEDGER_FILE_NAME
        assert not path.exists() or json.loads(path.read_text())["entries"] == []


def test_small_cells_are_suppressed_after_noise(tmp_path: Path) -> None:
    query = build_query("lifecycle_funnel", QueryContext())
    totals = np.array([500.0, 19.0, -4.0, 20.0, 1000.0])
    stores = {"a": {"noise_scale": 3.0, "delta": 1e-5}, "b": {"noise_scale": 4.0, "delta": 1e-5}}
    result = release(query, totals, k=20, epsilon=1.0, stores=stores, secure_aggregation=True)
    assert result.released.tolist() == [True, False, False, True, True]
    assert result.noise_std == pytest.approx(5.0)
    # with more noise the floor (3 noise stds) rises above k: 20 is then noise-level
    noisy = {"a": {"noise_scale": 8.0}, "b": {"noise_scale": 6.0}}  # std 10 → floor 30
    loud = release(query, totals, k=20, epsilon=1.0, stores=noisy, secure_aggregation=True)
    assert loud.threshold == pytest.approx(30.0)
    assert loud.released.tolist() == [True, False, False, False, True]
    paths = write_release(result, tmp_path)
    document = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [c["count"] for c in document["cells"]] == [500, None, None, 20, 1000]
    assert [c["stage"] for c in document["suppressed_cells"]] == ["growing", "mature"]
    table = pd.read_csv(paths["csv"])
    assert table["count"].isna().tolist() == [False, True, True, False, False]
    assert table["share"].iloc[0] == pytest.approx(500 / 1520)  # of the released total
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_reference_counts_every_analytics_consented_customer_once(pristine: Path) -> None:
    plan = QueryPlan("lifecycle_funnel", 1.0, context=context_to_json(QueryContext()))
    totals = exact_totals(plan, discover_stores(pristine))
    assert totals.dtype == np.int64 and (totals >= 0).all()
    assert 0 < totals.sum() <= 3 * 300 * 1.5  # no customer counted twice


def test_secagg_with_a_sparse_neighbourhood_still_sums_exactly(tmp_path: Path) -> None:
    """Four stores, ``secagg-max-shares = 3``: each store shares its keys with 3 neighbours
    (not all), which is what keeps SecAgg+ linear in the stores; the total is still exact."""
    chain = tmp_path / "chain"
    generate_chain(chain, ChainParams(stores=4, customers_per_store=120, seed=9))
    config = {"analytics-queries": "lifecycle_funnel", "analytics-epsilon": 1.0,
              "analytics-k": 0, "lifetime-epsilon": 10.0, "secagg-max-shares": 3}  # fmt: skip
    summary = run_analytics_queries(tmp_path / "out", chain, overrides=config)
    assert summary["queries"]["lifecycle_funnel"]["status"] == "released"
    document = json.loads((tmp_path / "out" / "lifecycle_funnel.json").read_text("utf-8"))
    total = np.sum(_store_vectors(chain, "lifecycle_funnel"), axis=0)
    floor = 3 * document["noise_std_total"]
    for cell, want in zip(document["cells"], total, strict=True):
        assert cell["count"] == (int(want) if want >= floor else None)


def test_secagg_neighbourhood_is_all_stores_up_to_the_cap_then_odd() -> None:
    from fedcrm.server.run_config import FederationConfig

    config = FederationConfig.from_run_config({"secagg-max-shares": 10})
    assert config.secagg_num_shares(3) == 1.0 and config.secagg_num_shares(10) == 1.0
    assert config.secagg_num_shares(11) == 11 and config.secagg_num_shares(100) == 11
    assert FederationConfig().secagg_num_shares(100) == 15
