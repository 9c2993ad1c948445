"""Local scoring (``fedcrm score``): population, ids, consent gates, cutoff, calibration, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fedcrm.cli import app
from fedcrm.clients.actions import NO_MARKETING_CONSENT
from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.clients.scoring import (
    SCORE_COLUMNS,
    load_global_model,
    score_store,
    write_scores,
)
from fedcrm.clients.store_agent import eval_mask
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.data.store import load_store
from fedcrm.errors import ConfigError, OutputExistsError, PrivacyError
from fedcrm.models.churn import build_churn_model, predict_logits
from fedcrm.privacy.keys import PSEUDONYM_KEY_NAME
from fedcrm.server.app import resolve_feature_spec
from fedcrm.server.checkpoints import MODEL_CARD_FORMAT, RunDirectory
from fedcrm.server.run_config import FederationConfig
from fedcrm.synthetic.chain import ChainParams, generate_chain

HORIZON = 60
EVAL_FRACTION = 0.5  # large, so that a 300-customer store has enough rows to calibrate
AS_OF = pd.Timestamp("2026-06-01")  # processing time, fixed so that runs compare
runner = CliRunner()


# -- a run directory written by hand: a model trained in seconds, a card like the server's --
def write_run(root: Path, state: dict[str, torch.Tensor], spec, **data: object) -> Path:
    names = list(state)
    run = RunDirectory(root, names)
    run.write_final_model([t.detach().numpy().astype(np.float32) for t in state.values()])
    run.write_model_card(
        {
            "format": MODEL_CARD_FORMAT,
            "version": 1,
            "run_id": 4242,
            "created_at": "2026-01-02T00:00:00+00:00",
            "model": {
                "task": "churn within the horizon (binary)",
                "architecture": "logistic",
                "n_features": len(spec),
                "parameter_names": names,
                "files": {"npz": "churn.npz", "torch": "churn.pt"},
            },
            "data": {
                "cutoff": "latest with a full label horizon (per store)",
                "horizon_days": HORIZON,
                "eval_fraction": EVAL_FRACTION,
                "features": list(spec.feature_names),
                "feature_spec": spec.to_dict(),
                **data,
            },
            "federation": {
                "stores": 2,
                "rounds": 1,
                "min_stores": 2,
                "server_optimizer": "fedavg",
                "server_learning_rate": 1.0,
                "secure_aggregation": False,
                "max_update_norm": 10.0,
            },
            "privacy": {
                "mechanism": "none (test fixture)",
                "unit": "-",
                "accountant": "-",
                "epsilon_target": None,
                "delta": None,
                "clip_norm": None,
                "local_epochs": 1,
                "batch_size": None,
                "learning_rate": None,
                "stores": [],
            },
            "metrics": {"rounds": []},
            "refusals": 0,
            "rejections": 0,
            "limitations": [],
        }
    )
    return root


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scoring") / "chain"
    generate_chain(out, ChainParams(stores=2, customers_per_store=300, seed=11))
    for i, root in enumerate(discover_stores(out)):  # fixed keys: the same split every run
        keys = StoreLayout(root).keys_dir
        keys.mkdir(mode=0o700, parents=True)
        (keys / PSEUDONYM_KEY_NAME).write_bytes(bytes([i + 1]) * 32)
        (keys / PSEUDONYM_KEY_NAME).chmod(0o600)
    return out


@pytest.fixture(scope="module")
def store(chain: Path) -> Path:
    return discover_stores(chain)[0]


@pytest.fixture(scope="module")
def trained(chain: Path) -> tuple[dict[str, torch.Tensor], object]:
    """A logistic churn model fitted (no DP) on both stores' training split."""
    spec = resolve_feature_spec(FederationConfig(data_dir=str(chain)))
    xs, ys = [], []
    for root in discover_stores(chain):
        p = prepare_store(root, PreparationRequest(horizon_days=HORIZON), spec=spec)
        train = ~eval_mask(p.features.customer_ids, EVAL_FRACTION)
        xs.append(p.features.matrix[train])
        ys.append(p.labels.churn[train])
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)).float()
    torch.manual_seed(0)
    model = build_churn_model("logistic", len(spec))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, spec


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    state, spec = trained
    return write_run(tmp_path_factory.mktemp("run") / "run", state, spec)


@pytest.fixture(scope="module")
def scores(run_dir: Path, store: Path):
    return score_store(run_dir, store, consent_as_of=AS_OF)


