"""Category recommendations in the store, from the federation's preference model.

The store ranks the shared vocabulary's categories for each of its customers with the global
preference model (``RUN/model/preference.pt``, checked against ``preference_card.json``) and
its own pre-cutoff purchase history; the ranking never leaves the store. Callers blank the
recommendations of customers without marketing consent (:mod:`fedcrm.clients.scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedcrm.errors import ConfigError
from fedcrm.models.preference import build_preference_model, predict_scores, preference_inputs
from fedcrm.models.ranking import top_k
from fedcrm.models.vocabulary import CategoryVocabulary, SparseRows
from fedcrm.server.checkpoints import read_model_card

__all__ = ["PreferenceRelease", "load_preference_model", "recommend"]

CARD_NAME = "preference_card.json"
WEIGHTS_NAME = "preference.pt"


@dataclass(frozen=True)
class PreferenceRelease:
    """The federation's preference model and the vocabulary its outputs are indexed by."""

    vocabulary: CategoryVocabulary = field(repr=False)
    n_features: int
    module: nn.Module = field(repr=False)


def load_preference_model(run_dir: Path) -> PreferenceRelease | None:
    """The run's preference model, or None when the run trained none (no card).

    :class:`ConfigError` naming the file when the card or the weights do not match.
    """
    card_path = Path(run_dir) / "model" / CARD_NAME
    if not card_path.is_file():
        return None
    card = read_model_card(card_path)
    try:
        model = card["model"]
        vocabulary = CategoryVocabulary.from_dict(card["data"]["vocabulary"])
        n_features, dim = int(model["n_features"]), int(model["embedding_dim"])
        if int(model["n_categories"]) != len(vocabulary):
            raise ValueError("n_categories differs from the vocabulary")
        module = build_preference_model(n_features, len(vocabulary), dim=dim)
    except (OSError, KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{card_path}: not a valid preference model card ({exc})") from None
    weights_path = card_path.with_name(WEIGHTS_NAME)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except FileNotFoundError:
        raise ConfigError(f"{weights_path}: no preference model weights") from None
    except Exception as exc:  # torch raises many types for a corrupt or mismatched file
        raise ConfigError(f"{weights_path}: does not match its card ({exc})") from None
    module.eval()
    return PreferenceRelease(vocabulary=vocabulary, n_features=n_features, module=module)


def recommend(
    release: PreferenceRelease, features: np.ndarray, history: SparseRows, k: int
) -> list[str]:
    """Each customer's top ``k`` categories, best first, joined by ``;`` (never UNKNOWN)."""
    if features.shape[1] != release.n_features or history.n_cols != len(release.vocabulary):
        raise ConfigError("the store's features or history do not fit the preference model")
    k = min(k, len(release.vocabulary) - 1)
    scores = predict_scores(release.module, preference_inputs(features, history))
    ranked = top_k(scores, k)
    names = np.asarray(release.vocabulary.tokens, dtype=object)[ranked]
    return [";".join(row) for row in names]
