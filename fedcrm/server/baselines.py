"""Reference baselines for the federated churn model (issue 3), computed by the simulation.

Two references, each evaluated on exactly the held-out customers the federated evaluation
uses (same consent filter ``model_training``, same de-identification, same FeatureSpec, same
pseudonym-hash split — the store agent's own preparation, :func:`fedcrm.clients.store_agent.
_prepare`):

- **centralized** (non-private): every store's training split pooled in one place and the same
  model trained with plain torch SGD (no clipping, no noise) for the same number of epochs
  (rounds x local epochs), learning rate and batch size; AUC on the pooled eval splits. Pooling
  raw rows across stores is exactly what the federation exists to avoid: this is a
  *simulation-only* upper reference, never something to run in a deployment.
- **local-only**: each store trains alone under the same per-store DP plan as the federation
  (same ε, δ, sample rate and rounds x epochs steps → the same σ from
  :func:`~fedcrm.privacy.accounting.plan_noise_multiplier`, same
  :func:`~fedcrm.privacy.dp_sgd.train_dp`) and is evaluated on its own eval split; the
  reported AUC is the mean weighted by each store's number of eval customers.

Privacy ledgers: these baselines are references computed by the simulation harness with
direct access to every store's data. They do **not** open, check or record anything in the
stores' lifetime privacy ledgers (the local-only DP training is a hypothetical alternative to
the federated run, not a spend by the store). δ per store is the one the federated run used
when known (``deltas``, from ``summary.json``), else the store agent's rule without the
ledger: ``min(plan δ or default_delta(N), default_delta(N))``. The eval AUCs are released
without noise, like the federated evaluation metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcrm.errors import ConfigError

__all__ = [
    "BASELINES_NOTE",
    "BaselineResult",
    "baselines_for_config",
    "compute_baselines",
    "train_centralized",
]

logger = logging.getLogger(__name__)

BASELINES_NOTE = (
    "Simulation-only references computed by the harness, not by the stores: "
    "centralized_auc pools every store's consent-filtered, de-identified training split and "
    "trains the same model WITHOUT differential privacy (a non-private upper reference that a "
    "deployment must never build); local_only_auc trains each store alone under the same "
    "per-store DP plan (ε, δ, rounds x epochs, same DP-SGD) and reports the eval-size-weighted "
    "mean AUC on each store's own held-out customers. Both use the federated evaluation's "
    "held-out customers and neither touches the stores' privacy ledgers."
)


@dataclass(frozen=True)
class BaselineResult:
    """AUCs of the two references (None where an eval split lacks one of the classes)."""

    centralized_auc: float | None
    local_only_auc: float | None
    local_only_per_store: tuple[dict[str, Any], ...] = field(default=())
    num_train: int = 0
    num_eval: int = 0
    seconds: float = float("nan")

    def as_summary(self, federated_auc: float | None) -> dict[str, Any]:
        """The ``churn`` block of ``summary.json``."""
        return {
            "auc": federated_auc,
            "centralized_auc": self.centralized_auc,
            "local_only_auc": self.local_only_auc,
            "local_only_per_store": list(self.local_only_per_store),
            "baselines_num_train": self.num_train,
            "baselines_num_eval": self.num_eval,
            "baselines_note": BASELINES_NOTE,
        }


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from fedcrm.models.metrics import roc_auc

    if len(y) == 0 or not 0 < float(y.sum()) < len(y):
        return None
    return float(roc_auc(y, p))


def train_centralized(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    criterion: Any,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    optimizer: str = "sgd",
) -> Any:
    """Plain (non-private) minibatch training of ``model`` on pooled rows; returns it trained.

    ``optimizer``: ``"sgd"`` or ``"adam"``. ``criterion(logits, y)``: 1-logit models' logits
    are flattened to ``y``'s shape.
    """
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    from fedcrm.privacy.dp_sgd import OPTIMIZERS

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)} (got {optimizer!r})")
    step = OPTIMIZERS[optimizer](model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            step.zero_grad()
            criterion(model(xt[idx]).reshape(yt[idx].shape), yt[idx]).backward()
            step.step()
    model.eval()
    return model


def _local_only(
    store_dir: Path, data: Any, plan: Any, delta: float | None, seed: int
) -> dict[str, Any]:
    """One store alone under the federation's per-store DP plan (no ledger involved)."""
    import torch

    from fedcrm.clients.store_agent import store_dp_numbers
    from fedcrm.models.churn import build_churn_model, predict_proba
    from fedcrm.privacy.dp_sgd import DpSgdConfig, train_dp

    n = len(data.y_train)
    store_delta, q, _, sigma = store_dp_numbers(n, plan, delta)
    torch.manual_seed(seed)  # the initial model, as the coordinator seeds it
    model = build_churn_model(plan.model, int(data.x_train.shape[1]))
    config = DpSgdConfig(
        noise_multiplier=sigma,
        max_grad_norm=plan.clip_norm,
        expected_batch_size=plan.batch_size,
        epochs=plan.num_rounds * plan.local_epochs,
        learning_rate=plan.learning_rate,
        optimizer="sgd",
        seed=None,  # DP noise is never seeded outside tests
    )
    result = train_dp(model, data.x_train, data.y_train, config)
    model.load_state_dict(result.state_dict)
    auc = _auc(data.y_eval, predict_proba(model, data.x_eval)) if len(data.y_eval) else None
    return {
        "store": store_dir.name,
        "auc": auc,
        "num_train": n,
        "num_eval": len(data.y_eval),
        "epsilon": plan.epsilon,
        "delta": store_delta,
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": int(result.steps),
    }