def current_consent(consents: pd.DataFrame, purpose: str, as_of: pd.Timestamp) -> set[str]:
    """Independent reading of the ledger: the latest event at or before ``as_of`` grants."""
    ev = consents[(consents["purpose"] == purpose) & (consents["timestamp"] <= as_of)]
    last = ev.sort_values("timestamp", kind="stable").drop_duplicates("customer_id", keep="last")
    return set(last.loc[last["granted"].astype(bool), "customer_id"])


def copy_store(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / store.name))


# -- the scores -------------------------------------------------------------------------------
def test_csv_holds_the_consented_population_under_the_stores_own_ids(scores, store, tmp_path):
    raw = load_store(store)
    pre_cutoff = set(
        raw.transactions.loc[raw.transactions["timestamp"] < scores.cutoff, "customer_id"]
    )
    expected = current_consent(raw.consents, "analytics", AS_OF) & pre_cutoff

    path = write_scores(scores, tmp_path / "scores.csv")
    csv = pd.read_csv(path, dtype={"customer_id": str})
    assert tuple(csv.columns) == SCORE_COLUMNS
    assert len(csv) == len(expected) and set(csv["customer_id"]) == expected
    assert set(csv["customer_id"]) <= set(raw.customers["customer_id"])
    assert csv["churn_probability"].between(0, 1).all()
    assert csv["churn_probability"].is_monotonic_decreasing
    pseudonyms = pd.read_parquet(StoreLayout(store).pseudonym_map_path)["pseudonym"]
    text = path.read_text(encoding="utf-8")
    assert not any(p in text for p in pseudonyms)
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    summary = scores.summary()
    assert summary["customers_scored"] == len(expected)
    assert sum(summary["actions"].values()) == len(expected)
    assert summary["run_id"] == "4242" and summary["cutoff"].startswith("2026-01-01")
    shown = repr(scores) + json.dumps(summary)
    assert not any(cid in shown for cid in csv["customer_id"])


def test_only_current_marketing_consent_unlocks_an_action(scores, store):
    marketing = current_consent(load_store(store).consents, "marketing", AS_OF)
    frame = scores.frame
    allowed = frame["customer_id"].isin(marketing)
    assert (frame["marketing_consent"] == allowed).all()
    assert (frame["action"] == NO_MARKETING_CONSENT).to_numpy().tolist() == (~allowed).tolist()
    assert 0 < allowed.sum() < len(frame)  # both sides are exercised
    assert frame.loc[allowed, "action"].nunique() > 1


def test_a_customer_who_revoked_analytics_is_not_scored(scores, run_dir, store, tmp_path):
    root = copy_store(store, tmp_path)
    revoked = scores.frame["customer_id"].iloc[0]
    path = root / "consents.parquet"
    ledger = pd.read_parquet(path)  # revoked after the cutoff, before processing time
    event = ledger.iloc[[0]].assign(
        customer_id=revoked, purpose="analytics", granted=False,
        timestamp=pd.Timestamp("2026-03-01"), source="app_privacy_center",
    )  # fmt: skip
    pd.concat([ledger, event], ignore_index=True).to_parquet(path, index=False)

    after = score_store(run_dir, root, consent_as_of=AS_OF)
    assert revoked not in set(after.frame["customer_id"])
    assert len(after.frame) == len(scores.frame) - 1
    assert after.consent.excluded_revoked == scores.consent.excluded_revoked + 1


def test_only_data_before_the_cutoff_is_used(run_dir, store, tmp_path):
    root = copy_store(store, tmp_path)
    cutoff = pd.Timestamp("2025-09-01")
    kwargs = {"cutoff": cutoff, "consent_as_of": AS_OF}
    base = score_store(run_dir, root, **kwargs).frame
    path = root / "transactions.parquet"
    tx = pd.read_parquet(path)
    scored = tx["customer_id"].isin(base["customer_id"])

    later = tx.loc[scored & (tx["timestamp"] >= cutoff)].index
    assert len(later) > 0
    tx.loc[later, "amount"] *= 20
    tx.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(score_store(run_dir, root, **kwargs).frame, base)

    earlier = tx.loc[scored & (tx["timestamp"] < cutoff)].index[:50]
    tx.loc[earlier, "amount"] *= 20
    tx.to_parquet(path, index=False)
    changed = score_store(run_dir, root, **kwargs).frame.set_index("customer_id")
    diff = changed["churn_probability"] - base.set_index("customer_id")["churn_probability"]
    assert (diff.abs() > 1e-9).any()


