"""How large an honest store's update can be: the bound the coordinator enforces.

A store following the plan runs ``S`` steps of DP-SGD (plain SGD, learning rate ``η``) with
per-customer clipping ``C``, expected batch ``B = q·N`` and noise multiplier ``σ``. Each step
adds ``η / B`` times the sum of at most ``|batch|`` clipped gradients plus Gaussian noise
``N(0, σ²C²·I_d)``, so its update (local − global) has norm at most

    η · C · ( S · (1 + 4/√B)  +  σ · (√(S·d) + 4) / B )

with overwhelming probability: ``|batch| ≤ B + 4√B`` (Poisson sampling) and the norm of the
summed noise exceeds its mean ``σC√(S·d)/B`` by more than ``4σC/B`` with probability below
e⁻⁸ (Gaussian concentration of the norm, a 1-Lipschitz function). An update beyond it did
not come from the plan: too few clipped steps, too little noise averaged, or altered code.
Under SecAgg+ the aggregate is a weighted mean of updates, so its bound is the largest
store's bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["honest_update_bound", "store_update_bounds"]


def honest_update_bound(
    *,
    learning_rate: float,
    clip_norm: float,
    steps: int,
    noise_multiplier: float,
    sample_rate: float,
    num_train: int,
    parameters: int,
) -> float:
    """The largest L2 norm an honest store's update of one round can have (see module doc)."""
    expected_batch = max(sample_rate * num_train, 1.0)
    signal = steps * (1.0 + 4.0 / math.sqrt(expected_batch))
    noise = noise_multiplier * (math.sqrt(steps * parameters) + 4.0) / expected_batch
    return learning_rate * clip_norm * (signal + noise)


def store_update_bounds(
    answers: Mapping[int, Mapping[str, float]],
    *,
    learning_rate: float,
    clip_norm: float,
    parameters: int,
) -> dict[int, float]:
    """Each store's bound from its budget answer (σ, q, steps per round, N)."""
    bounds = {}
    for node_id, answer in answers.items():
        try:
            bounds[node_id] = honest_update_bound(
                learning_rate=learning_rate,
                clip_norm=clip_norm,
                steps=int(answer["steps_per_round"]),
                noise_multiplier=float(answer["noise_multiplier"]),
                sample_rate=float(answer["sample_rate"]),
                num_train=int(answer["num_train"]),
                parameters=parameters,
            )
        except (KeyError, TypeError, ValueError):
            continue  # no plan numbers: the store is left out by the participation gate
    return bounds
