"""The store's lifetime privacy ledger: persistence, refusals, shares, δ, locking."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from fedcrm.data.layout import StoreLayout
from fedcrm.errors import BudgetExceededError, ConfigError, PrivacyError
from fedcrm.privacy import ledger as ledger_module
from fedcrm.privacy.accounting import epsilon_of
from fedcrm.privacy.ledger import (
    LEDGER_FILE_NAME,
    PURPOSES,
    BudgetSplit,
    LedgerEntry,
    PrivacyBudget,
    PrivacyLedger,
)

DELTA = 1e-5
BUDGET = PrivacyBudget(epsilon=3.0, delta=DELTA)
# churn may use 0.4 x 3.0 = 1.2; rounds of (σ=1.5, q=0.05, 20 steps) cost, cumulatively,
# ε ≈ 0.84, 1.11, 1.33: the third round does not fit.
SPLIT = BudgetSplit(churn=0.4, preference=0.3, analytics=0.3)
ROUND = (1.5, 0.05, 20)


@pytest.fixture
def layout(tmp_path: Path) -> StoreLayout:
    root = tmp_path / "store"
    root.mkdir()
    (root / "store.json").write_text(json.dumps({"store_id": "s03"}), encoding="utf-8")
    return StoreLayout(root)


def entry(round_: int, purpose: str = "churn", run_id: str = "run-1", spec=ROUND) -> LedgerEntry:
    sigma, q, steps = spec
    return LedgerEntry(
        run_id=run_id,
        round=round_,
        purpose=purpose,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        recorded_at="2026-01-05T10:00:00+00:00",
    )


def test_ledger_persists_across_opens_and_continues(layout: StoreLayout) -> None:
    first = PrivacyLedger.open(layout, BUDGET, SPLIT)
    assert first.entries == () and first.spent() == 0.0
    first.record(entry(1))
    path = layout.private_dir / LEDGER_FILE_NAME
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600

    second = PrivacyLedger.open(layout, BUDGET, SPLIT)
    assert second.entries == (entry(1),)
    assert second.spent("churn") == pytest.approx(epsilon_of([ROUND], DELTA))
    second.record(entry(2))

    third = PrivacyLedger.open(layout, BUDGET, SPLIT)
    assert [e.round for e in third.entries] == [1, 2]
    assert third.spent() == pytest.approx(epsilon_of([ROUND, ROUND], DELTA))
    assert third.spent("preference") == 0.0
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["delta"] == DELTA and document["accountant"] == "prv"
    assert document["entries"][1]["noise_multiplier"] == 1.5


def test_refusal_states_requested_remaining_difference_and_records_nothing(
    layout: StoreLayout,
) -> None:
    ledger = PrivacyLedger.open(layout, BUDGET, SPLIT)
    ledger.record(entry(1))
    ledger.record(entry(2))
    spent = ledger.spent("churn")
    after = epsilon_of([ROUND] * 3, DELTA)
    requested, remaining = after - spent, 1.2 - spent
    assert requested > remaining > 0  # the third round does not fit

    decision = ledger.check(entry(3))
    assert not decision.allowed
    assert decision.scope == "churn" and decision.limit == pytest.approx(1.2)
    assert decision.requested == pytest.approx(requested)
    assert decision.remaining == pytest.approx(remaining)
    assert decision.difference == pytest.approx(requested - remaining)
    for number in (requested, remaining, requested - remaining, 1.2):
        assert f"{number:.2f}" in decision.message
    assert decision.message.startswith("store s03 refuses churn round 3")

    with pytest.raises(BudgetExceededError, match=r"requested ε=.*remaining ε=.*difference"):
        ledger.record(entry(3))
    assert [e.round for e in ledger.entries] == [1, 2]
    assert ledger.spent("churn") == pytest.approx(spent)
    reopened = PrivacyLedger.open(layout, BUDGET, SPLIT)
    assert [e.round for e in reopened.entries] == [1, 2]
    assert len(reopened.refusals) == 1 and reopened.refusals[0]["round"] == 3
    assert reopened.as_report()["refusals"] == 1


def test_allowed_decision_reports_the_purpose_numbers(layout: StoreLayout) -> None:
    ledger = PrivacyLedger.open(layout, BUDGET, SPLIT)
    decision = ledger.check(entry(1))
    assert decision.allowed and decision.scope == "churn"
    assert decision.requested == pytest.approx(epsilon_of([ROUND], DELTA))
    assert decision.remaining == pytest.approx(1.2)
    assert decision.difference < 0
    assert ledger.entries == ()  # check records nothing


def test_each_purpose_is_held_to_its_share(layout: StoreLayout) -> None:
    split = BudgetSplit(churn=0.5, preference=0.3, analytics=0.1)  # analytics: ε 0.3
    ledger = PrivacyLedger.open(layout, BUDGET, split)
    ledger.record(entry(1, "churn"))
    release = (5.0, 1.0, 1)  # one Gaussian release, noise std 5 x sensitivity: ε ≈ 0.74
    decision = ledger.check(entry(1, "analytics", spec=release))
    assert not decision.allowed and decision.scope == "analytics"
    assert decision.limit == pytest.approx(0.3)
    with pytest.raises(BudgetExceededError, match="refuses analytics round 1"):
        ledger.record(entry(1, "analytics", spec=release))
    # the lifetime has room, and preference its own share: that spend goes through
    ledger.record(entry(1, "preference"))
    report = ledger.as_report()
    assert report["purposes"]["analytics"]["entries"] == 0
    assert report["purposes"]["preference"]["entries"] == 1
    assert report["purposes"]["churn"]["cap"] == pytest.approx(1.5)
    assert report["total"]["spent"] == pytest.approx(epsilon_of([ROUND, ROUND], DELTA))
    assert report["delta"] == DELTA and report["accountant"] == "prv"
    assert set(report["purposes"]) == set(PURPOSES)


def test_lifetime_total_is_checked_too(layout: StoreLayout, monkeypatch) -> None:
    # With a super-additive (fake) accountant the shares can fit while the total does not;
    # PRV is usually sub-additive, but the ledger must not rely on it.
    def fake_epsilon(history, delta):
        return 0.1 * sum(steps for *_, steps in history) ** 2

    monkeypatch.setattr(ledger_module, "epsilon_of", fake_epsilon)
    split = BudgetSplit(churn=0.5, preference=0.5, analytics=0.0)
    ledger = PrivacyLedger.open(layout, PrivacyBudget(1.6, DELTA), split)
    one = (1.0, 0.1, 1)
    ledger.record(entry(1, "churn", spec=one))  # churn 0.1, total 0.1
    ledger.record(entry(1, "preference", spec=one))  # preference 0.1, total 0.4
    ledger.record(entry(2, "churn", spec=one))  # churn 0.4, total 0.9
    decision = ledger.check(entry(2, "preference", spec=one))  # preference 0.4, total 1.6
    assert decision.allowed
    ledger.record(entry(2, "preference", spec=one))
    decision = ledger.check(entry(3, "churn", spec=one))  # churn 0.9 > 0.8
    assert not decision.allowed and decision.scope == "churn"
    ledger2 = PrivacyLedger.open(layout, PrivacyBudget(1.6, DELTA), BudgetSplit(0.6, 0.4, 0))
    decision = ledger2.check(entry(3, "churn", spec=one))  # churn 0.9 ≤ 0.96, total 2.5
    assert not decision.allowed and decision.scope == "lifetime"
    assert decision.requested == pytest.approx(2.5 - 1.6)
    assert decision.remaining == pytest.approx(0.0)
    assert "lifetime" in decision.message


def test_delta_cannot_change_over_a_stores_lifetime(layout: StoreLayout) -> None:
    assert PrivacyLedger.recorded_delta(layout) is None
    PrivacyLedger.open(layout, BUDGET, SPLIT).record(entry(1))
    assert PrivacyLedger.recorded_delta(layout) == DELTA
    with pytest.raises(ConfigError, match=r"δ=1e-05.*δ=2e-06"):
        PrivacyLedger.open(layout, PrivacyBudget(3.0, 2e-6), SPLIT)
    # ε may change (a site policy decision); spent stays spent
    lower = PrivacyLedger.open(layout, PrivacyBudget(2.0, DELTA), SPLIT)
    assert lower.spent() == pytest.approx(epsilon_of([ROUND], DELTA))


def test_a_second_writer_is_seen_before_spending(layout: StoreLayout) -> None:
    a = PrivacyLedger.open(layout, BUDGET, SPLIT)
    b = PrivacyLedger.open(layout, BUDGET, SPLIT)
    a.record(entry(1, run_id="A"))
    a.record(entry(2, run_id="A"))
    # b opened before a's spends; it must not spend on a stale view
    with pytest.raises(BudgetExceededError):
        b.record(entry(1, run_id="B"))
    assert [e.run_id for e in b.entries] == ["A", "A"]


def _record_in_process(root: str, barrier, results) -> None:
    ledger = PrivacyLedger.open(StoreLayout(Path(root)), BUDGET, SPLIT)
    barrier.wait()
    try:
        ledger.record(entry(2, run_id=multiprocessing.current_process().name))
        results.put("ok")
    except BudgetExceededError:
        results.put("refused")


def test_two_processes_cannot_both_spend_the_last_budget(layout: StoreLayout) -> None:
    PrivacyLedger.open(layout, BUDGET, SPLIT).record(entry(1))
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_record_in_process, args=(str(layout.root), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok", "refused"]
    assert len(PrivacyLedger.open(layout, BUDGET, SPLIT).entries) == 2


def test_threads_with_separate_ledgers_serialise(layout: StoreLayout) -> None:
    PrivacyLedger.open(layout, BUDGET, SPLIT).record(entry(1))
    outcomes: list[str] = []

    def spend(name: str) -> None:
        ledger = PrivacyLedger.open(layout, BUDGET, SPLIT)
        try:
            ledger.record(entry(2, run_id=name))
            outcomes.append("ok")
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=spend, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused"]


def test_planned_run_fits_round_by_round(layout: StoreLayout) -> None:
    ledger = PrivacyLedger.open(layout, BUDGET, SPLIT)
    ledger.record(entry(1, run_id="earlier"))
    sigma = ledger.plan_noise_multiplier("churn", 0.05, 3 * 20)
    for r in range(1, 4):
        ledger.record(entry(r, run_id="planned", spec=(sigma, 0.05, 20)))
    assert 1.2 - 0.02 <= ledger.spent("churn") <= 1.2
    with pytest.raises(BudgetExceededError):
        ledger.record(entry(4, run_id="planned", spec=(sigma, 0.05, 20)))


def test_corrupt_ledger_fails_closed(layout: StoreLayout) -> None:
    layout.private_dir.mkdir()
    (layout.private_dir / LEDGER_FILE_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(PrivacyError, match="cannot read"):
        PrivacyLedger.open(layout, BUDGET, SPLIT)
    (layout.private_dir / LEDGER_FILE_NAME).write_text(
        json.dumps({"format": "fedcrm-privacy-ledger", "version": 1, "accountant": "rdp"}),
        encoding="utf-8",
    )
    with pytest.raises(PrivacyError, match="not a valid privacy ledger"):
        PrivacyLedger.open(layout, BUDGET, SPLIT)


@pytest.mark.parametrize(
    ("epsilon", "delta", "text"),
    [(float("nan"), DELTA, "nan"), (0.0, DELTA, "0.0"), (-1, DELTA, "-1"), (1.0, 1.0, "1.0")],
)
def test_budget_is_validated(epsilon: float, delta: float, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        PrivacyBudget(epsilon, delta)


def test_split_is_validated() -> None:
    with pytest.raises(ConfigError, match="at most 1"):
        BudgetSplit(churn=0.6, preference=0.3, analytics=0.2)
    with pytest.raises(ConfigError, match="analytics"):
        BudgetSplit(analytics=-0.1)
    assert BudgetSplit().fraction("preference") == 0.3


def test_entry_is_validated() -> None:
    with pytest.raises(ValueError, match="churn, preference, analytics"):
        entry(1, purpose="marketing")
    with pytest.raises(ConfigError, match="σ = 0"):
        entry(1, spec=(0.0, 0.05, 20))
    with pytest.raises(ConfigError, match="sample_rate"):
        entry(1, spec=(1.0, 0.0, 20))
    with pytest.raises(ConfigError, match="ISO 8601"):
        LedgerEntry("r", 1, "churn", 1.0, 0.1, 1, recorded_at="yesterday")
    stamped = LedgerEntry("r", 1, "churn", 1.0, 0.1, 1)
    assert stamped.recorded_at.endswith("+00:00")
    assert LedgerEntry.from_dict(stamped.to_dict()) == stamped
