"""The coordinator as a Flower ServerApp (``fedcrm.server.app:app``).

One run, in order:

1. read the run_config (:class:`~fedcrm.server.run_config.FederationConfig`), fix the shared
   :class:`~fedcrm.models.snapshot.FeatureSpec` and the initial model;
2. wait for the stores, then send every store the plan in a ``query.privacy_budget`` message;
   each answers, in numbers only, how many planned rounds its lifetime budget allows. Shortfalls
   go to ``RUN/refusals.jsonl`` (requested, remaining, difference) and those stores are left out
   of the rounds they declined (:class:`~fedcrm.server.strategy.ParticipationGate`); a store
   also enforces its ledger itself and sends a zero-weight update if asked anyway;
3. train with Flower's legacy ``DefaultWorkflow`` — under SecAgg+
   (``SecAggPlusWorkflow``) unless ``secagg = false`` — over a wrapped legacy strategy
   (FedAvg / FedAvgM / FedAdam), with federated evaluation and a checkpoint every round;
4. collect each store's achieved ε (``query.privacy_report``), write the final model, the
   model card and ``summary.json`` (its ``privacy`` block: :func:`privacy_summary`).

``on_round(round, total_rounds, record)`` (see :func:`build_server_app`) is called after each
round's federated evaluation with that round's record: aggregate numbers only.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.compat import LegacyContext
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

from fedcrm.clients.app import BUDGET_QUERY, REPORT_QUERY
from fedcrm.clients.store_agent import TrainingPlan
from fedcrm.errors import ConfigError, FedcrmError, PrivacyWarning
from fedcrm.models.snapshot import FeatureSpec
from fedcrm.server.checkpoints import MODEL_CARD_FORMAT, RunDirectory
from fedcrm.server.run_config import FederationConfig
from fedcrm.server.strategy import (
    ParticipationGate,
    RoundEvent,
    RoundRecorder,
    UpdateValidator,
    build_base_strategy,
)

__all__ = [
    "FederationAborted",
    "RoundCallback",
    "app",
    "build_server_app",
    "epsilon_per_round",
    "privacy_summary",
    "resolve_feature_spec",
]

logger = logging.getLogger(__name__)

#: ``on_round(round, total_rounds, record)``: the round's fit and federated-evaluation record.
RoundCallback = Callable[[int, int, Mapping[str, Any]], object]

LIMITATIONS = (
    "Record-level DP-SGD inside each store: the unit is one customer's feature row in that "
    "store. A customer who shops at k stores is protected k times separately (ε composes).",
    "Federated evaluation metrics (loss, AUC, Brier on held-out customers) are released "
    "without DP noise.",
    "SecAgg+ hides individual store updates from the coordinator only; it does not change ε.",
    "The coordinator can validate only the aggregate update under SecAgg+.",
    "Store sizes (training and held-out counts) leave the stores without noise: they weight "
    "the federated average and size SecAgg+'s quantisation.",
    "DP-SGD noise comes from a non-cryptographic generator (torchcsprng is unavailable).",
)


#: How often the coordinator asks the SuperLink for replies it is waiting for.
REPLY_POLL_SECONDS = 0.2
#: The first wait between pulls of an exchange; it doubles up to REPLY_POLL_SECONDS.
FIRST_POLL_SECONDS = 0.01


class FederationAborted(FedcrmError):
    """The runtime around the coordinator stopped (e.g. the simulation engine crashed)."""


class _StoppableGrid(Grid):
    """A Grid that polls for replies at most every ``poll`` seconds (starting at
    ``FIRST_POLL_SECONDS`` and doubling) and gives up waiting as soon as ``stop`` is set.

    Flower's deployment Grid sleeps 3 s between pulls of replies, which adds up to 3 s to
    every exchange (a SecAgg+ round is four); this one asks again after 0.01 s, 0.02 s, …
    up to ``poll`` through the same public ``pull_messages``, and starts over whenever
    replies came. Flower's simulation runs the ServerApp in a non-daemon thread that keeps
    waiting for replies after the simulation engine has crashed; ``stop`` ends it promptly
    instead.
    """

    def __init__(
        self,
        grid: Grid,
        stop: threading.Event,
        poll: float = 0.1,
        tap: Callable[[Message], object] | None = None,
    ) -> None:
        self._grid, self._stop, self._poll, self._tap = grid, stop, poll, tap

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        self._check()
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self._check()
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self._check()
        replies = list(self._grid.pull_messages(message_ids))
        if self._tap is not None:
            for reply in replies:  # what reached the coordinator, exactly as it arrived
                self._tap(reply)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        delay = min(FIRST_POLL_SECONDS, self._poll)
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                # back off from FIRST_POLL_SECONDS to ``poll``; start over when replies came
                delay = min(FIRST_POLL_SECONDS, self._poll) if got else min(2 * delay, self._poll)
                time.sleep(delay)
        return replies

    def _check(self) -> None:
        if self._stop.is_set():
            raise FederationAborted("the federation runtime stopped; the coordinator gives up")


def resolve_feature_spec(config: FederationConfig) -> FeatureSpec:
    """feature-spec JSON, else the chain manifest's categories, else the default spec."""
    if config.feature_spec:
        return FeatureSpec.from_dict(json.loads(config.feature_spec))
    from fedcrm.models.vocabulary import CategoryVocabulary
    from fedcrm.synthetic.chain import chain_categories

    categories = chain_categories(config.data_path) if config.data_path else ()
    if categories:
        return FeatureSpec.from_vocabulary(CategoryVocabulary.from_categories(categories))
    return FeatureSpec()