# -- calibration ------------------------------------------------------------------------------
def test_calibration_is_fitted_on_held_out_rows_and_keeps_or_improves_ece(
    scores, trained, store, tmp_path
):
    cal = scores.calibration
    history = prepare_store(
        store, PreparationRequest(cutoff="2025-11-02", purpose="analytics", consent_as_of=AS_OF,
                                  horizon_days=HORIZON), spec=trained[1],
    )  # fmt: skip
    held_out = eval_mask(history.features.customer_ids, EVAL_FRACTION)
    assert cal.cutoff == "2025-11-02" and 50 <= cal.rows == held_out.sum() < len(held_out)
    assert cal.ece_after <= cal.ece_before and cal.brier_after <= cal.brier_before

    state, spec = trained  # a badly calibrated model: every logit shifted up by 3
    shifted = {**state, "linear.bias": state["linear.bias"] + 3.0}
    result = score_store(write_run(tmp_path / "shifted", shifted, spec), store, consent_as_of=AS_OF)
    c = result.calibration
    assert c.applied and c.ece_after < c.ece_before and c.brier_after < c.brier_before
    assert result.frame["churn_probability"].between(0, 1).all()


def test_calibration_is_skipped_with_too_few_held_out_rows(trained, store, tmp_path):
    state, spec = trained
    run = write_run(tmp_path / "run", state, spec, eval_fraction=0.02)
    result = score_store(run, store, consent_as_of=AS_OF)
    assert not result.calibration.applied and "< 50" in result.calibration.reason
    assert result.summary()["calibration"]["applied"] is False
    model = load_global_model(run)
    prepared = prepare_store(
        store, PreparationRequest(cutoff=result.cutoff, purpose="analytics",
                                  consent_as_of=AS_OF, with_labels=False), spec=spec
    )  # fmt: skip
    raw = 1 / (1 + np.exp(-predict_logits(model.module, np.array(prepared.features.matrix))))
    assert np.allclose(np.sort(raw)[::-1], result.frame["churn_probability"].to_numpy())


def test_an_unresolvable_pseudonym_stops_scoring(scores, run_dir, store, monkeypatch):
    from fedcrm.clients import scoring

    real, lost = scoring.load_pseudonym_map, scores.frame["customer_id"].iloc[-1]

    def incomplete(layout):
        pmap = real(layout)
        return type(pmap)(pmap.frame.loc[pmap.frame["customer_id"] != lost])

    monkeypatch.setattr(scoring, "load_pseudonym_map", incomplete)
    with pytest.raises(PrivacyError, match="cannot be re-identified"):
        score_store(run_dir, store, consent_as_of=AS_OF)


