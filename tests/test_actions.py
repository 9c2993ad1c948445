"""Action rules: first match wins, and never an action without marketing consent."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrm.clients.actions import (
    NO_ACTION,
    NO_MARKETING_CONSENT,
    assign_actions,
    load_rules,
)
from fedcrm.errors import ConfigError


def _assign(marketing, **overrides):
    base = dict(
        churn_probability=np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3]),
        lifecycle_stage=["dormant", "declining", "mature", "new", "growing", "mature"],
        value_tier=["high", "low", "medium", "low", "low", "low"],
        discount_sensitive=np.array([False, True, False, False, False, False]),
        marketing_consent=np.asarray(marketing, dtype=bool),
    )
    base.update(overrides)
    return list(assign_actions(**base))


def test_default_rules_in_order():
    assert _assign([True] * 6) == [
        "vip_invitation",
        "targeted_coupon",
        "retention_call",
        "second_purchase_incentive",
        "loyalty_upgrade_offer",
        NO_ACTION,
    ]


def test_no_action_without_marketing_consent():
    actions = _assign([False, True, False, True, False, True])
    assert actions[0] == actions[2] == actions[4] == NO_MARKETING_CONSENT
    assert actions[1] == "targeted_coupon"


def test_rule_table_from_toml(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\naction = "call"\nmin_churn_probability = 0.75\n'
        '[[rules]]\naction = "welcome"\nlifecycle_stages = ["new"]\n'
    )
    rules = load_rules(path)
    assert _assign([True] * 6, rules=rules) == [
        "call",
        "call",
        NO_ACTION,
        "welcome",
        NO_ACTION,
        NO_ACTION,
    ]


@pytest.mark.parametrize(
    "body",
    [
        '[[rules]]\naction = "x"\nlifecycle_stages = ["zombie"]\n',
        '[[rules]]\naction = "x"\ncolour = "red"\n',
        '[[rules]]\naction = "x"\nmin_churn_probability = 2\n',
        "rules = 3\n",
    ],
)
def test_bad_rule_tables_are_refused(tmp_path, body):
    path = tmp_path / "rules.toml"
    path.write_text(body)
    with pytest.raises(ConfigError):
        load_rules(path)
