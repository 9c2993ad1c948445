"""The store agent as a Flower ClientApp (``fedcrm.clients.app:app``).

Handlers (logic in :mod:`fedcrm.clients.store_agent`):

- ``train`` — legacy fit messages (the SecAgg+ workflow speaks the legacy records): ledger
  check → DP-SGD → ledger record; replies with the update as a delta and its weight;
- ``evaluate`` — loss, AUC and Brier score of the global model on the store's held-out split;
- ``query.privacy_budget`` — how many planned rounds the store's lifetime budget allows;
- ``query.privacy_report`` — this run's achieved ε and the ledger's lifetime numbers;
- ``query.analytics_budget`` — whether an analytics query fits the store's ledger (numbers);
- ``train`` carrying a query plan instead of a training plan — the store's noisy answer to
  an analytics query (:mod:`fedcrm.clients.analytics_agent`), sent as the reply's array so
  that SecAgg+ masks it like a model update.

Mods, first = outermost::

    ClientApp(mods=[secaggplus (when the message asks for it), egress guard])

so the guard sits *inside* SecAgg+: it sees the plain fit result (and every evaluate and
query reply) and SecAgg+ masks only what the guard let through. A store whose configuration
says ``secagg = true`` (run_config) or ``require-secagg = true`` (node_config) refuses plain
training messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import (
    Context,
    Error,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedcrm.analytics.plan import QueryPlan
from fedcrm.clients.store_agent import TrainingPlan, agent_for, store_settings
from fedcrm.privacy.egress import EgressGuard

__all__ = ["ANALYTICS_BUDGET_QUERY", "BUDGET_QUERY", "REPORT_QUERY", "app", "build_client_app"]

BUDGET_QUERY = f"{MessageType.QUERY}.privacy_budget"
REPORT_QUERY = f"{MessageType.QUERY}.privacy_report"
ANALYTICS_BUDGET_QUERY = f"{MessageType.QUERY}.analytics_budget"
_OK = Status(Code.OK, "Success")

Handler = Callable[[Message, Context], Message]


def _requires_secagg(context: Context, defaults: Mapping[str, Any]) -> bool:
    if "require-secagg" in context.node_config:
        return bool(context.node_config["require-secagg"])
    return bool(context.run_config.get("secagg", defaults.get("secagg", False)))


def secagg_mod_for(defaults: Mapping[str, Any]) -> Callable[[Message, Context, Handler], Message]:
    """SecAgg+ for training messages that carry its protocol record; else pass through.

    A plain training message reaches a store that requires SecAgg+ only as an error reply.
    """

    def mod(msg: Message, context: Context, call_next: Handler) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        if RECORD_KEY_CONFIGS in msg.content.config_records:
            return secaggplus_mod(msg, context, call_next)
        if _requires_secagg(context, defaults):
            reason = "this store trains only under SecAgg+ secure aggregation"
            return Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, reason), reply_to=msg)
        return call_next(msg, context)

    return mod


def build_client_app(defaults: Mapping[str, Any] | None = None) -> ClientApp:
    """The store agent; ``defaults`` stand in for run_config keys the runtime does not pass
    (``flwr.simulation.run_simulation`` passes none)."""
    baked: dict[str, Any] = dict(defaults or {})

    def audit_decision(context: Context, payload: dict[str, Any]) -> None:
        from fedcrm.clients.store_audit import audit

        audit(store_settings(context, baked).layout, "guard_decision", payload)

    guard = EgressGuard(
        lambda context: store_settings(context, baked).layout.private_dir, audit=audit_decision
    )
    app = ClientApp(mods=[secagg_mod_for(baked), guard])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        if QueryPlan.is_query(fitins.config):
            return _answer(msg, fitins.config, context)
        began = time.perf_counter()
        plan = TrainingPlan.from_config(fitins.config)
        agent = agent_for(context, plan, baked)
        outcome = agent.fit(
            parameters_to_ndarrays(fitins.parameters), int(fitins.config["server-round"]), context
        )
        # the store's handling time (preparation when not cached, DP-SGD): timing only
        metrics: dict[str, Scalar] = {
            **outcome.metrics,
            "compute_seconds": round(time.perf_counter() - began, 3),
        }
        fitres = FitRes(_OK, ndarrays_to_parameters(outcome.deltas), outcome.num_examples, metrics)
        return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        ins = compat.recorddict_to_evaluateins(msg.content, keep_input=True)
        agent = agent_for(context, TrainingPlan.from_config(ins.config), baked)
        outcome = agent.evaluate(parameters_to_ndarrays(ins.parameters))
        metrics: dict[str, Scalar] = {**outcome.metrics}
        res = EvaluateRes(_OK, outcome.loss, outcome.num_examples, metrics)
        return Message(compat.evaluateres_to_recorddict(res), reply_to=msg)

    @app.query("privacy_budget")
    def privacy_budget(msg: Message, context: Context) -> Message:
        plan = TrainingPlan.from_config(msg.content.config_records["plan"])
        answer: dict[str, MetricRecordValues] = {
            **agent_for(context, plan, baked).budget_answer().as_metrics()
        }
        return Message(RecordDict({"budget": MetricRecord(answer)}), reply_to=msg)

    def _answer(msg: Message, config: Mapping[str, Any], context: Context) -> Message:
        from fedcrm.clients.analytics_agent import answer_query

        plan = QueryPlan.from_config(config)
        settings = store_settings(context, baked)
        answer = answer_query(settings, plan, int(context.run_id), int(config["server-round"]))
        # weight 1 for every store: SecAgg+ then returns the mean, which the coordinator
        # multiplies by the number of stores (max_weight = 1 makes the sum exact)
        metrics: dict[str, Scalar] = {**answer.metrics}
        fitres = FitRes(_OK, ndarrays_to_parameters([answer.values]), 1, metrics)
        return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)

    @app.query("analytics_budget")
    def analytics_budget(msg: Message, context: Context) -> Message:
        from fedcrm.clients.analytics_agent import analytics_budget as budget

        plan = QueryPlan.from_config(msg.content.config_records["query"])
        settings = store_settings(context, baked)
        from fedcrm.clients.store_audit import audit_run_start

        audit_run_start(context, settings.layout, "analytics")
        answer = budget(settings, plan, int(context.run_id))
        return Message(RecordDict({"budget": MetricRecord(dict(answer))}), reply_to=msg)

    @app.query("privacy_report")
    def privacy_report(msg: Message, context: Context) -> Message:
        plan = TrainingPlan.from_config(msg.content.config_records["plan"])
        report: dict[str, MetricRecordValues] = {
            **agent_for(context, plan, baked).privacy_report(context)
        }
        return Message(RecordDict({"report": MetricRecord(report)}), reply_to=msg)

    return app


app = build_client_app()
