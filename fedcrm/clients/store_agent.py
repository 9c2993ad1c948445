"""The store agent's logic, apart from Flower transport: data, split, DP training, budget.

One :class:`StoreAgent` serves one store in one run::

    store dir ──prepare_store(purpose="model_training", shared FeatureSpec)──▶ features, labels
        ──split by pseudonym hash──▶ train (DP-SGD) │ eval (federated evaluation)

- **Purposes**: the data leave the boundary for the consent purpose ``model_training``; the
  ledger books the spend under the ``churn`` purpose (its share of the lifetime budget).
- **Where the store is**: node_config ``data-path`` (deployment), else run_config ``data-dir``
  plus node_config ``partition-id`` → the i-th store directory, sorted (simulation).
- **The plan** (:class:`TrainingPlan`) comes from the coordinator, in the budget query and in
  every fit config. The noise multiplier is computed once per run from the *whole* plan
  (rounds × local epochs at the store's sample rate, target ε, δ) and kept in
  ``Context.state``. δ is the one the store's ledger already records (fixed for its
  lifetime), else the plan's, else ``default_delta(N)`` — never above ``default_delta(N)``.
- **The lifetime budget** is the store's own policy (node_config, else run_config
  ``lifetime-epsilon``), enforced by the ledger on the store's disk. A fit is: ledger check →
  DP-SGD → ledger record. A refused fit touches neither the data nor the ledger and returns a
  zero update with weight 0 (fail closed).
- **Updates** leave as deltas (local model − global model), float32, in the global model's
  array order; the coordinator adds the (securely) aggregated delta to the global model.

Each store is prepared once per run and process, shared by the run's tasks (churn, then
preference relabels it with the shared vocabulary); each task's arrays are cached per plan;
the per-run privacy history lives in ``Context.state`` because a node's messages may be served
by different processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord, Context

from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from fedcrm.privacy.ledger import BudgetSplit

__all__ = [
    "CONSENT_PURPOSE",
    "LEDGER_PURPOSE",
    "TASKS",
    "BudgetAnswer",
    "EvalOutcome",
    "FitOutcome",
    "StoreAgent",
    "StoreSettings",
    "TrainingPlan",
    "agent_for",
    "eval_mask",
    "store_settings",
    "task_model",
]

logger = logging.getLogger(__name__)

CONSENT_PURPOSE = "model_training"  # what the customers consented to (the boundary)
LEDGER_PURPOSE = "churn"  # the churn task's share of the lifetime budget
TASKS: tuple[str, ...] = (
    "churn",
    "preference",
)  # each task books to the ledger purpose of its name
_DP_STATE = "fedcrm.dp"
_HISTORY_STATE = "fedcrm.history"
_SPLIT_SALT = "fedcrm-eval-split-v1:"
DEFAULT_LIFETIME_EPSILON = 10.0


# -- the plan the coordinator sends ------------------------------------------------------
_PLAN_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str}


@dataclass(frozen=True)
class TrainingPlan:
    """What the coordinator asks of every store for one run (sent as config, kebab-case)."""

    num_rounds: int
    local_epochs: int
    epsilon: float
    delta: float  # 0: default_delta(N) of the store
    model: str
    learning_rate: float
    batch_size: int
    clip_norm: float
    horizon_days: int
    eval_fraction: float
    feature_spec: str  # FeatureSpec.to_dict() as JSON
    cutoff: str = ""  # ISO date; "": the latest with a full label horizon
    task: str = "churn"  # "churn" | "preference": the model, its labels and its ledger purpose
    vocabulary: str = ""  # CategoryVocabulary JSON (preference only): the shared taxonomy
    embedding_dim: int = 32  # preference model width
    top_k: int = 10  # k of the preference ranking metrics

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _PLAN_TYPES[str(f.type)]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigError(f"plan {f.name}: expected {f.type}, got {value!r}")
        if min(self.num_rounds, self.local_epochs, self.batch_size, self.horizon_days) < 1:
            raise ConfigError("plan: rounds, epochs, batch size and horizon must be >= 1")
        if not (self.epsilon > 0 and self.clip_norm > 0 and self.learning_rate > 0):
            raise ConfigError("plan: epsilon, clip norm and learning rate must be > 0")
        if not (0 <= self.delta < 1 and 0 < self.eval_fraction < 1):
            raise ConfigError("plan: delta must be in [0, 1), eval fraction in (0, 1)")
        if self.task not in TASKS:
            raise ConfigError(f"plan: task must be one of {TASKS} (got {self.task!r})")
        if self.task == "preference" and not self.vocabulary:
            raise ConfigError("plan: the preference task needs the shared category vocabulary")
        if min(self.embedding_dim, self.top_k) < 1:
            raise ConfigError("plan: embedding dim and top-k must be >= 1")

    def to_config(self) -> dict[str, int | float | str]:
        return {f"plan.{f.name.replace('_', '-')}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainingPlan:
        missing = [f.name for f in fields(cls) if f"plan.{f.name.replace('_', '-')}" not in config]
        if missing:
            raise ConfigError(f"the coordinator's plan lacks {missing}")
        return cls(**{f.name: config[f"plan.{f.name.replace('_', '-')}"] for f in fields(cls)})

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_config(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def category_vocabulary(self) -> Any:
        """The shared vocabulary (preference task), else None."""
        from fedcrm.models.vocabulary import CategoryVocabulary

        if not self.vocabulary:
            return None
        try:
            return CategoryVocabulary.from_json(self.vocabulary)
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ConfigError(f"plan vocabulary is not CategoryVocabulary JSON ({exc})") from None

    def spec(self) -> Any:
        from fedcrm.models.snapshot import FeatureSpec

        try:
            return FeatureSpec.from_dict(json.loads(self.feature_spec))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"plan feature-spec is not FeatureSpec JSON ({exc})") from None


# -- the store's own settings ------------------------------------------------------------
def _budget_split(**shares: float) -> BudgetSplit:
    """The lifetime ε split (defaults for missing purposes); ConfigError on bad shares."""
    from fedcrm.privacy.ledger import BudgetSplit

    return BudgetSplit(**shares)


@dataclass(frozen=True)
class StoreSettings:
    """The store's local policy: where its data is and what it allows over its lifetime."""

    store_dir: Path
    lifetime_epsilon: float = DEFAULT_LIFETIME_EPSILON
    require_secagg: bool = False
    partition_id: int | None = None
    split: BudgetSplit = field(default_factory=_budget_split)  # the lifetime ε shares

    @property
    def layout(self) -> StoreLayout:
        return StoreLayout(self.store_dir)