# -- the command line -------------------------------------------------------------------------
def test_cli_scores_a_store_and_prints_counts_only(run_dir, store, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\naction = "call_everyone"\n', encoding="utf-8")
    out = tmp_path / "out" / "scores.csv"
    args = ["score", "--run", str(run_dir), "--store", str(store), "--out", str(out)]
    result = runner.invoke(app, [*args, "--rules", str(rules)])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out, dtype={"customer_id": str})
    assert set(csv["action"]) == {"call_everyone", NO_MARKETING_CONSENT}
    assert f"{len(csv):,} customers written to" in result.stdout
    customers = load_store(store).customers
    secrets = [*customers["customer_id"], *customers["name"], *customers["mobile"].dropna()]
    secrets += list(pd.read_parquet(StoreLayout(store).pseudonym_map_path)["pseudonym"])
    assert not any(s in result.output for s in secrets)

    result = runner.invoke(app, [*args, "--force", "--json", "--purpose", "analytics"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["customers_scored"] == len(csv) and summary["out"] == str(out)
    assert not any(s in result.output for s in secrets)


def _corrupt_card(run: Path) -> Path:
    (run / "model" / "model_card.json").write_text("{not json", encoding="utf-8")
    return run / "model" / "model_card.json"


def _wrong_shape(run: Path) -> Path:
    n = json.loads((run / "model" / "model_card.json").read_text())["model"]["n_features"]
    torch.save({"linear.weight": torch.zeros(1, n + 1), "linear.bias": torch.zeros(1)},
               run / "model" / "churn.pt")  # fmt: skip
    return run / "model" / "churn.pt"


def _wrong_format(run: Path) -> Path:
    path = run / "model" / "model_card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "other"}))
    return path


def _spec_mismatch(run: Path) -> Path:
    path = run / "model" / "model_card.json"
    card = json.loads(path.read_text())
    card["data"]["feature_spec"]["windows"] = [30, 90]
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    "damage",
    [lambda run: (shutil.rmtree(run), run)[1], _corrupt_card, _wrong_shape, _wrong_format,
     _spec_mismatch],
    ids=["missing-run", "corrupt-card", "wrong-shape", "wrong-format", "spec-mismatch"],
)  # fmt: skip
def test_cli_refuses_a_broken_run_naming_the_file(damage, run_dir, store, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    named = damage(run)
    out = tmp_path / "scores.csv"
    args = ["score", "--run", str(run), "--store", str(store), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.output.startswith("error:") and str(named) in result.output
    assert "Traceback" not in result.output and not out.exists()
    with pytest.raises(ConfigError, match=str(named.name)):
        load_global_model(run)


def test_existing_output_is_refused_and_nothing_is_half_written(
    scores, run_dir, store, tmp_path, monkeypatch
):
    out = tmp_path / "scores.csv"
    out.write_text("sentinel\n", encoding="utf-8")
    args = ["score", "--run", str(run_dir), "--store", str(store), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "already exists" in result.output
    assert out.read_text(encoding="utf-8") == "sentinel\n"
    with pytest.raises(OutputExistsError):
        write_scores(scores, out)
    with pytest.raises(ConfigError, match=r"\.csv"):
        write_scores(scores, tmp_path / "scores.xlsx")

    def fail_half_way(frame, path, **kwargs):
        Path(path).write_text("customer_id\n0001\n", encoding="utf-8")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_half_way)
    with pytest.raises(OSError):
        write_scores(scores, out, force=True)
    with pytest.raises(OSError):
        write_scores(scores, tmp_path / "new.csv")
    assert out.read_text(encoding="utf-8") == "sentinel\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_top_categories_come_from_the_preference_model_and_respect_marketing_consent(
    trained, chain: Path, store: Path, tmp_path: Path
):
    from fedcrm.models.preference import build_preference_model
    from fedcrm.models.vocabulary import UNKNOWN, CategoryVocabulary
    from fedcrm.synthetic.chain import chain_categories

    state, spec = trained
    run = write_run(tmp_path / "run", state, spec)
    vocabulary = CategoryVocabulary.from_categories(chain_categories(chain))
    torch.manual_seed(3)
    model = build_preference_model(len(spec), len(vocabulary), dim=8)
    with torch.no_grad():  # a model that prefers the last categories of the vocabulary
        model.output.bias.copy_(torch.linspace(-5.0, 5.0, len(vocabulary)))
    pref = RunDirectory(run, list(model.state_dict()), task="preference")
    pref.write_final_model([t.detach().numpy() for t in model.state_dict().values()])
    pref.write_model_card(
        {"format": MODEL_CARD_FORMAT, "run_id": 1,
         "model": {"n_features": len(spec), "n_categories": len(vocabulary), "embedding_dim": 8},
         "data": {"vocabulary": vocabulary.to_dict()}},
        markdown=False,
    )  # fmt: skip

    result = score_store(run, store, consent_as_of=AS_OF, top_k=3)
    frame = result.frame
    marketing = frame["marketing_consent"].astype(bool)
    assert (frame.loc[~marketing, "top_categories"] == "").all()  # nothing without consent
    lists = frame.loc[marketing, "top_categories"].str.split(";")
    assert lists.map(len).eq(3).all()
    known = set(vocabulary.tokens) - {UNKNOWN}
    assert all(set(row) <= known for row in lists)
    assert all(len(set(row)) == 3 for row in lists)
    offers = frame.loc[frame["offer_category"] != ""]
    assert (offers["offer_category"] == offers["top_categories"].str.split(";").str[0]).all()
    assert set(offers["action"]) <= {"targeted_coupon", "second_purchase_incentive",
                                     "loyalty_upgrade_offer", "retention_call"}  # fmt: skip
    assert result.summary()["with_recommendations"] == int(marketing.sum())


def test_a_run_without_a_preference_model_scores_churn_only(scores):
    assert (scores.frame["top_categories"] == "").all()
    assert (scores.frame["offer_category"] == "").all()
