"""The run's training plot (``RUN/training.png``) from a summary alone."""

from __future__ import annotations

from PIL import Image

from fedcrm.server.plots import plot_run

SUMMARY = {
    "history": [
        {"round": 1, "evaluate": {"auc": 0.61}, "loss": 0.55},
        {"round": 2, "evaluate": {}, "loss": 0.52},  # no AUC this round
        {"round": 3, "evaluate": {"auc": 0.68}, "loss": 0.50},
    ],
    "churn": {"auc": 0.68, "centralized_auc": 0.74, "local_only_auc": 0.6},
    "privacy": {
        "delta": 1e-5,
        "stores": {
            "s01": {"epsilon": 2.9, "budget": 3.0, "epsilon_per_round": [1.4, 2.2, 2.9]},
            "s02": {"epsilon": 0.0, "budget": 3.0, "epsilon_per_round": []},  # refused
        },
    },
}


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 0


def test_plot_run_writes_a_png_atomically(tmp_path):
    path = plot_run(SUMMARY, tmp_path / "training.png")
    assert path == tmp_path / "training.png" and _is_png(path)
    assert [p.name for p in tmp_path.iterdir()] == ["training.png"]  # no partial file left


def test_plot_run_copes_with_a_run_without_rounds_or_baselines(tmp_path):
    bare = {"history": [], "churn": {"auc": None}, "privacy": {}}
    assert _is_png(plot_run(bare, tmp_path / "bare.png"))
