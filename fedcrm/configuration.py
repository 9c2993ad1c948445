"""Run configuration: one typed model, loaded once at the edge.

Precedence is command line > configuration file > defaults. A configuration file is TOML
with the sections below (every key optional)::

    [data]
    cutoff = "2025-11-02"     # observation cutoff T; default: end of data minus the horizon
    horizon_days = 60          # label horizon H

    [privacy]
    epsilon = 3.0              # per-store target ε of this run (churn model)
    delta = 0.0                # 0: min(1e-5, 1/(10·N)) for the smallest store
    lifetime_epsilon = 10.0    # a store's lifetime budget (its ledger refuses beyond it)
    clip_norm = 1.0            # per-customer gradient clipping bound C
    share_churn = 0.5          # how a store's lifetime ε is split between the purposes
    share_preference = 0.3     # (sum ≤ 1; a store's own node_config overrides these)
    share_analytics = 0.2

    [training]
    rounds = 20
    local_epochs = 1
    model = "logistic"         # logistic | mlp
    learning_rate = 0.5
    batch_size = 128           # expected Poisson batch size
    seed = 7

    [server]
    optimizer = "fedadam"      # fedavg | fedavgm | fedadam
    learning_rate = 0.05       # server learning rate (FedAvgM / FedAdam)
    secagg = true              # SecAgg+ secure aggregation
    min_stores = 2             # fewer available stores fail the round

    [preference]               # the category preference model (needs a category taxonomy)
    enabled = true
    rounds = 0                 # 0: as [training] rounds
    epsilon = 0.0              # 0: as [privacy] epsilon
    learning_rate = 0.5
    dim = 32                   # embedding width
    top_k = 10                 # k of recall/NDCG/precision@k and of recommendations

    [analytics]                # federated DP queries (fedcrm analytics; demo after training)
    queries = []               # names, e.g. ["lifecycle_funnel"]; [] runs none after training
    epsilon = 1.0              # ε per query per store (spent from the analytics share)
    k = 20                     # cells whose noisy total is below k are suppressed

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedcrm.errors import ConfigError

__all__ = ["RunConfig", "load_run_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    cutoff: date | None = None
    horizon_days: int = Field(60, ge=1, le=730)


class PrivacySection(_Section):
    epsilon: float = Field(3.0, gt=0, le=100)
    delta: float = Field(0.0, ge=0, lt=1)
    lifetime_epsilon: float = Field(10.0, gt=0, le=1000)
    clip_norm: float = Field(1.0, gt=0)
    share_churn: float = Field(0.5, ge=0, le=1)
    share_preference: float = Field(0.3, ge=0, le=1)
    share_analytics: float = Field(0.2, ge=0, le=1)


class PreferenceSection(_Section):
    enabled: bool = True
    rounds: int = Field(0, ge=0, le=1000)  # 0: as the churn model
    epsilon: float = Field(0.0, ge=0, le=100)  # 0: as the churn model
    learning_rate: float = Field(0.5, gt=0)
    dim: int = Field(32, ge=1, le=1024)
    top_k: int = Field(10, ge=1, le=1000)


class AnalyticsSection(_Section):
    queries: list[str] = []
    epsilon: float = Field(1.0, gt=0, le=100)
    k: int = Field(20, ge=0)


class TrainingSection(_Section):
    rounds: int = Field(20, ge=1, le=1000)
    local_epochs: int = Field(1, ge=1, le=100)
    model: Literal["logistic", "mlp"] = "logistic"
    learning_rate: float = Field(0.5, gt=0)
    batch_size: int = Field(128, ge=1)
    seed: int = 7


class ServerSection(_Section):
    optimizer: Literal["fedavg", "fedavgm", "fedadam"] = "fedadam"
    learning_rate: float = Field(0.05, gt=0)
    secagg: bool = True
    min_stores: int = Field(2, ge=1)


class RunConfig(_Section):
    """Everything a training run needs besides paths."""

    data: DataSection = DataSection()
    privacy: PrivacySection = PrivacySection()
    training: TrainingSection = TrainingSection()
    server: ServerSection = ServerSection()
    preference: PreferenceSection = PreferenceSection()
    analytics: AnalyticsSection = AnalyticsSection()

    def to_flower_run_config(self) -> dict[str, bool | int | float | str]:
        """The Flower ``run_config`` (kebab-case keys) the ServerApp and ClientApp read."""
        return {
            "cutoff": self.data.cutoff.isoformat() if self.data.cutoff else "",
            "horizon-days": self.data.horizon_days,
            "epsilon": self.privacy.epsilon,
            "delta": self.privacy.delta,
            "lifetime-epsilon": self.privacy.lifetime_epsilon,
            "clip-norm": self.privacy.clip_norm,
            "num-rounds": self.training.rounds,
            "local-epochs": self.training.local_epochs,
            "model": self.training.model,
            "learning-rate": self.training.learning_rate,
            "batch-size": self.training.batch_size,
            "seed": self.training.seed,
            "server-optimizer": self.server.optimizer,
            "server-learning-rate": self.server.learning_rate,
            "secagg": self.server.secagg,
            "min-stores": self.server.min_stores,
            "preference": self.preference.enabled,
            "preference-rounds": self.preference.rounds,
            "preference-epsilon": self.preference.epsilon,
            "preference-learning-rate": self.preference.learning_rate,
            "preference-dim": self.preference.dim,
            "top-k": self.preference.top_k,
            "budget-share-churn": self.privacy.share_churn,
            "budget-share-preference": self.privacy.share_preference,
            "budget-share-analytics": self.privacy.share_analytics,
            "analytics-queries": ",".join(self.analytics.queries),
            "analytics-epsilon": self.analytics.epsilon,
            "analytics-k": self.analytics.k,
        }


# Command-line option → (section, key). Only options the user actually passed are applied.
CLI_KEYS: dict[str, tuple[str, str]] = {
    "cutoff": ("data", "cutoff"),
    "horizon_days": ("data", "horizon_days"),
    "epsilon": ("privacy", "epsilon"),
    "rounds": ("training", "rounds"),
    "model": ("training", "model"),
    "secagg": ("server", "secagg"),
}


def load_run_config(path: Path | None = None, **cli: Any) -> RunConfig:
    """Defaults, overlaid by the TOML file at ``path``, overlaid by non-None ``cli`` values."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for option, value in cli.items():
        if value is None:
            continue
        if option not in CLI_KEYS:
            raise ValueError(f"unknown command-line option {option!r}")
        section, key = CLI_KEYS[option]
        raw.setdefault(section, {})[key] = value
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {field}: {first['msg']}") from None