def compute_baselines(
    store_dirs: Sequence[Path],
    plan: Any,
    *,
    seed: int = 7,
    deltas: Mapping[int, float] | None = None,
    run_id: int | None = None,
) -> BaselineResult:
    """The centralized and local-only baselines of ``plan`` (a store agent TrainingPlan).

    ``store_dirs`` are the participating stores in partition order; ``deltas`` maps a
    partition index to the δ the store used in the federated run (optional). Reads each store's
    data through the store agent's own preparation; never opens a privacy ledger.
    """
    import time

    import torch

    from fedcrm.clients.store_agent import StoreSettings, _prepare
    from fedcrm.models.churn import build_churn_model, predict_proba

    if not store_dirs:
        raise ConfigError("baselines need at least one store")
    began = time.perf_counter()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    prepared = [_prepare(StoreSettings(store_dir=Path(d)), plan, run_id) for d in store_dirs]

    x_train = np.concatenate([d.x_train for d in prepared])
    y_train = np.concatenate([d.y_train for d in prepared])
    x_eval = np.concatenate([d.x_eval for d in prepared])
    y_eval = np.concatenate([d.y_eval for d in prepared])
    torch.manual_seed(seed)
    central = train_centralized(
        build_churn_model(plan.model, int(x_train.shape[1])),
        x_train,
        y_train,
        criterion=torch.nn.BCEWithLogitsLoss(),
        epochs=plan.num_rounds * plan.local_epochs,
        learning_rate=plan.learning_rate,
        batch_size=plan.batch_size,
        seed=seed,
    )
    centralized_auc = _auc(y_eval, predict_proba(central, x_eval))

    per_store = []
    for i, (store_dir, data) in enumerate(zip(store_dirs, prepared, strict=True)):
        delta = (deltas or {}).get(i)
        per_store.append(_local_only(Path(store_dir), data, plan, delta, seed))
    scored = [s for s in per_store if s["auc"] is not None and s["num_eval"] > 0]
    weight = sum(s["num_eval"] for s in scored)
    local_auc = sum(s["auc"] * s["num_eval"] for s in scored) / weight if weight else None
    for value in (centralized_auc, local_auc):
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"baseline AUC is not finite ({value})")
    return BaselineResult(
        centralized_auc=centralized_auc,
        local_only_auc=local_auc,
        local_only_per_store=tuple(per_store),
        num_train=len(y_train),
        num_eval=len(y_eval),
        seconds=time.perf_counter() - began,
    )


def baselines_for_config(
    config: Any, store_dirs: Sequence[Path], summary: Mapping[str, Any] | None = None
) -> BaselineResult:
    """Baselines for a :class:`~fedcrm.server.run_config.FederationConfig` (the run's plan).

    δ per store comes from ``summary["stores"]`` (partition_id → delta) when present.
    """
    from fedcrm.server.app import churn_plan, resolve_feature_spec

    plan = churn_plan(config, resolve_feature_spec(config))
    deltas: dict[int, float] = {}
    for store in (summary or {}).get("stores", []):
        if store.get("partition_id") is not None and store.get("delta"):
            deltas[int(store["partition_id"])] = float(store["delta"])
    run_id = (summary or {}).get("run_id")
    return compute_baselines(store_dirs, plan, seed=config.seed, deltas=deltas, run_id=run_id)