def _setting(name: str, *sources: Mapping[str, Any]) -> Any:
    for source in sources:
        if name in source:
            return source[name]
    return None


def store_settings(context: Context, defaults: Mapping[str, Any] | None = None) -> StoreSettings:
    """Resolve the store from node_config, then run_config, then the app's baked defaults."""
    node, run, baked = context.node_config, context.run_config, defaults or {}
    partition = node.get("partition-id")
    data_path = node.get("data-path")
    if data_path:
        store_dir = Path(str(data_path))
    else:
        data_dir = _setting("data-dir", run, baked)
        if not data_dir or partition is None:
            raise ConfigError(
                "cannot find this store's data: set node_config data-path (deployment) or "
                "run_config data-dir with a partition-id (simulation)"
            )
        stores = discover_stores(Path(str(data_dir)))
        if not 0 <= int(partition) < len(stores):
            raise ConfigError(
                f"partition-id {partition} has no store: {data_dir} holds {len(stores)} stores"
            )
        store_dir = stores[int(partition)]
    lifetime = _setting("lifetime-epsilon", node, run, baked)
    secagg = _setting("require-secagg", node)
    if secagg is None:
        secagg = _setting("secagg", run, baked)
    shares = {
        purpose: float(value)
        for purpose in ("churn", "preference", "analytics")
        if (value := _setting(f"budget-share-{purpose}", node, run, baked)) is not None
    }
    return StoreSettings(
        store_dir=store_dir,
        lifetime_epsilon=float(lifetime) if lifetime is not None else DEFAULT_LIFETIME_EPSILON,
        require_secagg=bool(secagg),
        partition_id=int(partition) if partition is not None else None,
        split=_budget_split(**shares),  # checks the shares before any data is read
    )


