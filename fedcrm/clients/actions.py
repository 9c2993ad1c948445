"""Retention actions: a documented, configurable rule table applied in the store.

Rules are tried in order; the first whose conditions all hold gives the customer's action.
A customer without a current **marketing** consent never gets an action, whatever the rules
say (GDPR Art. 21(2)-(3): an absolute right to object to direct marketing, profiling
included; PIPL Art. 24: personalised marketing must be easy to refuse); their row says
``no_marketing_consent`` instead.

The default table (``DEFAULT_RULES``):

| # | when | action |
|---|---|---|
| 1 | value tier high, lifecycle dormant or declining | ``vip_invitation`` |
| 2 | churn prob. ≥ 0.6, discount-sensitive, declining or dormant | ``targeted_coupon`` |
| 3 | churn probability ≥ 0.6, value tier high or medium | ``retention_call`` |
| 4 | lifecycle new | ``second_purchase_incentive`` |
| 5 | lifecycle growing | ``loyalty_upgrade_offer`` |
| — | otherwise | ``none`` |

A rule table may be given as TOML::

    [[rules]]
    action = "vip_invitation"
    value_tiers = ["high"]
    lifecycle_stages = ["dormant", "declining"]
    min_churn_probability = 0.0     # optional
    discount_sensitive = true       # optional: true / false / absent (either)
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.errors import ConfigError
from fedcrm.models.lifecycle import LIFECYCLE_STAGES, VALUE_TIERS

__all__ = [
    "DEFAULT_RULES",
    "NO_ACTION",
    "NO_MARKETING_CONSENT",
    "ActionRule",
    "assign_actions",
    "load_rules",
]

NO_ACTION = "none"
NO_MARKETING_CONSENT = "no_marketing_consent"


@dataclass(frozen=True)
class ActionRule:
    action: str
    lifecycle_stages: tuple[str, ...] = ()  # empty: any
    value_tiers: tuple[str, ...] = ()  # empty: any
    min_churn_probability: float = 0.0
    discount_sensitive: bool | None = None  # None: either

    def __post_init__(self) -> None:
        if not self.action or self.action in (NO_MARKETING_CONSENT,):
            raise ConfigError(f"action rule: invalid action name {self.action!r}")
        unknown = set(self.lifecycle_stages) - set(LIFECYCLE_STAGES)
        if unknown:
            raise ConfigError(
                f"action rule {self.action!r}: unknown lifecycle stage(s) {sorted(unknown)}; "
                f"valid: {', '.join(LIFECYCLE_STAGES)}"
            )
        unknown = set(self.value_tiers) - set(VALUE_TIERS)
        if unknown:
            raise ConfigError(
                f"action rule {self.action!r}: unknown value tier(s) {sorted(unknown)}; "
                f"valid: {', '.join(VALUE_TIERS)}"
            )
        if not 0.0 <= self.min_churn_probability <= 1.0:
            raise ConfigError(
                f"action rule {self.action!r}: min_churn_probability must be in [0, 1]"
            )


DEFAULT_RULES: tuple[ActionRule, ...] = (
    ActionRule("vip_invitation", ("dormant", "declining"), ("high",)),
    ActionRule("targeted_coupon", ("declining", "dormant"), (), 0.6, True),
    ActionRule("retention_call", (), ("high", "medium"), 0.6),
    ActionRule("second_purchase_incentive", ("new",)),
    ActionRule("loyalty_upgrade_offer", ("growing",)),
)


def load_rules(path: Path) -> tuple[ActionRule, ...]:
    """Read a rule table from TOML (see the module docstring)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: rule table not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    rules = raw.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(f"{path}: expected one or more [[rules]] tables")
    out = []
    allowed = {"action", "lifecycle_stages", "value_tiers", "min_churn_probability",
               "discount_sensitive"}  # fmt: skip
    for i, rule in enumerate(rules, start=1):
        extra = set(rule) - allowed
        if extra:
            raise ConfigError(f"{path}: rule {i}: unknown key(s) {sorted(extra)}")
        out.append(
            ActionRule(
                action=str(rule.get("action", "")),
                lifecycle_stages=tuple(rule.get("lifecycle_stages", ())),
                value_tiers=tuple(rule.get("value_tiers", ())),
                min_churn_probability=float(rule.get("min_churn_probability", 0.0)),
                discount_sensitive=rule.get("discount_sensitive"),
            )
        )
    return tuple(out)


def assign_actions(
    *,
    churn_probability: np.ndarray,
    lifecycle_stage: Sequence[str],
    value_tier: Sequence[str],
    discount_sensitive: np.ndarray,
    marketing_consent: np.ndarray,
    rules: Sequence[ActionRule] = DEFAULT_RULES,
) -> np.ndarray:
    """The action of every customer (first matching rule), gated by marketing consent."""
    n = len(churn_probability)
    stage = pd.Series(list(lifecycle_stage), dtype="str").to_numpy()
    tier = pd.Series(list(value_tier), dtype="str").to_numpy()
    actions = np.full(n, NO_ACTION, dtype=object)
    decided = np.zeros(n, dtype=bool)
    for rule in rules:
        match = ~decided & (np.asarray(churn_probability) >= rule.min_churn_probability)
        if rule.lifecycle_stages:
            match &= np.isin(stage, rule.lifecycle_stages)
        if rule.value_tiers:
            match &= np.isin(tier, rule.value_tiers)
        if rule.discount_sensitive is not None:
            match &= np.asarray(discount_sensitive, dtype=bool) == rule.discount_sensitive
        actions[match] = rule.action
        decided |= match
    actions[~np.asarray(marketing_consent, dtype=bool)] = NO_MARKETING_CONSENT
    return actions