def initial_arrays(plan: TrainingPlan, n_inputs: int, seed: int) -> tuple[list[str], list[Any]]:
    """Parameter names and float32 arrays of a fresh model of the plan's task (seeded)."""
    import torch

    from fedcrm.clients.store_agent import task_model

    torch.manual_seed(seed)
    state = task_model(plan, n_inputs).state_dict()
    return list(state), [t.detach().cpu().numpy().astype(np.float32) for t in state.values()]


def churn_plan(config: FederationConfig, spec: FeatureSpec) -> TrainingPlan:
    """The plan every store receives for the churn task (the run's data settings)."""
    return TrainingPlan(
        num_rounds=config.num_rounds,
        local_epochs=config.local_epochs,
        epsilon=config.epsilon,
        delta=config.delta,
        model=config.model,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        clip_norm=config.clip_norm,
        horizon_days=config.horizon_days,
        eval_fraction=config.eval_fraction,
        feature_spec=json.dumps(spec.to_dict(), sort_keys=True),
        cutoff=config.cutoff,
    )


def _wait_for_nodes(grid: Grid, want: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= want:
            return nodes
        if time.monotonic() > deadline:
            raise ConfigError(f"only {len(nodes)} of {want} stores connected within {timeout:g}s")
        time.sleep(0.2)


def ask_stores(
    grid: Grid,
    nodes: list[int],
    message_type: str,
    content: tuple[str, Mapping[str, Any]],
    reply_record: str,
    timeout: float,
) -> dict[int, dict[str, float]]:
    """Send ``message_type`` carrying the config record ``content = (name, values)`` to every
    node; the numbers of each reply's ``reply_record``, by node id (errors logged, skipped)."""
    name, values = content
    messages = [
        Message(
            RecordDict({name: ConfigRecord(dict(values))}),  # type: ignore[arg-type]
            dst_node_id=nid,
            message_type=message_type,
        )
        for nid in nodes
    ]
    answers: dict[int, dict[str, float]] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning("store %s did not answer %s: %s", node, message_type, reply.error)
            continue
        metrics = reply.content.metric_records.get(reply_record)
        if metrics is not None:
            answers[node] = {k: float(v) for k, v in metrics.items()}  # type: ignore[arg-type]
    return answers


def _query(
    grid: Grid, nodes: list[int], message_type: str, plan: TrainingPlan, timeout: float
) -> dict[int, dict[str, float]]:
    """Send ``message_type`` with the plan to every node; numeric answers by node id."""
    record = "budget" if message_type == BUDGET_QUERY else "report"
    return ask_stores(grid, nodes, message_type, ("plan", plan.to_config()), record, timeout)


def _refusal_message(first: int, last: int, a: Mapping[str, float]) -> str:
    return (
        f"the store declines rounds {first}-{last}: its privacy ledger reports requested "
        f"ε={a['requested_epsilon']:.4g}, remaining ε={a['remaining_epsilon']:.4g}, "
        f"difference {a['difference_epsilon']:.4g}"
    )


def epsilon_per_round(store: Mapping[str, Any]) -> list[float]:
    """A store's ε after each of its ``rounds_trained`` rounds, from its public DP numbers.

    PRV (:func:`~fedcrm.privacy.accounting.epsilon_of`) of ``(σ, q, steps·k/rounds)`` at its δ
    for k = 1..rounds; the last value is the run ε the store reported. [] when unknown.
    """
    from fedcrm.privacy.accounting import epsilon_of

    try:
        rounds, steps = int(store.get("rounds_trained", 0)), int(store.get("steps", 0))
        sigma, q = float(store["noise_multiplier"]), float(store["sample_rate"])
        delta = float(store["delta"])
        if rounds < 1 or steps < rounds:
            return []
        return [epsilon_of([(sigma, q, steps * k // rounds)], delta) for k in range(1, rounds + 1)]
    except (KeyError, TypeError, ValueError, ConfigError):
        logger.warning("a store's DP numbers are incomplete: no ε per round for it")
        return []


def _store_labels(config: FederationConfig, stores: Sequence[Mapping[str, Any]]) -> list[str]:
    """The store's directory name in simulation (partition id → sorted stores), else node-<id>."""
    from fedcrm.data.layout import discover_stores

    dirs: list[str] = []
    if config.data_path is not None and any("partition_id" in s for s in stores):
        try:
            dirs = [d.name for d in discover_stores(config.data_path)]
        except FedcrmError:
            dirs = []
    labels = []
    for s in stores:
        pid = int(s["partition_id"]) if s.get("partition_id") is not None else -1
        labels.append(dirs[pid] if 0 <= pid < len(dirs) else f"node-{s['node_id']}")
    return labels


def privacy_summary(
    stores: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    target_epsilon: float,
    purpose: str = "churn",
) -> dict[str, Any]:
    """``summary.json``'s ``privacy`` block: achieved ε per store against the run's target.

    ``delta`` is the stores' common δ, or the largest when they differ (every store's ε also
    holds at a larger δ); each store lists its own.
    """
    from fedcrm.privacy.accounting import ACCOUNTANT

    per_store: dict[str, dict[str, Any]] = {}
    for label, s in zip(labels, stores, strict=True):
        budget, spent = s.get("lifetime_epsilon_budget"), s.get("lifetime_epsilon_spent")
        per_store[label] = {
            "epsilon": s.get("run_epsilon"),
            "budget": target_epsilon,
            "delta": s.get("delta"),
            "rounds_trained": int(s.get("rounds_trained", 0)),
            "epsilon_per_round": epsilon_per_round(s),
            "lifetime_budget": budget,
            "lifetime_spent": spent,
            "lifetime_remaining": (
                None if budget is None or spent is None else max(0.0, budget - spent)
            ),
            f"{purpose}_spent": s.get("purpose_epsilon_spent"),
            f"{purpose}_cap": s.get("purpose_epsilon_cap"),
            "lifetime_split": {
                p: s[f"cap_{p}"] for p in ("churn", "preference", "analytics") if f"cap_{p}" in s
            },
            "noise_multiplier": s.get("noise_multiplier"),
            "sample_rate": s.get("sample_rate"),
            "steps": None if s.get("steps") is None else int(s["steps"]),
        }
    deltas = [float(v["delta"]) for v in per_store.values() if v["delta"] is not None]
    return {
        "accountant": ACCOUNTANT,
        "delta": max(deltas) if deltas else None,
        "target_epsilon": target_epsilon,
        "stores": per_store,
    }


@dataclass
class _Task:
    """One model trained in the run: its plan, initial arrays and output files."""

    name: str  # "churn" | "preference"
    plan: TrainingPlan
    names: list[str]
    initial: list[np.ndarray]
    run: RunDirectory
    target_epsilon: float


class _Coordinator:
    def __init__(
        self,
        config: FederationConfig,
        grid: Grid,
        context: Context,
        on_round: RoundCallback | None = None,
    ) -> None:
        self.config, self.grid, self.context = config, grid, context
        self.on_round = on_round
        self.spec = resolve_feature_spec(config)
        plan = churn_plan(config, self.spec)
        names, initial = initial_arrays(plan, len(self.spec), config.seed)
        self.run = RunDirectory(config.run_path, names)
        self.churn = _Task("churn", plan, names, initial, self.run, config.epsilon)

    def record(self, event: RoundEvent, task: str = "churn") -> None:
        self.run.append_event(event.kind, {"time": _now(), "task": task, **event.as_dict()})

    def round_metrics(self, task: _Task, server_round: int, record: dict[str, Any]) -> None:
        """Checkpoint the round's metrics; after its federated evaluation, tell ``on_round``."""
        task.run.write_round_metrics(server_round, record)
        if self.on_round is None or "evaluate" not in record:
            return
        try:
            self.on_round(server_round, task.plan.num_rounds, {"task": task.name, **record})
        except Exception:  # a progress display must never stop the federation
            logger.warning("on_round failed in round %d", server_round, exc_info=True)

    def budget_round(
        self, task: _Task, nodes: list[int]
    ) -> tuple[dict[int, int], dict[int, dict[str, float]]]:
        answers = _query(self.grid, nodes, BUDGET_QUERY, task.plan, self.config.node_timeout)
        allowed: dict[int, int] = {}
        rounds = task.plan.num_rounds
        for node in nodes:
            answer = answers.get(node)
            if answer is None:
                self.run.append_event(
                    "refused",
                    {"time": _now(), "kind": "refused", "task": task.name,
                     "source": "budget-query", "node_id": node, "allowed_rounds": 0,
                     "rounds": list(range(1, rounds + 1)),
                     "message": "no valid budget answer: the store is left out (fail closed)"},
                )  # fmt: skip
                continue
            allowed[node] = int(answer["allowed_rounds"])
            if allowed[node] < rounds:
                first = allowed[node] + 1
                self.run.append_event(
                    "refused",
                    {"time": _now(), "kind": "refused", "task": task.name,
                     "source": "budget-query", "node_id": node,
                     "allowed_rounds": allowed[node],
                     "rounds": list(range(first, rounds + 1)),
                     "requested_epsilon": answer["requested_epsilon"],
                     "remaining_epsilon": answer["remaining_epsilon"],
                     "difference_epsilon": answer["difference_epsilon"],
                     "message": _refusal_message(first, rounds, answer)},
                )  # fmt: skip
        return allowed, answers

    def strategy(
        self, task: _Task, allowed: dict[int, int], answers: Mapping[int, Mapping[str, float]]
    ) -> RoundRecorder:
        config = self.config
        plan_config: dict[str, Scalar] = dict(task.plan.to_config())

        def fit_config(server_round: int) -> dict[str, Scalar]:
            return {**plan_config, "server-round": server_round}

        def on_event(event: RoundEvent) -> None:
            self.record(event, task.name)

        base = build_base_strategy(
            config.server_optimizer,
            initial_parameters=ndarrays_to_parameters(task.initial),
            min_stores=config.min_stores,
            server_learning_rate=config.server_learning_rate,
            server_momentum=config.server_momentum,
            on_fit_config_fn=fit_config,
            on_evaluate_config_fn=fit_config,
            aggregation=config.aggregation,
            robust_trim=config.robust_trim,
            robust_malicious=config.robust_malicious,
        )
        gate = ParticipationGate(base, allowed, min_stores=config.min_stores, on_event=on_event)
        # max-update-norm > 0: one fixed bound, set for the churn model (a larger model's
        # update of the same per-parameter size has a norm larger by √(its parameters /
        # churn's parameters)); 0: each store's bound from its DP plan
        scale = math.sqrt(_size(task.initial) / _size(self.churn.initial))
        bounds = None
        if config.max_update_norm == 0:
            from fedcrm.server.update_bounds import store_update_bounds

            bounds = store_update_bounds(
                answers,
                learning_rate=task.plan.learning_rate,
                clip_norm=task.plan.clip_norm,
                parameters=_size(task.initial),
            )
        validator = UpdateValidator(
            gate,
            task.initial,
            max_update_norm=config.max_update_norm * scale if config.max_update_norm else 0.0,
            secure_aggregation=config.secagg,
            on_event=on_event,
            bounds=bounds,
        )
        return RoundRecorder(
            validator,
            on_model=task.run.write_checkpoint,
            on_metrics=lambda r, record: self.round_metrics(task, r, record),
            on_event=on_event,
        )

    def workflow(self, answers: dict[int, dict[str, float]]) -> DefaultWorkflow:
        if not self.config.secagg:
            warnings.warn(
                "secagg=false: the coordinator sees every store's individual model update",
                PrivacyWarning,
                stacklevel=2,
            )
            return DefaultWorkflow()
        max_weight = max([a.get("num_train", 1.0) for a in answers.values()] + [1.0])
        return DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=self.config.secagg_num_shares(len(answers)),
                reconstruction_threshold=0.67,
                max_weight=max_weight,
                clipping_range=self.config.secagg_clipping_range,
                quantization_range=2**22,
                timeout=self.config.node_timeout,
            )
        )

    def train(self, task: _Task, nodes: list[int]) -> dict[str, Any]:
        """Budget query, the rounds (SecAgg+ unless off), the final model and the stores'
        privacy reports of one task."""
        began = time.perf_counter()
        allowed, answers = self.budget_round(task, nodes)
        strategy = self.strategy(task, allowed, answers)
        legacy = LegacyContext(
            self.context, config=ServerConfig(num_rounds=task.plan.num_rounds), strategy=strategy
        )
        self.workflow(answers)(self.grid, legacy)
        final = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(
                legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
        )
        model_files = task.run.write_final_model(final)
        reports = _query(self.grid, nodes, REPORT_QUERY, task.plan, self.config.node_timeout)
        raw = [{"node_id": n, **answers.get(n, {}), **reports.get(n, {})} for n in nodes]
        raw.sort(key=lambda s: (s.get("partition_id", float("inf")), s["node_id"]))
        labels = _store_labels(self.config, raw)
        stores = [{"store": label, **s} for label, s in zip(labels, raw, strict=True)]
        history = [strategy.rounds[r] for r in sorted(strategy.rounds)]
        refusals = [
            e for e in self.run.read_events("refused") if e.get("task", "churn") == task.name
        ]
        rejections = [
            e for e in self.run.read_events("rejected") if e.get("task", "churn") == task.name
        ]
        incidents = [
            e
            for kind in ("dropped", "failed")
            for e in self.run.read_events(kind)
            if e.get("task", "churn") == task.name
        ]
        return {
            "stores": stores,
            "labels": labels,
            "history": history,
            "refusals": refusals,
            "rejections": rejections,
            "incidents": incidents,
            "model_files": model_files,
            "privacy": privacy_summary(stores, labels, task.target_epsilon, task.name),
            "seconds": round(time.perf_counter() - began, 3),
        }

    def run_all(self) -> dict[str, Any]:
        config = self.config
        began = time.perf_counter()
        self.run.claim()
        self.start_audit()
        warnings.warn(LIMITATIONS[1], PrivacyWarning, stacklevel=2)
        nodes = _wait_for_nodes(self.grid, config.stores_to_wait_for, config.node_timeout)
        churn = self.train(self.churn, nodes)
        self.audit_task(self.churn, churn)
        history = churn["history"]
        card = self.model_card(
            churn["stores"], history, churn["model_files"], len(churn["refusals"]),
            len(churn["rejections"]),
        )  # fmt: skip
        self.run.write_model_card(card)
        summary = {
            "run_id": int(self.context.run_id),
            "rounds": len(history),
            "rounds_planned": config.num_rounds,
            "history": history,
            "final": (history[-1].get("evaluate") if history else None) or {},
            "final_loss": history[-1].get("loss") if history else None,
            "privacy": churn["privacy"],
            "stores": churn["stores"],
            "refusals": churn["refusals"],
            "rejections": churn["rejections"],
            "incidents": churn["incidents"],
            "model": {k: str(v) for k, v in churn["model_files"].items()},
            "model_card": str(self.run.model_card_path),
            "preference": self.train_preference(nodes),
            "training_seconds": round(time.perf_counter() - began, 3),
        }
        if config.analytics_query_names:
            summary["analytics"] = self.analytics(nodes, self.run.root / "analytics")
        self.run.write_summary(summary)
        self.end_audit("completed")
        return summary

    # the coordinator's audit trail (fedcrm.server.audit_trail) -----------------------------
    def start_audit(self) -> None:
        from fedcrm.audit.log import digest
        from fedcrm.server.audit_trail import coordinator_log

        c = self.config
        self.audit = coordinator_log(c)
        run = {"run_id": str(self.context.run_id), "mode": c.mode}
        self.audit.append("run_start", run)
        self.audit.append(
            "config",
            {
                **run,
                "config_digest": digest(c.to_run_config()),
                "secure_aggregation": c.secagg,
                "epsilon": c.epsilon,
                "delta": c.delta,
                "lifetime_epsilon": c.lifetime_epsilon,
                "clip_norm": c.clip_norm,
                "budget_shares": {"churn": c.share_churn, "preference": c.share_preference,
                                  "analytics": c.share_analytics},
                "analytics_epsilon": c.analytics_epsilon,
                "analytics_k": c.analytics_k,
                "min_stores": c.min_stores,
            },
        )  # fmt: skip

    def audit_task(self, task: _Task, result: Mapping[str, Any]) -> None:
        """A trained task: its model version (file hashes), ε per store, refusals, and
        every store's audit-log head as reported."""
        from fedcrm.server.audit_trail import file_digests, record_store_heads

        self.audit.append(
            "model_version",
            {
                "run_id": str(self.context.run_id),
                "task": task.name,
                "files": file_digests(result["model_files"]),
                "rounds": len(result["history"]),
                "epsilon_target": task.target_epsilon,
                "epsilon_by_store": {s["store"]: s.get("run_epsilon") for s in result["stores"]},
                "refusals": len(result["refusals"]),
                "rejections": len(result["rejections"]),
            },
        )
        record_store_heads(self.audit, result["stores"])

    def end_audit(self, status: str) -> None:
        self.audit.append("run_end", {"run_id": str(self.context.run_id), "status": status})

    def analytics(self, nodes: list[int], out_dir: Any) -> dict[str, Any]:
        """The run's analytics queries (after any training), written to ``out_dir``."""
        from fedcrm.server.analytics import run_analytics

        return run_analytics(self.config, self.grid, self.context, nodes, out_dir, audit=self.audit)

    def run_analytics_only(self) -> dict[str, Any]:
        """``mode = analytics``: the queries alone; ``RUN/analytics.json`` sums them up."""
        from fedcrm.data.atomic import atomic_file

        began = time.perf_counter()
        out = self.config.run_path
        out.mkdir(parents=True, exist_ok=True)
        self.start_audit()
        nodes = _wait_for_nodes(self.grid, self.config.stores_to_wait_for, self.config.node_timeout)
        summary = {
            "run_id": int(self.context.run_id),
            "queries": self.analytics(nodes, out),
            "wall_seconds": round(time.perf_counter() - began, 3),
        }
        with atomic_file(out / "analytics.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
        self.end_audit("completed")
        return summary

    def train_preference(self, nodes: list[int]) -> dict[str, Any]:
        """The preference task, or why it was skipped (``{"skipped": reason}``)."""
        from fedcrm.server.preference import (
            preference_card,
            preference_summary,
            preference_task_plan,
            resolve_vocabulary,
        )

        config = self.config
        if not config.preference:
            return {"skipped": "preference = false in the run configuration"}
        vocabulary = resolve_vocabulary(config)
        if vocabulary is None:
            reason = (
                "the chain declares no category taxonomy (chain.json categories), so there is "
                "no shared category vocabulary; the churn model was trained without it"
            )
            logger.warning("preference model skipped: %s", reason)
            return {"skipped": reason}
        plan = preference_task_plan(config, self.spec, vocabulary)
        n_inputs = len(self.spec) + len(vocabulary)
        names, initial = initial_arrays(plan, n_inputs, config.seed + 1)
        run = RunDirectory(config.run_path, names, task="preference")
        task = _Task("preference", plan, names, initial, run, plan.epsilon)
        result = self.train(task, nodes)
        self.audit_task(task, result)
        card = preference_card(
            config, self.spec, vocabulary, plan, names, result, int(self.context.run_id)
        )
        run.write_model_card({**card, "limitations": list(LIMITATIONS)}, markdown=False)
        return preference_summary(plan, vocabulary, result, str(run.model_card_path))

    def model_card(
        self,
        stores: list[dict[str, Any]],
        rounds: list[dict[str, Any]],
        files: Mapping[str, Any],
        refusals: int,
        rejections: int,
    ) -> dict[str, Any]:
        c = self.config
        return {
            "format": MODEL_CARD_FORMAT,
            "version": 1,
            "run_id": int(self.context.run_id),
            "created_at": _now(),
            "model": {
                "task": "churn within the horizon (binary)",
                "architecture": c.model,
                "n_features": len(self.spec),
                "parameter_names": self.churn.names,
                "calibration": "none in the global model; each store fits Platt scaling on its "
                "own held-out customers when it scores (fedcrm score), and keeps it",
                "files": {k: v.name for k, v in files.items()},
            },
            "data": {
                "cutoff": c.cutoff or "latest with a full label horizon (per store)",
                "horizon_days": c.horizon_days,
                "eval_fraction": c.eval_fraction,
                "features": list(self.spec.feature_names),
                "feature_spec": self.spec.to_dict(),
            },
            "federation": {
                "stores": len(stores),
                "rounds": c.num_rounds,
                "min_stores": c.min_stores,
                "server_optimizer": c.server_optimizer,
                "server_learning_rate": c.server_learning_rate,
                "secure_aggregation": c.secagg,
                "aggregation": c.aggregation,
                "max_update_norm": c.max_update_norm
                or "per store, from its DP plan (fedcrm.server.update_bounds)",
            },
            "privacy": {
                "mechanism": "DP-SGD in each store (Poisson sampling, per-customer clipping)",
                "unit": "one customer's feature row in one store",
                "accountant": "prv",
                "epsilon_target": c.epsilon,
                "delta": c.delta or "per store: its ledger's δ, else default_delta(N)",
                "lifetime_epsilon_default": c.lifetime_epsilon,
                "clip_norm": c.clip_norm,
                "local_epochs": c.local_epochs,
                "batch_size": c.batch_size,
                "learning_rate": c.learning_rate,
                "rounds": c.num_rounds,
                "stores": stores,
            },
            "metrics": {"rounds": rounds},
            "refusals": refusals,
            "rejections": rejections,
            "limitations": list(LIMITATIONS),
        }


def _size(arrays: Sequence[np.ndarray]) -> int:
    return int(sum(np.asarray(a).size for a in arrays))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_server_app(
    defaults: Mapping[str, Any] | None = None,
    *,
    stop: threading.Event | None = None,
    on_round: RoundCallback | None = None,
    tap: Callable[[Message], object] | None = None,
) -> ServerApp:
    """The coordinator; ``defaults`` are overridden by the run's own run_config.

    Setting ``stop`` makes the coordinator give up waiting (:class:`FederationAborted`).
    ``on_round(round, total_rounds, record)`` is called after each round's federated
    evaluation (in the ServerApp's thread); an exception in it is logged and ignored.
    ``tap(message)`` sees every reply the coordinator receives, as received (an observation
    point for audits and tests of what crosses the boundary).
    """
    baked = dict(defaults or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        config = FederationConfig.from_run_config({**baked, **dict(context.run_config)})
        grid = _StoppableGrid(grid, stop or threading.Event(), tap=tap, poll=REPLY_POLL_SECONDS)
        coordinator = _Coordinator(config, grid, context, on_round)
        if config.mode == "analytics":
            coordinator.run_analytics_only()
            logger.info("analytics finished: %s", config.run_path)
            return
        summary = coordinator.run_all()
        logger.info("federation finished: %s", config.run_path)
        final_auc = summary["final"].get("auc")
        logger.info("final federated AUC: %s", final_auc)

    return server_app


app = build_server_app()