# -- the split -----------------------------------------------------------------------------
def eval_mask(customer_ids: Sequence[str] | pd.Index, fraction: float) -> np.ndarray:
    """True for customers held out for evaluation: a keyed-pseudonym hash below ``fraction``.

    Deterministic across runs (pseudonyms are stable for a store key), so a customer stays
    on the same side of the split.
    """
    cut = int(fraction * 2**64)
    return np.fromiter(
        (
            int.from_bytes(hashlib.sha256(f"{_SPLIT_SALT}{cid}".encode()).digest()[:8], "big") < cut
            for cid in customer_ids
        ),
        dtype=bool,
        count=len(customer_ids),
    )


@dataclass(frozen=True)
class _Data:
    """The task's training and held-out rows (y: churn (n,) or category multi-hot (n, V))."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    history_eval: Any = None  # preference: held-out customers' pre-cutoff category counts
    popularity: np.ndarray | None = None  # preference: training customers' category counts

    _ARRAYS = ("x_train", "y_train", "x_eval", "y_eval")

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Numeric arrays only (for :mod:`fedcrm.clients.task_cache`)."""
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        if self.history_eval is not None:
            h = self.history_eval
            arrays.update(history_indptr=h.indptr, history_indices=h.indices,
                          history_data=h.data, history_cols=np.asarray(h.n_cols))  # fmt: skip
        if self.popularity is not None:
            arrays["popularity"] = self.popularity
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> _Data | None:
        """The inverse of :meth:`as_arrays`; None when arrays are missing."""
        from fedcrm.models.vocabulary import SparseRows

        if any(name not in arrays for name in cls._ARRAYS):
            return None
        history = None
        if "history_indptr" in arrays:
            history = SparseRows(arrays["history_indptr"], arrays["history_indices"],
                                 arrays["history_data"], int(arrays["history_cols"]))  # fmt: skip
        return cls(
            *(arrays[name] for name in cls._ARRAYS),
            history_eval=history,
            popularity=arrays.get("popularity"),
        )


#: This run's preparation of each store, shared by its tasks: {(run, store, cutoff, horizon,
#: feature spec): PreparedStore}. Consent is thus read once per run, at its first task.
_PREPARED: dict[tuple[int, str, str, int, str], Any] = {}


def _prepared_store(settings: StoreSettings, plan: TrainingPlan, run_id: int | None) -> Any:
    """The store's preparation for ``plan``: made once per run (``run_id``; None: no reuse);
    a task with the shared vocabulary relabels it rather than loading the store again."""
    from fedcrm.clients.preparation import PreparationRequest, prepare_store

    vocabulary = plan.category_vocabulary()
    key = (run_id or 0, str(settings.store_dir), plan.cutoff, plan.horizon_days, plan.feature_spec)
    prepared = _PREPARED.get(key) if run_id is not None else None
    if prepared is None:
        request = PreparationRequest(
            cutoff=pd.Timestamp(plan.cutoff) if plan.cutoff else None,
            purpose=CONSENT_PURPOSE,
            horizon_days=plan.horizon_days,
        )
        prepared = prepare_store(
            settings.store_dir, request, spec=plan.spec(), vocabulary=vocabulary
        )
        if run_id is not None:
            from fedcrm.clients.store_audit import audit_preparation

            audit_preparation(settings.layout, run_id, plan.task, prepared)
            for stale in [k for k in _PREPARED if k[0] != run_id]:
                del _PREPARED[stale]  # another run's data: drop it
            _PREPARED[key] = prepared
    elif vocabulary is not None and prepared.vocabulary.tokens != vocabulary.tokens:
        prepared = prepared.with_vocabulary(vocabulary)
    return prepared


