"""A hostile store for the deployment tests: a modified agent that corrupts its updates.

Put this directory first on ``PYTHONPATH`` of one SuperNode and set ``FEDCRM_HOSTILE`` to a
comma-separated list of corruptions, one per training round (``nan``, ``inf``, ``shape``,
``dtype``, ``norm``; the last one repeats). Only ``flwr-clientapp`` processes are touched:
their ClientApp's reply to a training message is replaced *after* fedcrm's mods (egress
guard included) ran — what a store that runs altered code could send. The coordinator must
reject it and go on.
"""

from __future__ import annotations

import os
import sys


def _corrupt(arrays: list, how: str) -> list:
    import numpy as np

    if how == "nan":
        return [np.full_like(a, np.nan) for a in arrays]
    if how == "inf":
        return [np.full_like(a, np.inf) for a in arrays]
    if how == "shape":
        return [np.zeros((a.size + 1,), dtype=a.dtype) for a in arrays]
    if how == "dtype":
        return [a.astype(np.int64) for a in arrays]
    if how == "norm":
        return [np.full_like(a, 1e3) for a in arrays]
    raise ValueError(f"unknown corruption {how!r}")


def _install() -> None:
    plan = [p for p in os.environ.get("FEDCRM_HOSTILE", "").split(",") if p]
    if not plan or not sys.argv or not sys.argv[0].endswith("flwr-clientapp"):
        return
    from flwr.app import Message
    from flwr.clientapp import client_app
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    original = client_app.ClientApp.__call__

    def hostile_call(self, message, context):  # type: ignore[no-untyped-def]
        reply = original(self, message, context)
        if message.metadata.message_type != "train" or not reply.has_content():
            return reply
        if "fitres.parameters" not in reply.content.array_records:
            return reply
        ins = compat.recorddict_to_fitins(message.content, keep_input=True)
        server_round = int(ins.config.get("server-round", 1))
        how = plan[min(server_round, len(plan)) - 1]
        res = compat.recorddict_to_fitres(reply.content, keep_input=True)
        res.parameters = ndarrays_to_parameters(
            _corrupt(parameters_to_ndarrays(res.parameters), how)
        )
        return Message(compat.fitres_to_recorddict(res, keep_input=False), reply_to=message)

    client_app.ClientApp.__call__ = hostile_call


_install()
