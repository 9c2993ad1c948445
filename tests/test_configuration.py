"""Run configuration: precedence CLI > file > defaults, strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcrm.configuration import RunConfig, load_run_config
from fedcrm.errors import ConfigError

DEMO = Path(__file__).parents[1] / "configs" / "demo.toml"


def test_demo_config_is_valid_and_complete():
    config = load_run_config(DEMO)
    assert config.privacy.epsilon <= 3.0
    assert config.server.secagg is True
    run_config = config.to_flower_run_config()
    assert run_config["num-rounds"] == config.training.rounds
    assert all(isinstance(v, bool | int | float | str) for v in run_config.values())


def test_precedence_cli_over_file_over_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\nrounds = 7\nmodel = 'mlp'\n[privacy]\nepsilon = 2.0\n")
    config = load_run_config(path, rounds=3, epsilon=None)
    assert config.training.rounds == 3  # CLI wins
    assert config.training.model == "mlp"  # file wins over default
    assert config.privacy.epsilon == 2.0  # None on the CLI means "not given"
    assert config.server.optimizer == RunConfig().server.optimizer  # default


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[training]\nrounds = 0\n", "training.rounds"),
        ("[privacy]\nepsilon = -1\n", "privacy.epsilon"),
        ("[privacy]\nepsilonn = 1\n", "privacy.epsilonn"),
        ("[server]\noptimizer = 'sgd'\n", "server.optimizer"),
        ("not toml ==", "not valid TOML"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_run_config(path)
    assert needle in str(raised.value) and str(path) in str(raised.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.toml")
