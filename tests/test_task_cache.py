"""The store's task cache: a run's later messages (fresh processes in a deployment) read the
task's prepared arrays instead of loading, filtering and de-identifying the store again."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedcrm.clients import store_agent, task_cache
from fedcrm.clients.store_agent import StoreAgent, _Data, store_settings
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.models.vocabulary import SparseRows
from fedcrm.server.app import churn_plan, resolve_feature_spec
from fedcrm.server.run_config import FederationConfig
from fedcrm.synthetic.chain import ChainParams, generate_chain

RUN = 4242


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chain = tmp_path_factory.mktemp("cache") / "chain"
    generate_chain(chain, ChainParams(stores=1, customers_per_store=120, seed=11))
    return discover_stores(chain)[0]


def _fresh_process() -> None:
    """What a new ClientApp process starts with: no agents or preparations in memory."""
    store_agent._AGENTS.clear()
    store_agent._PREPARED.clear()


def _agent(store: Path, context: Context) -> StoreAgent:
    config = FederationConfig.from_run_config({"data-dir": str(store.parent), "num-rounds": 2})
    plan = churn_plan(config, resolve_feature_spec(config))
    settings = store_settings(context)
    return StoreAgent(settings, plan, RUN, context)


def _context(store: Path, state: RecordDict) -> Context:
    return Context(run_id=RUN, node_id=1, node_config={"data-path": str(store)}, state=state,
                   run_config={})  # fmt: skip


def _audit_kinds(layout: StoreLayout) -> list[str]:
    path = layout.private_dir / "audit.jsonl"
    return [json.loads(line)["kind"] for line in path.read_text("utf-8").splitlines()]


def _participation_lines(layout: StoreLayout) -> int:
    path = layout.private_dir / "participation.jsonl"
    return len(path.read_text("utf-8").splitlines()) if path.is_file() else 0


def test_a_later_process_of_the_run_reads_the_cache_instead_of_preparing(store: Path):
    layout = StoreLayout(store)
    state = RecordDict()  # the SuperNode keeps Context.state between a run's messages
    _fresh_process()
    first = _agent(store, _context(store, state)).data
    files = list((layout.private_dir / "cache" / f"run-{RUN}").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    preparations = _audit_kinds(layout).count("consent_filter")
    participation = _participation_lines(layout)
    assert preparations >= 1 and participation >= 1

    _fresh_process()
    second = _agent(store, _context(store, state)).data
    for name in ("x_train", "y_train", "x_eval", "y_eval"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # read, not prepared: no second consent filter, de-identification or participation record
    assert _audit_kinds(layout).count("consent_filter") == preparations
    assert _participation_lines(layout) == participation

    agent = _agent(store, _context(store, state))
    agent.privacy_report(_context(store, state))  # the task's end removes its arrays
    assert not (layout.private_dir / "cache" / f"run-{RUN}").exists()


def test_arrays_round_trip_with_history_and_popularity():
    history = SparseRows(np.array([0, 2, 3]), np.array([1, 3, 2]), np.array([2.0, 1.0, 5.0]), 4)
    data = _Data(
        np.ones((3, 2), np.float32), np.zeros((3, 4), np.float32),
        np.ones((2, 2), np.float32), np.ones((2, 4), np.float32),
        history_eval=history, popularity=np.arange(4.0),
    )  # fmt: skip
    back = _Data.from_arrays(data.as_arrays())
    assert back is not None
    np.testing.assert_array_equal(back.history_eval.indices, history.indices)
    assert back.history_eval.n_cols == 4
    np.testing.assert_array_equal(back.popularity, np.arange(4.0))
    assert _Data.from_arrays({"x_train": np.ones(1)}) is None  # incomplete: prepare again


def test_other_runs_are_removed_and_an_unreadable_file_means_prepare_again(tmp_path: Path):
    layout = StoreLayout(tmp_path / "store")
    arrays = {"x": np.arange(3)}
    task_cache.save_arrays(layout, 1, "ab" * 8, arrays)
    task_cache.save_arrays(layout, 2, "cd" * 8, arrays)
    runs = sorted(p.name for p in (layout.private_dir / "cache").iterdir())
    assert runs == ["run-2"]
    path = layout.private_dir / "cache" / "run-2" / f"{'cd' * 8}.npz"
    path.write_bytes(b"not an npz")
    assert task_cache.load_arrays(layout, 2, "cd" * 8) is None
    with pytest.raises(ValueError, match="digest"):
        task_cache.load_arrays(layout, 2, "../../etc")