def _prepare(settings: StoreSettings, plan: TrainingPlan, run_id: int | None = None) -> _Data:
    prepared = _prepared_store(settings, plan, run_id)
    if prepared.labels is None:
        raise DataError("the store produced no labels")
    if run_id is not None:  # which customers' data this run's task uses (for erasure requests)
        from fedcrm.privacy.erasure import record_participation

        record_participation(
            settings.layout, str(run_id), plan.task, prepared.features.customer_ids
        )
    features = np.asarray(prepared.features.matrix, dtype=np.float32)
    held_out = eval_mask(prepared.features.customer_ids, plan.eval_fraction)
    if plan.task == "churn":
        y = np.asarray(prepared.labels.churn, dtype=np.float32)
        data = _Data(features[~held_out], y[~held_out], features[held_out], y[held_out])
    else:
        data = _preference_data(prepared, features, held_out)
    if len(data.y_train) == 0:
        raise DataError("no consented customers left for training after the split")
    return data


def _preference_data(prepared: Any, features: np.ndarray, held_out: np.ndarray) -> _Data:
    """Inputs = features + pre-cutoff category shares; targets = categories bought in the
    horizon (multi-hot over the shared vocabulary, UNKNOWN column never a target)."""
    from fedcrm.models.preference import preference_inputs

    history, truth = prepared.history, prepared.labels.preference
    if history is None or truth is None:
        raise DataError("the store's data yields no category history or preference labels")
    x = preference_inputs(features, history)
    y = truth.to_dense(np.float32)
    y[:, 0] = 0.0  # UNKNOWN is not a category anyone can be recommended
    counts = history.to_dense(np.float64)
    return _Data(
        x[~held_out],
        y[~held_out],
        x[held_out],
        y[held_out],
        history_eval=history.take(np.flatnonzero(held_out)),
        popularity=counts[~held_out].sum(axis=0),
    )


