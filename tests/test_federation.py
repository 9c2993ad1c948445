"""End to end on Flower's simulation engine: SecAgg+, DP-SGD, the egress guard, the ledger.

One small chain (3 stores x 300 customers) serves every test; the first federation run is
shared. The stores' lifetime budget is sized so that the first run fits (the churn share of
the lifetime ε is 50%) and a second run on the same data does not.
"""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.federation import FederationResult, run_federation
from fedcrm.privacy.egress import EGRESS_LOG_NAME
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

EPSILON = 3.0
LIFETIME = 6.2  # churn share 50% → 3.1: one run of ε=3 fits, a second does not
PREFERENCE_EPSILON = 1.8  # preference share 30% → 1.86: one run fits
COMMON = {
    "epsilon": EPSILON,
    "lifetime-epsilon": LIFETIME,
    "batch-size": 64,
    "learning-rate": 0.5,
    "server-optimizer": "fedavg",
    "preference-epsilon": PREFERENCE_EPSILON,
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fl") / "chain"
    generate_chain(out, ChainParams(stores=3, customers_per_store=300, seed=11))
    return out


@pytest.fixture(scope="module")
def progress_calls() -> list[tuple]:
    """What the first run's ``on_round`` / ``on_phase`` callbacks received, in order."""
    return []


@pytest.fixture(scope="module")
def first_run(
    chain: Path, tmp_path_factory: pytest.TempPathFactory, progress_calls: list[tuple]
) -> FederationResult:
    run_dir = tmp_path_factory.mktemp("runs") / "run1"
    began = time.perf_counter()
    result = run_federation(
        run_dir,
        chain,
        3,
        overrides={**COMMON, "num-rounds": 2},
        on_round=lambda r, total, record: progress_calls.append(("round", r, total, record)),
        on_phase=lambda text: progress_calls.append(("phase", text)),
    )
    print(f"\nfirst federation run: {time.perf_counter() - began:.1f} s")
    return result


def _churn_spent(chain: Path) -> list[float]:
    from fedcrm.privacy.ledger import PrivacyBudget, PrivacyLedger

    spent = []
    for store in discover_stores(chain):
        layout = StoreLayout(store)
        delta = PrivacyLedger.recorded_delta(layout)
        assert delta is not None
        spent.append(PrivacyLedger.open(layout, PrivacyBudget(LIFETIME, delta)).spent("churn"))
    return spent


def test_secagg_federation_trains_checkpoints_and_documents_the_model(first_run, chain):
    run = first_run.run_dir
    for r in range(3):
        assert (run / "checkpoints" / f"round_{r:03d}.npz").is_file()
    for r in (1, 2):
        assert (run / "checkpoints" / f"round_{r:03d}.json").is_file()
    assert first_run.model_path.is_file() and (run / "model" / "churn.npz").is_file()
    assert (run / "model" / "model_card.md").is_file()

    card = json.loads(first_run.model_card_path.read_text(encoding="utf-8"))
    assert card["federation"]["secure_aggregation"] is True
    assert card["privacy"]["accountant"] == "prv" and card["privacy"]["epsilon_target"] == EPSILON
    assert len(card["data"]["features"]) == card["model"]["n_features"]
    stores = card["privacy"]["stores"]
    assert len(stores) == 3
    for store in stores:
        assert store["noise_multiplier"] > 0 and 0 < store["sample_rate"] <= 1
        assert store["rounds_trained"] == 2
        assert 0 < store["run_epsilon"] <= EPSILON

    assert set(first_run.epsilon_per_store) == {d.name for d in discover_stores(chain)}
    assert all(0 < eps <= EPSILON for eps in first_run.epsilon_per_store.values())
    assert first_run.rounds == 2 and [r["round"] for r in first_run.history] == [1, 2]
    for r in first_run.history:
        assert r["model_updated"] and 0.0 <= r["evaluate"]["auc"] <= 1.0
        assert r["evaluate"]["stores"] == 3
    assert first_run.final_auc == first_run.history[-1]["evaluate"]["auc"]
    assert first_run.refusals == () and first_run.rejections == ()

    # the final model is the last checkpoint, and it loads into the named architecture
    import torch

    from fedcrm.models.churn import build_churn_model

    model = build_churn_model("logistic", card["model"]["n_features"])
    model.load_state_dict(torch.load(first_run.model_path))
    last = np.load(run / "checkpoints" / "round_002.npz")
    np.testing.assert_array_equal(last["linear.weight"], model.linear.weight.detach().numpy())

    # every reply of every store crossed the egress guard and was logged, none blocked
    for store in discover_stores(chain):
        log = StoreLayout(store).private_dir / EGRESS_LOG_NAME
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        kinds = {e["message_type"] for e in entries}
        assert {"train", "evaluate", "query.privacy_budget", "query.privacy_report"} <= kinds
        assert all(e["decision"] == "allowed" for e in entries)
    assert all(0 < s <= LIFETIME * 0.5 for s in _churn_spent(chain))


def test_summary_reports_churn_baselines_privacy_and_wall_time(first_run, chain):
    summary = json.loads((first_run.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds"] == 2 and isinstance(summary["rounds"], int)
    assert [r["round"] for r in summary["history"]] == [1, 2]
    assert isinstance(summary["wall_seconds"], float) and summary["wall_seconds"] > 0
    assert summary["wall_seconds"] >= summary["training_seconds"] > 0
    assert first_run.wall_seconds == summary["wall_seconds"]

    churn = summary["churn"]
    assert churn["auc"] == first_run.final_auc
    for key in ("auc", "centralized_auc", "local_only_auc"):
        assert isinstance(churn[key], float) and 0.0 <= churn[key] <= 1.0
        assert churn["labels"][key]
    assert "simulation-only" in churn["labels"]["centralized_auc"]
    assert "NON-PRIVATE" in churn["labels"]["centralized_auc"]
    assert "same DP budget" in churn["labels"]["local_only_auc"]

    privacy = summary["privacy"]
    assert privacy["accountant"] == "prv" and 0 < privacy["delta"] < 1
    assert list(privacy["stores"]) == [d.name for d in discover_stores(chain)]
    for store in privacy["stores"].values():
        assert 0 < store["epsilon"] <= store["budget"] == EPSILON
        assert store["delta"] <= privacy["delta"] and store["rounds_trained"] == 2
        assert store["lifetime_budget"] == LIFETIME
        assert store["lifetime_remaining"] == pytest.approx(LIFETIME - store["lifetime_spent"])
        curve = store["epsilon_per_round"]
        assert len(curve) == 2 and all(a < b for a, b in pairwise(curve))
        assert curve[-1] == pytest.approx(store["epsilon"], rel=1e-6)
    assert first_run.privacy == privacy


def test_training_plot_is_a_png_in_the_run_directory(first_run):
    from PIL import Image

    png = first_run.run_dir / "training.png"
    assert first_run.plot_path == png
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > image.height > 100


def test_on_round_reports_each_round_then_the_baseline_phase(first_run, progress_calls):
    rounds = [c for c in progress_calls if c[0] == "round" and c[3]["task"] == "churn"]
    assert [(r, total) for _, r, total, _ in rounds] == [(1, 2), (2, 2)]
    for (_, _, _, record), stored in zip(rounds, first_run.history, strict=True):
        assert record["evaluate"]["auc"] == stored["evaluate"]["auc"]
        assert record["loss"] == stored["loss"] and "fit" in record
    preference = [c for c in progress_calls if c[0] == "round" and c[3]["task"] == "preference"]
    assert [(r, total) for _, r, total, _ in preference] == [(1, 2), (2, 2)]
    assert progress_calls.index(rounds[-1]) < progress_calls.index(preference[0])
    phases = [c for c in progress_calls if c[0] == "phase"]
    assert phases == [
        ("phase", "baselines: centralized and local-only"),
        ("phase", "baseline: centralized preference model"),
    ]


def test_a_second_run_continues_the_ledgers_and_the_stores_refuse(first_run, chain, tmp_path):
    before = _churn_spent(chain)
    second = run_federation(tmp_path / "run2", chain, 3, overrides={**COMMON, "num-rounds": 1})
    assert _churn_spent(chain) == pytest.approx(before)  # nothing more was spent

    assert len(second.refusals) == 3
    for refusal in second.refusals:
        assert refusal["source"] == "budget-query" and refusal["rounds"] == [1]
        assert refusal["allowed_rounds"] == 0
        requested, remaining = refusal["requested_epsilon"], refusal["remaining_epsilon"]
        assert requested > remaining >= 0
        assert refusal["difference_epsilon"] == pytest.approx(requested - remaining)
        assert "requested" in refusal["message"] and "remaining" in refusal["message"]
    lines = (second.run_dir / "refusals.jsonl").read_text(encoding="utf-8").splitlines()
    tasks = sorted(json.loads(line)["task"] for line in lines)
    assert tasks == ["churn"] * 3 + ["preference"] * 3  # both purposes' shares are spent
    assert not any(r.get("model_updated") for r in second.history)
    assert all(eps == 0.0 for eps in second.epsilon_per_store.values())
    events = (second.run_dir / "events.jsonl").read_text(encoding="utf-8")
    assert '"skipped"' in events


def test_a_store_enforces_its_ledger_even_when_asked_to_train(first_run, chain):
    """Fail closed: a fit beyond the budget returns a zero update of weight 0."""
    from fedcrm.clients.app import build_client_app

    card = json.loads(first_run.model_card_path.read_text(encoding="utf-8"))
    plan_config = _plan_config(card)
    store_app = build_client_app({"data-dir": str(chain), "lifetime-epsilon": LIFETIME})
    context = Context(
        run_id=99, node_id=5, node_config={"partition-id": 0}, state=RecordDict(), run_config={}
    )
    final = [
        np.load(first_run.run_dir / "model" / "churn.npz")[k]
        for k in ("linear.weight", "linear.bias")
    ]
    ins = FitIns(ndarrays_to_parameters(final), {**plan_config, "server-round": 1})
    message = make_message(
        Metadata(
            run_id=99,
            message_id="fit-1",
            src_node_id=0,
            dst_node_id=5,
            reply_to_message_id="",
            group_id="1",
            created_at=time.time(),
            ttl=3600.0,
            message_type="train",
        ),
        compat.fitins_to_recorddict(ins, True),
    )
    before = _churn_spent(chain)
    reply = store_app(message, context)
    assert not reply.has_error()
    res = compat.recorddict_to_fitres(reply.content, keep_input=True)
    assert res.num_examples == 0 and res.metrics["refused"] == 1
    assert res.metrics["requested_epsilon"] > res.metrics["remaining_epsilon"]
    assert all(not a.any() for a in parameters_to_ndarrays(res.parameters))
    assert _churn_spent(chain) == pytest.approx(before)


def _plan_config(card: dict) -> dict:
    """The plan the coordinator sent in the first run, rebuilt from its model card."""
    from fedcrm.clients.store_agent import TrainingPlan

    p, d = card["privacy"], card["data"]
    return TrainingPlan(
        num_rounds=p["rounds"],
        local_epochs=p["local_epochs"],
        epsilon=p["epsilon_target"],
        delta=0.0,
        model=card["model"]["architecture"],
        learning_rate=p["learning_rate"],
        batch_size=p["batch_size"],
        clip_norm=p["clip_norm"],
        horizon_days=d["horizon_days"],
        eval_fraction=d["eval_fraction"],
        feature_spec=json.dumps(d["feature_spec"], sort_keys=True),
    ).to_config()


def test_preference_model_is_trained_under_its_own_ledger_share(first_run, chain):
    from fedcrm.privacy.ledger import PrivacyBudget, PrivacyLedger

    summary = json.loads((first_run.run_dir / "summary.json").read_text(encoding="utf-8"))
    preference = summary["preference"]
    assert "skipped" not in preference and preference["rounds"] == 2
    for key in ("recall_at_10", "ndcg_at_10", "precision_at_10", "popularity_recall_at_10",
                "own_history_recall_at_10", "centralized_recall_at_10"):  # fmt: skip
        assert 0.0 <= preference[key] <= 1.0, key
    assert preference["evaluated_customers"] > 0
    for store in preference["privacy"]["stores"].values():
        assert 0 < store["epsilon"] <= store["budget"] == PREFERENCE_EPSILON
        assert store["lifetime_split"] == pytest.approx(
            {"churn": 0.5 * LIFETIME, "preference": 0.3 * LIFETIME, "analytics": 0.2 * LIFETIME}
        )
    model_dir = first_run.run_dir / "model"
    assert (model_dir / "preference.pt").is_file() and (
        model_dir / "preference_card.json"
    ).is_file()
    assert (first_run.run_dir / "checkpoints" / "preference" / "round_002.npz").is_file()
    for store in discover_stores(chain):  # booked to the preference share of each store's ledger
        layout = StoreLayout(store)
        delta = PrivacyLedger.recorded_delta(layout)
        ledger = PrivacyLedger.open(layout, PrivacyBudget(LIFETIME, delta))
        assert 0 < ledger.spent("preference") <= PREFERENCE_EPSILON + 1e-9


def test_the_run_is_audited_and_verifies(first_run, chain):
    """Stores log each DP round and the end of each task; the coordinator logs both model
    versions and pins every store's log head; the whole trail verifies."""
    from fedcrm.audit.verify import verify_tree

    run_dir = first_run.run_dir
    coordinator = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    versions = [e["payload"]["task"] for e in coordinator if e["kind"] == "model_version"]
    assert versions == ["churn", "preference"]
    heads = [e for e in coordinator if e["kind"] == "store_head"]
    assert len(heads) == 2 * 3  # after each task, every store
    for store in discover_stores(chain):
        log = StoreLayout(store).private_dir / "audit.jsonl"
        entries = [json.loads(x) for x in log.read_text().splitlines()]
        rounds = [e["payload"] for e in entries if e["kind"] == "dp_round"]
        assert [(r["task"], r["round"]) for r in rounds[:4]] == [
            ("churn", 1),
            ("churn", 2),
            ("preference", 1),
            ("preference", 2),
        ]
        assert all(r["noise_multiplier"] > 0 and r["lifetime_epsilon_spent"] > 0 for r in rounds)
        assert {"run_start", "consent_filter", "deidentification", "run_end"} <= {
            e["kind"] for e in entries
        }
    report = verify_tree(run_dir, extra_dirs=[chain])
    assert report.ok, [f.describe() for f in report.findings]
