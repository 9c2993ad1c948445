"""The federation's Flower ``run_config``, read once into one typed, validated value.

Keys are kebab-case, as Flower passes them (``[tool.flwr.app.config]`` in pyproject.toml,
``flwr run . --run-config 'num-rounds=5'``, or the overrides :func:`fedcrm.federation.
run_federation` bakes into the apps). Precedence is the caller's business: this module only
reads one flat mapping and fills in defaults. Unknown keys are errors (a typo must not fall
back silently to a default).

=======================  =========  ==========  ==============================================
key                      type       default     meaning
=======================  =========  ==========  ==============================================
data-dir                 str        ""          chain directory (simulation: store i = the i-th
                                                store directory, sorted); chain.json gives the
                                                shared category vocabulary
run-dir                  str        "runs/fl"   coordinator output: checkpoints, model, card
num-rounds               int        20          federated rounds
local-epochs             int        1           local DP-SGD epochs per round
epsilon                  float      3.0         per-store target ε of this run (whole plan)
delta                    float      0.0         δ; 0 → each store uses default_delta(its N)
lifetime-epsilon         float      10.0        a store's lifetime ε budget (its own ledger)
model                    str        "logistic"  "logistic" | "mlp"
learning-rate            float      0.5         local learning rate
batch-size               int        128         expected (Poisson) batch size
clip-norm                float      1.0         per-customer gradient clipping bound C
server-optimizer         str        "fedadam"   "fedavg" | "fedavgm" | "fedadam"
server-learning-rate     float      0.05        server learning rate (FedAvgM / FedAdam)
server-momentum          float      0.9         FedAvgM momentum
secagg                   bool       true        SecAgg+ secure aggregation of updates
aggregation              str        "mean"      "mean" (the server optimizer's weighted
                                                mean) | "trimmed-mean" | "median" | "krum":
                                                robust rules over each store's update, which
                                                need secagg=false and replace the optimizer
robust-trim              float      0.2         trimmed-mean: share cut at each end
robust-malicious         int        1           krum: stores assumed hostile (f)
min-stores               int        2           fewer participating stores skip the round
expected-stores          int        0           stores to wait for at start (0: min-stores)
cutoff                   str        ""          observation cutoff T (ISO date); "" → latest
                                                with a full label horizon
horizon-days             int        60          churn label horizon H
seed                     int        7           initial model (DP noise is never seeded)
feature-spec             str        ""          FeatureSpec JSON; "" → from chain.json
                                                categories, else FeatureSpec()
eval-fraction            float      0.2         share of each store's customers held out for
                                                federated evaluation (by pseudonym hash)
max-update-norm          float      0.0         L2 bound on a store's (or the aggregate)
                                                update; larger updates are rejected. 0: each
                                                store's bound from its DP plan (the largest
                                                norm honest DP-SGD can produce,
                                                fedcrm.server.update_bounds)
secagg-clipping-range    float      8.0         SecAgg+ quantisation range for update values
secagg-max-shares        int        15          SecAgg+ neighbours per store: every store when
                                                there are at most this many, else this many
                                                (odd; linear cost per round in the stores)
node-timeout             float      300.0       seconds to wait for stores and replies
preference               bool       true        also train the category preference model (when
                                                the chain declares a category taxonomy)
preference-rounds        int        0           its rounds; 0 → num-rounds
preference-epsilon       float      0.0         its per-store target ε; 0 → epsilon
preference-learning-rate float      0.5         its local learning rate
preference-dim           int        32          width of its customer / category embeddings
top-k                    int        10          k of recall/precision/NDCG@k and of the
                                                recommendations
budget-share-churn       float      0.5         share of a store's lifetime ε for churn (the
budget-share-preference  float      0.3         store's own policy: node_config overrides
budget-share-analytics   float      0.2         run_config; sum ≤ 1)
=======================  =========  ==========  ==============================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedcrm.errors import ConfigError

__all__ = ["AGGREGATIONS", "MODEL_NAMES", "SERVER_OPTIMIZERS", "FederationConfig"]

MODEL_NAMES: tuple[str, ...] = ("logistic", "mlp")
SERVER_OPTIMIZERS: tuple[str, ...] = ("fedavg", "fedavgm", "fedadam")
AGGREGATIONS: tuple[str, ...] = ("mean", "trimmed-mean", "median", "krum")
#: "train": the models (then any analytics-queries); "analytics": the queries only.
RUN_MODES: tuple[str, ...] = ("train", "analytics")


@dataclass(frozen=True)
class FederationConfig:
    """Validated run configuration of one federated training run."""

    data_dir: str = field(default="", metadata={"key": "data-dir"})
    run_dir: str = field(default="runs/fl", metadata={"key": "run-dir"})
    num_rounds: int = field(default=20, metadata={"key": "num-rounds"})
    local_epochs: int = field(default=1, metadata={"key": "local-epochs"})
    epsilon: float = field(default=3.0, metadata={"key": "epsilon"})
    delta: float = field(default=0.0, metadata={"key": "delta"})
    lifetime_epsilon: float = field(default=10.0, metadata={"key": "lifetime-epsilon"})
    model: str = field(default="logistic", metadata={"key": "model"})
    learning_rate: float = field(default=0.5, metadata={"key": "learning-rate"})
    batch_size: int = field(default=128, metadata={"key": "batch-size"})
    clip_norm: float = field(default=1.0, metadata={"key": "clip-norm"})
    server_optimizer: str = field(default="fedadam", metadata={"key": "server-optimizer"})
    server_learning_rate: float = field(default=0.05, metadata={"key": "server-learning-rate"})
    server_momentum: float = field(default=0.9, metadata={"key": "server-momentum"})
    secagg: bool = field(default=True, metadata={"key": "secagg"})
    aggregation: str = field(default="mean", metadata={"key": "aggregation"})
    robust_trim: float = field(default=0.2, metadata={"key": "robust-trim"})
    robust_malicious: int = field(default=1, metadata={"key": "robust-malicious"})
    min_stores: int = field(default=2, metadata={"key": "min-stores"})
    expected_stores: int = field(default=0, metadata={"key": "expected-stores"})
    cutoff: str = field(default="", metadata={"key": "cutoff"})
    horizon_days: int = field(default=60, metadata={"key": "horizon-days"})
    seed: int = field(default=7, metadata={"key": "seed"})
    feature_spec: str = field(default="", metadata={"key": "feature-spec"})
    eval_fraction: float = field(default=0.2, metadata={"key": "eval-fraction"})
    max_update_norm: float = field(default=0.0, metadata={"key": "max-update-norm"})
    secagg_clipping_range: float = field(default=8.0, metadata={"key": "secagg-clipping-range"})
    secagg_max_shares: int = field(default=15, metadata={"key": "secagg-max-shares"})
    node_timeout: float = field(default=300.0, metadata={"key": "node-timeout"})
    preference: bool = field(default=True, metadata={"key": "preference"})
    preference_rounds: int = field(default=0, metadata={"key": "preference-rounds"})
    preference_epsilon: float = field(default=0.0, metadata={"key": "preference-epsilon"})
    preference_learning_rate: float = field(
        default=0.5, metadata={"key": "preference-learning-rate"}
    )
    preference_dim: int = field(default=32, metadata={"key": "preference-dim"})
    top_k: int = field(default=10, metadata={"key": "top-k"})
    share_churn: float = field(default=0.5, metadata={"key": "budget-share-churn"})
    share_preference: float = field(default=0.3, metadata={"key": "budget-share-preference"})
    share_analytics: float = field(default=0.2, metadata={"key": "budget-share-analytics"})
    mode: str = field(default="train", metadata={"key": "mode"})
    analytics_queries: str = field(default="", metadata={"key": "analytics-queries"})
    analytics_epsilon: float = field(default=1.0, metadata={"key": "analytics-epsilon"})
    analytics_k: int = field(default=20, metadata={"key": "analytics-k"})
    audit_key_dir: str = field(default="", metadata={"key": "audit-key-dir"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.metadata["key"], value, f.type)
            if f.type == "float":
                object.__setattr__(self, f.name, float(value))
        _positive("num-rounds", self.num_rounds)
        _positive("local-epochs", self.local_epochs)
        _positive("batch-size", self.batch_size)
        _positive("horizon-days", self.horizon_days)
        for key, value in (
            ("epsilon", self.epsilon),
            ("lifetime-epsilon", self.lifetime_epsilon),
            ("learning-rate", self.learning_rate),
            ("clip-norm", self.clip_norm),
            ("server-learning-rate", self.server_learning_rate),
            ("secagg-clipping-range", self.secagg_clipping_range),
            ("node-timeout", self.node_timeout),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a finite number > 0 (got {value!r})")
        _positive("preference-dim", self.preference_dim)
        _positive("top-k", self.top_k)
        if self.preference_rounds < 0 or not (
            math.isfinite(self.preference_epsilon) and self.preference_epsilon >= 0
        ):
            raise ConfigError("preference-rounds and preference-epsilon must be >= 0 (0: as churn)")
        if not (math.isfinite(self.preference_learning_rate) and self.preference_learning_rate > 0):
            raise ConfigError("preference-learning-rate must be a finite number > 0")
        if self.mode not in RUN_MODES:
            raise ConfigError(f"mode must be one of {RUN_MODES} (got {self.mode!r})")
        if not (math.isfinite(self.analytics_epsilon) and self.analytics_epsilon > 0):
            raise ConfigError("analytics-epsilon must be a finite number > 0")
        if self.analytics_k < 0:
            raise ConfigError(f"analytics-k must be >= 0 (got {self.analytics_k})")
        if self.analytics_queries:
            from fedcrm.analytics.queries import QUERY_NAMES

            unknown = [q for q in self.analytics_query_names if q not in QUERY_NAMES]
            if unknown:
                raise ConfigError(
                    f"unknown analytics queries {unknown}; valid: {', '.join(QUERY_NAMES)}"
                )
        if self.mode == "analytics" and not self.analytics_queries:
            raise ConfigError("mode = analytics needs analytics-queries (comma-separated)")
        from fedcrm.privacy.ledger import BudgetSplit

        BudgetSplit(self.share_churn, self.share_preference, self.share_analytics)  # checks
        if not 0 <= self.delta < 1:
            raise ConfigError(f"delta must be in [0, 1) — 0 means the default (got {self.delta})")
        if not 0 <= self.server_momentum < 1:
            raise ConfigError(f"server-momentum must be in [0, 1) (got {self.server_momentum})")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"eval-fraction must be in (0, 1) (got {self.eval_fraction})")
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"model must be one of {MODEL_NAMES} (got {self.model!r})")
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ConfigError(
                f"server-optimizer must be one of {SERVER_OPTIMIZERS} "
                f"(got {self.server_optimizer!r})"
            )
        if not (self.max_update_norm >= 0 and math.isfinite(self.max_update_norm)):
            raise ConfigError(
                f"max-update-norm must be >= 0 (0: from each store's plan; got "
                f"{self.max_update_norm})"
            )
        if self.secagg_max_shares < 3:
            raise ConfigError(f"secagg-max-shares must be >= 3 (got {self.secagg_max_shares})")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"aggregation must be one of {AGGREGATIONS} (got {self.aggregation!r})"
            )
        if self.aggregation != "mean" and self.secagg:
            raise ConfigError(
                f"aggregation = {self.aggregation!r} ranks or trims each store's update, and "
                "SecAgg+ shows the coordinator only their sum: set secagg=false to use it, or "
                "keep aggregation='mean' (under SecAgg+ the per-customer clipping in each "
                "store and the aggregate's norm check are what bound a hostile store)"
            )
        if not 0 <= self.robust_trim < 0.5:
            raise ConfigError(f"robust-trim must be in [0, 0.5) (got {self.robust_trim})")
        if self.robust_malicious < 0:
            raise ConfigError(f"robust-malicious must be >= 0 (got {self.robust_malicious})")
        if self.min_stores < 1 or self.expected_stores < 0:
            raise ConfigError("min-stores must be >= 1 and expected-stores >= 0")
        if self.secagg and self.min_stores < 2:
            raise ConfigError(
                "SecAgg+ needs at least 2 stores per round: set min-stores >= 2 or secagg=false"
            )
        if self.feature_spec:
            try:
                payload = json.loads(self.feature_spec)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"feature-spec is not valid JSON ({exc})") from None
            if not isinstance(payload, dict):
                raise ConfigError("feature-spec must be a JSON object (FeatureSpec.to_dict())")
        if self.cutoff:
            from fedcrm.models.snapshot import as_cutoff

            as_cutoff(self.cutoff)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.metadata["key"] for f in fields(cls))

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationConfig:
        """Read a flat kebab-case mapping; missing keys take their defaults."""
        by_key = {f.metadata["key"]: f.name for f in fields(cls)}
        unknown = sorted(set(run_config) - set(by_key))
        if unknown:
            raise ConfigError(f"unknown run_config keys {unknown}; valid keys: {sorted(by_key)}")
        return cls(**{by_key[k]: v for k, v in run_config.items()})

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The flat kebab-case mapping (all keys), e.g. for ``--run-config`` or the apps."""
        return {f.metadata["key"]: getattr(self, f.name) for f in fields(self)}

    def secagg_num_shares(self, stores: int) -> int | float:
        """SecAgg+ ``num_shares`` for a round of ``stores``: 1.0 (every store shares its keys
        with every other) up to ``secagg-max-shares`` stores, else that many neighbours (made
        odd, as the protocol wants). With all-to-all sharing each store's work grows with the
        stores and a round's with their square; with a fixed neighbourhood both are linear.
        A store's masks then need the collusion of a reconstruction-threshold share (0.67) of
        its neighbours, not of all stores, to be removed."""
        if stores <= self.secagg_max_shares:
            return 1.0
        return self.secagg_max_shares | 1

    @property
    def analytics_query_names(self) -> list[str]:
        """``analytics-queries`` as a list (comma-separated, blanks ignored)."""
        return [q.strip() for q in self.analytics_queries.split(",") if q.strip()]

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)

    @property
    def data_path(self) -> Path | None:
        return Path(self.data_dir) if self.data_dir else None

    @property
    def preference_plan_rounds(self) -> int:
        return self.preference_rounds or self.num_rounds

    @property
    def preference_target_epsilon(self) -> float:
        return self.preference_epsilon or self.epsilon

    @property
    def stores_to_wait_for(self) -> int:
        return max(self.expected_stores, self.min_stores)


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def _check_type(key: str, value: object, annotation: object) -> None:
    expected = _TYPES[str(annotation)]
    if isinstance(value, bool) and bool not in expected:
        raise ConfigError(f"{key} must be {annotation}, got a boolean ({value!r})")
    if not isinstance(value, expected):
        raise ConfigError(f"{key} must be {annotation}, got {type(value).__name__} ({value!r})")


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1 (got {value})")