# -- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetAnswer:
    """Numbers only: the coordinator writes the words."""

    allowed_rounds: int
    requested_epsilon: float
    remaining_epsilon: float
    difference_epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    delta: float
    num_train: int
    num_eval: int

    def as_metrics(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FitOutcome:
    deltas: list[np.ndarray]
    num_examples: int
    metrics: dict[str, int | float]

    @property
    def refused(self) -> bool:
        return bool(self.metrics.get("refused"))


def store_dp_numbers(
    n: int, plan: Any, recorded_delta: float | None
) -> tuple[float, float, int, float]:
    """(δ, sample rate q, steps per round, noise multiplier σ) of a store of ``n`` records.

    δ is the ledger's recorded δ, else the plan's, never above ``default_delta(n)``; σ is
    planned once for the whole run (rounds × local epochs). One function so that the store
    agent and the local-only baseline can never drift apart.
    """
    from fedcrm.privacy.accounting import default_delta, plan_noise_multiplier
    from fedcrm.privacy.dp_sgd import sample_rate_for, steps_per_epoch

    ceiling = float(default_delta(n))
    delta = float(recorded_delta or min(plan.delta or ceiling, ceiling))
    q = float(sample_rate_for(n, plan.batch_size))
    steps_per_round = plan.local_epochs * steps_per_epoch(n, plan.batch_size)
    sigma = float(plan_noise_multiplier(plan.epsilon, delta, q, plan.num_rounds * steps_per_round))
    return delta, q, steps_per_round, sigma


@dataclass(frozen=True)
class EvalOutcome:
    loss: float
    num_examples: int
    metrics: dict[str, int | float]


def _decision_metrics(decision: Any) -> dict[str, float]:
    return {
        "requested_epsilon": float(decision.requested),
        "remaining_epsilon": float(decision.remaining),
        "difference_epsilon": float(decision.difference),
    }


# -- the agent ------------------------------------------------------------------------------
class StoreAgent:
    """One store in one run: the DP plan, the ledger and (loaded on first use) the data.

    The plan's numbers (δ, q, steps per round, σ, split sizes) are kept in ``Context.state``;
    an agent rebuilt from them checks the ledger before it touches any data, so a refused
    round reads nothing.
    """

    def __init__(
        self, settings: StoreSettings, plan: TrainingPlan, run_id: int, context: Context
    ) -> None:
        self.settings, self.plan, self.run_id = settings, plan, run_id
        self._data: _Data | None = None
        state = context.state.config_records.get(f"{_DP_STATE}.{plan.task}")
        if state is not None and state.get("plan-digest") == plan.digest:
            numbers = cast(dict[str, float], dict(state))
            self.delta = float(numbers["delta"])
            self.sample_rate = float(numbers["sample-rate"])
            self.steps_per_round = int(numbers["steps-per-round"])
            self.noise_multiplier = float(numbers["noise-multiplier"])
            self.num_train = int(numbers["num-train"])
            self.num_eval = int(numbers["num-eval"])
            return
        self._plan_privacy(context)

    def _plan_privacy(self, context: Context) -> None:
        """σ for the whole plan, once per run; the numbers go to ``Context.state``."""
        from fedcrm.privacy.accounting import default_delta
        from fedcrm.privacy.ledger import PrivacyLedger

        plan = self.plan
        n = self.num_train = len(self.data.y_train)
        self.num_eval = len(self.data.y_eval)
        recorded = PrivacyLedger.recorded_delta(self.settings.layout)
        ceiling = float(default_delta(n))  # the store never accepts a weaker δ
        if plan.delta > ceiling:
            logger.warning(
                "the coordinator asks for δ=%g, above this store's ceiling min(1e-5, 1/(10N))="
                "%g; using %g",
                plan.delta,
                ceiling,
                ceiling,
            )

        if recorded and plan.delta and plan.delta != recorded:
            logger.warning(
                "the coordinator asks for δ=%g but this store's ledger is kept at δ=%g for its "
                "lifetime; using δ=%g",
                plan.delta,
                recorded,
                recorded,
            )
        self.delta, self.sample_rate, self.steps_per_round, self.noise_multiplier = (
            store_dp_numbers(n, plan, recorded)
        )
        context.state.config_records[f"{_DP_STATE}.{plan.task}"] = ConfigRecord(
            {
                "plan-digest": plan.digest,
                "delta": self.delta,
                "sample-rate": self.sample_rate,
                "steps-per-round": self.steps_per_round,
                "noise-multiplier": self.noise_multiplier,
                "num-train": self.num_train,
                "num-eval": self.num_eval,
            }
        )
        logger.info(
            "store plan: N=%d, q=%.4f, %d steps/round, σ=%.3f for ε=%.2f, δ=%.2g over %d rounds",
            n,
            self.sample_rate,
            self.steps_per_round,
            self.noise_multiplier,
            plan.epsilon,
            self.delta,
            plan.num_rounds,
        )

    @property
    def data(self) -> _Data:
        """The store's prepared, split data: prepared at the task's first use in this run,
        then kept in memory and in the store's task cache (:mod:`fedcrm.clients.task_cache`),
        which later processes of the run read instead of preparing again."""
        if self._data is None:
            from fedcrm.clients import task_cache

            layout, digest = self.settings.layout, self.plan.digest
            cached = task_cache.load_arrays(layout, self.run_id, digest)
            data = _Data.from_arrays(cached) if cached is not None else None
            if data is None:
                data = _prepare(self.settings, self.plan, self.run_id)
                task_cache.save_arrays(layout, self.run_id, digest, data.as_arrays())
            self._data = data
        return self._data

    # ledger ------------------------------------------------------------------------------
    def _ledger(self) -> Any:
        from fedcrm.privacy.ledger import PrivacyBudget, PrivacyLedger

        budget = PrivacyBudget(self.settings.lifetime_epsilon, self.delta)
        return PrivacyLedger.open(self.settings.layout, budget, self.settings.split)

    def _entry(self, server_round: int, steps: int, sample_rate: float | None = None) -> Any:
        from fedcrm.privacy.ledger import LedgerEntry

        return LedgerEntry(
            run_id=str(self.run_id),
            round=server_round,
            purpose=self.plan.task,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate if sample_rate is None else sample_rate,
            steps=steps,
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def budget_answer(self) -> BudgetAnswer:
        """How many of the planned rounds the lifetime budget allows (largest k that fits)."""
        ledger = self._ledger()
        rounds = self.plan.num_rounds

        def check(k: int) -> Any:
            return ledger.check(self._entry(1, k * self.steps_per_round))

        decision = check(rounds)
        allowed = rounds
        if not decision.allowed:
            low, high = 0, rounds - 1  # invariant: low rounds fit, high + 1 do not
            while low < high:
                mid = (low + high + 1) // 2
                if check(mid).allowed:
                    low = mid
                else:
                    high = mid - 1
            allowed = low
            decision = check(allowed + 1)
        numbers = _decision_metrics(decision)
        return BudgetAnswer(
            allowed_rounds=allowed,
            requested_epsilon=numbers["requested_epsilon"],
            remaining_epsilon=numbers["remaining_epsilon"],
            difference_epsilon=numbers["difference_epsilon"],
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps_per_round=self.steps_per_round,
            delta=self.delta,
            num_train=self.num_train,
            num_eval=self.num_eval,
        )

    # model -------------------------------------------------------------------------------
    def _model(self, arrays: Sequence[np.ndarray]) -> tuple[Any, list[str]]:
        import torch

        torch.set_num_threads(1)
        model = task_model(self.plan, self.data.x_train.shape[1])
        names = list(model.state_dict())
        shapes = [tuple(t.shape) for t in model.state_dict().values()]
        if len(arrays) != len(names) or [a.shape for a in arrays] != shapes:
            raise ConfigError(
                f"the coordinator's model does not fit this store's {self.plan.task} model "
                f"({len(arrays)} arrays vs {len(names)})"
            )
        state = {
            k: torch.from_numpy(np.array(a, dtype=np.float32))
            for k, a in zip(names, arrays, strict=True)
        }
        model.load_state_dict(state)
        return model, names

    def fit(self, arrays: Sequence[np.ndarray], server_round: int, context: Context) -> FitOutcome:
        """Ledger check → DP-SGD → ledger record; a refusal is a zero update of weight 0."""
        from fedcrm.errors import BudgetExceededError
        from fedcrm.privacy.dp_sgd import DpSgdConfig, train_dp

        ledger = self._ledger()
        entry = self._entry(server_round, self.steps_per_round)
        decision = ledger.check(entry)
        if not decision.allowed:
            logger.warning("round %d refused by the privacy ledger: %s", server_round,
                           decision.message)  # fmt: skip
            self._audit_refusal(server_round, decision)
            return self._refusal(arrays, decision)
        model, names = self._model(arrays)
        config = DpSgdConfig(
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.plan.clip_norm,
            expected_batch_size=self.plan.batch_size,
            epochs=self.plan.local_epochs,
            learning_rate=self.plan.learning_rate,
            optimizer="sgd",
            seed=None,  # fresh OS entropy: a coordinator-known seed would void the noise
        )
        criterion = None
        if self.plan.task == "preference":
            from fedcrm.models.preference import MultiLabelLoss

            criterion = MultiLabelLoss()
        result = train_dp(model, self.data.x_train, self.data.y_train, config, criterion=criterion)
        actual = replace(entry, steps=int(result.steps), sample_rate=float(result.sample_rate))
        try:
            ledger.record(actual)
        except BudgetExceededError:
            logger.warning("round %d: the trained update exceeds the budget; discarded",
                           server_round)  # fmt: skip
            decision = ledger.check(actual)
            self._audit_refusal(server_round, decision)
            return self._refusal(arrays, decision)
        _append_history(context, server_round, actual)
        self._audit_round(server_round, actual, ledger)
        # mean_loss is computed from private data without noise: it stays in the store's log.
        logger.info("round %d: %d DP-SGD steps, private mean loss %.4f", server_round,
                    result.steps, result.mean_loss)  # fmt: skip
        state = {k.removeprefix("_module."): v for k, v in result.state_dict.items()}
        deltas = [
            (state[k].detach().cpu().numpy().astype(np.float32) - np.asarray(a, np.float32))
            for k, a in zip(names, arrays, strict=True)
        ]
        return FitOutcome(
            deltas,
            int(result.records),
            {
                "steps": int(result.steps),
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": float(result.sample_rate),
                "refused": 0,
            },
        )

    def _audit_round(self, server_round: int, entry: Any, ledger: Any) -> None:
        from fedcrm.clients.store_audit import audit

        audit(
            self.settings.layout,
            "dp_round",
            {
                "run_id": str(self.run_id),
                "task": self.plan.task,
                "round": server_round,
                "noise_multiplier": entry.noise_multiplier,
                "sample_rate": entry.sample_rate,
                "steps": entry.steps,
                "clip_norm": self.plan.clip_norm,
                "delta": self.delta,
                "purpose_epsilon_spent": float(ledger.spent(self.plan.task)),
                "lifetime_epsilon_spent": float(ledger.spent()),
            },
        )

    def _audit_refusal(self, server_round: int, decision: Any) -> None:
        from fedcrm.clients.store_audit import audit

        audit(
            self.settings.layout,
            "refusal",
            {
                "run_id": str(self.run_id),
                "task": self.plan.task,
                "round": server_round,
                "scope": decision.scope,
                **_decision_metrics(decision),
            },
        )

    def _refusal(self, arrays: Sequence[np.ndarray], decision: Any) -> FitOutcome:
        zeros = [np.zeros_like(np.asarray(a, dtype=np.float32)) for a in arrays]
        return FitOutcome(zeros, 0, {"refused": 1, **_decision_metrics(decision)})

    def evaluate(self, arrays: Sequence[np.ndarray]) -> EvalOutcome:
        if self.plan.task == "preference":
            return self._evaluate_preference(arrays)
        from fedcrm.models.churn import predict_proba
        from fedcrm.models.metrics import brier_score, log_loss, roc_auc

        model, _ = self._model(arrays)
        y = self.data.y_eval
        if len(y) == 0:
            return EvalOutcome(0.0, 0, {"num_eval": 0})
        p = np.asarray(predict_proba(model, self.data.x_eval), dtype=np.float64)
        metrics: dict[str, int | float] = {
            "brier": float(brier_score(y, p)),
            "num_eval": len(y),
        }
        if 0 < y.sum() < len(y):  # AUC needs both classes
            metrics["auc"] = float(roc_auc(y, p))
        return EvalOutcome(float(log_loss(y, p)), len(y), metrics)

    def _evaluate_preference(self, arrays: Sequence[np.ndarray]) -> EvalOutcome:
        """Ranking metrics@k of the model and of the two local baselines on held-out
        customers with at least one category in the horizon (the weight)."""
        from fedcrm.models.preference import predict_scores
        from fedcrm.models.ranking import (
            ndcg_at_k,
            own_history_ranking,
            popularity_ranking,
            precision_at_k,
            recall_at_k,
            top_k,
        )
        from fedcrm.models.vocabulary import SparseRows

        k, y = self.plan.top_k, self.data.y_eval
        judged = int((y.sum(axis=1) > 0).sum())
        if judged == 0:
            return EvalOutcome(0.0, 0, {"num_eval": 0})
        model, _ = self._model(arrays)
        scores = predict_scores(model, self.data.x_eval)
        rows, cols = np.nonzero(y)
        truth = SparseRows.from_pairs(rows, cols, len(y), y.shape[1], binary=True)
        ranked = top_k(scores, k)
        popularity = np.asarray(self.data.popularity, dtype=np.float64)
        popular = popularity_ranking(popularity, len(y), k)
        own = own_history_ranking(self.data.history_eval, popularity, k)
        logits = np.clip(scores, -30, 30)
        loss = float(np.mean(np.sum(np.logaddexp(0, logits) - y * logits, axis=1)))
        metrics: dict[str, int | float] = {
            "recall_at_k": recall_at_k(truth, ranked, k),
            "ndcg_at_k": ndcg_at_k(truth, ranked, k),
            "precision_at_k": precision_at_k(truth, ranked, k),
            "popularity_recall_at_k": recall_at_k(truth, popular, k),
            "own_history_recall_at_k": recall_at_k(truth, own, k),
            "own_history_ndcg_at_k": ndcg_at_k(truth, own, k),
            "num_eval": judged,
        }
        return EvalOutcome(loss, judged, metrics)

    def privacy_report(self, context: Context) -> dict[str, int | float]:
        """This run's achieved ε and the store's lifetime position (numbers only)."""
        from fedcrm.privacy.accounting import epsilon_of

        history = _history(context, self.plan.task)
        run_epsilon = float(epsilon_of(history, self.delta)) if history else 0.0
        ledger = self._ledger()
        report: dict[str, int | float] = {
            "run_epsilon": run_epsilon,
            "purpose_epsilon_spent": float(ledger.spent(self.plan.task)),
            "purpose_epsilon_cap": float(ledger.cap(self.plan.task)),
            **{f"cap_{p}": float(ledger.cap(p)) for p in ("churn", "preference", "analytics")},
            "lifetime_epsilon_spent": float(ledger.spent()),
            "lifetime_epsilon_budget": self.settings.lifetime_epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": int(sum(h[2] for h in history)),
            "rounds_trained": len(history),
            "num_train": self.num_train,
        }
        if self.settings.partition_id is not None:
            report["partition_id"] = self.settings.partition_id
        from fedcrm.clients.store_audit import audit, head_metrics

        audit(
            self.settings.layout,
            "run_end",
            {
                "run_id": str(self.run_id),
                "task": self.plan.task,
                "status": "completed",
                "rounds_trained": report["rounds_trained"],
                "run_epsilon": run_epsilon,
                "lifetime_epsilon_spent": report["lifetime_epsilon_spent"],
            },
        )
        report.update(head_metrics(self.settings.layout))  # what the coordinator records
        from fedcrm.clients.task_cache import discard_arrays

        discard_arrays(self.settings.layout, self.run_id, self.plan.digest)  # the task is over
        return report


def _history(context: Context, task: str) -> list[tuple[float, float, int]]:
    record = context.state.config_records.get(f"{_HISTORY_STATE}.{task}")
    if record is None:
        return []
    sigmas = cast(list[float], record["noise-multiplier"])
    rates = cast(list[float], record["sample-rate"])
    steps = cast(list[int], record["steps"])
    return [(float(s), float(q), int(k)) for s, q, k in zip(sigmas, rates, steps, strict=True)]


def _append_history(context: Context, server_round: int, entry: Any) -> None:
    key = f"{_HISTORY_STATE}.{entry.purpose}"
    record = context.state.config_records.get(key)
    rows: dict[str, list[Any]] = {
        "round": [],
        "noise-multiplier": [],
        "sample-rate": [],
        "steps": [],
    }
    if record is not None:
        rows = {k: list(record[k]) for k in rows}  # type: ignore[arg-type]
    rows["round"].append(int(server_round))
    rows["noise-multiplier"].append(float(entry.noise_multiplier))
    rows["sample-rate"].append(float(entry.sample_rate))
    rows["steps"].append(int(entry.steps))
    context.state.config_records[key] = ConfigRecord(rows)  # type: ignore[arg-type]


def task_model(plan: TrainingPlan, n_inputs: int) -> Any:
    """A fresh model of the plan's task for ``n_inputs`` input columns.

    churn: the plan's churn architecture on the features; preference: the preference model on
    features + the vocabulary's category shares (``n_inputs = len(spec) + len(vocabulary)``).
    """
    if plan.task == "churn":
        from fedcrm.models.churn import build_churn_model

        return build_churn_model(plan.model, n_inputs)
    from fedcrm.models.preference import build_preference_model

    n_categories = len(plan.category_vocabulary())
    return build_preference_model(n_inputs - n_categories, n_categories, dim=plan.embedding_dim)


# -- the per-process cache ------------------------------------------------------------------
_AGENTS: dict[tuple[int, str, str], StoreAgent] = {}
_LOCK = threading.Lock()


def agent_for(
    context: Context, plan: TrainingPlan, defaults: Mapping[str, Any] | None = None
) -> StoreAgent:
    """The agent of this node's store for this run and plan (prepared once per process)."""
    settings = store_settings(context, defaults)
    from fedcrm.clients.store_audit import audit_run_start

    audit_run_start(
        context,
        settings.layout,
        plan.task,
        {"plan_digest": plan.digest, "epsilon": plan.epsilon, "rounds": plan.num_rounds},
    )
    key = (int(context.run_id), str(settings.store_dir), plan.digest)
    with _LOCK:
        agent = _AGENTS.get(key)
        if agent is None:
            for stale in [k for k in _AGENTS if k[0] != key[0]]:
                del _AGENTS[stale]  # another run's data: drop it
            agent = StoreAgent(settings, plan, int(context.run_id), context)
            _AGENTS[key] = agent
        return agent
