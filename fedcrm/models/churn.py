"""Small churn models suited to DP-SGD on tabular features, chosen by name.

- ``"logistic"`` — one linear layer, one logit;
- ``"mlp"`` — Linear → LayerNorm → ReLU → Linear → one logit (``hidden`` units).

Small models are deliberate: the DP noise added per step has the dimension of the parameters,
so fewer parameters mean a better signal-to-noise ratio at the same ε. No BatchNorm (it mixes
rows of a batch, which breaks per-record clipping); LayerNorm normalises within a row.

:func:`predict_proba` scores rows without gradients. :class:`PlattCalibrator` maps logits to
calibrated probabilities (``sigmoid(a x logit + b)``), fitted by a store on its OWN held-out
split. Its two parameters are fitted on store data without noise, so they are data-dependent:
keep them local (scoring the store's own customers); sharing them with the coordinator or
other stores would need a DP fit, which this module does not provide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Self

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHURN_MODELS",
    "LogisticChurnModel",
    "MlpChurnModel",
    "PlattCalibrator",
    "build_churn_model",
    "predict_logits",
    "predict_proba",
]

_PREDICT_BATCH = 8192


class LogisticChurnModel(nn.Module):
    """Logistic regression: ``n_features`` → 1 logit."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MlpChurnModel(nn.Module):
    """One hidden layer with LayerNorm: ``n_features`` → ``hidden`` → 1 logit."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1 (got {hidden!r})")
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


#: Model constructors by name: ``factory(n_features, **kwargs)``.
CHURN_MODELS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(
    {"logistic": LogisticChurnModel, "mlp": MlpChurnModel}
)


def build_churn_model(name: str, n_features: int, **kwargs: Any) -> nn.Module:
    """A fresh model from :data:`CHURN_MODELS`; unknown ``name`` → ValueError listing them."""
    if name not in CHURN_MODELS:
        raise ValueError(f"unknown churn model {name!r}; valid: {', '.join(CHURN_MODELS)}")
    if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
        raise ValueError(f"n_features must be an integer >= 1 (got {n_features!r})")
    return CHURN_MODELS[name](n_features, **kwargs)


def predict_logits(
    model: nn.Module, x: np.ndarray, *, batch_size: int = _PREDICT_BATCH
) -> np.ndarray:
    """Logits of ``model`` for the rows of ``x`` (float64, shape ``(n,)``), without gradients."""
    x_arr = np.ascontiguousarray(x, dtype=np.float32)
    if x_arr.ndim != 2:
        raise ValueError(f"x must be a 2-D array (got shape {x_arr.shape})")
    was_training = model.training
    model.eval()
    out = np.empty(len(x_arr), dtype=np.float64)
    try:
        with torch.no_grad():
            for start in range(0, len(x_arr), batch_size):
                chunk = torch.as_tensor(np.array(x_arr[start : start + batch_size]))
                out[start : start + len(chunk)] = model(chunk).reshape(-1).double().numpy()
    finally:
        model.train(was_training)
    return out


def predict_proba(
    model: nn.Module, x: np.ndarray, *, batch_size: int = _PREDICT_BATCH
) -> np.ndarray:
    """Churn probabilities ``sigmoid(logit)`` for the rows of ``x``, shape ``(n,)``."""
    return _sigmoid(predict_logits(model, x, batch_size=batch_size))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.exp(-np.logaddexp(0.0, -z))
    return out


class PlattCalibrator:
    """``p = sigmoid(a x logit + b)``, fitted by Newton's method on held-out logits.

    Targets are Platt's smoothed labels ``(n₊ + 1) / (n₊ + 2)`` and ``1 / (n₋ + 2)``, which keep
    ``a`` finite when the held-out split is separable. Unfitted, it is the identity
    (``a = 1, b = 0``). Local to a store: see the module docstring.
    """

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        self.a = float(a)
        self.b = float(b)
        self.fitted = False

    def fit(self, logits: np.ndarray, y: np.ndarray, *, max_iter: int = 300) -> Self:
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        labels = np.asarray(y).reshape(-1)
        if z.shape != labels.shape or len(z) == 0:
            raise ValueError(
                f"logits and y must be non-empty and of one length ({z.shape} vs {labels.shape})"
            )
        if not np.isfinite(z).all():
            raise ValueError("logits hold NaN or infinite values")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("y must hold only 0 and 1")
        n_pos = int(labels.sum())
        n_neg = len(labels) - n_pos
        t = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a, b = 1.0, float(np.log((n_pos + 1) / (n_neg + 1)))

        def loss(a_: float, b_: float) -> float:
            s = a_ * z + b_
            return float(np.sum(np.logaddexp(0.0, s) - t * s))

        current = loss(a, b)
        for _ in range(max_iter):
            p = _sigmoid(a * z + b)
            r = p - t
            w = p * (1 - p)
            grad = np.array([np.dot(r, z), r.sum()])
            hess = np.array([[np.dot(w, z * z), np.dot(w, z)], [np.dot(w, z), w.sum()]])
            hess += 1e-12 * np.eye(2)
            try:
                delta = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                delta = grad
            step = 1.0
            while step > 1e-10:  # backtracking: never increase the loss
                a_new, b_new = a - step * delta[0], b - step * delta[1]
                new = loss(a_new, b_new)
                if new <= current:
                    break
                step /= 2
            else:
                break
            converged = current - new < 1e-12 * max(1.0, abs(current))
            a, b, current = a_new, b_new, new
            if converged:
                break
        self.a, self.b, self.fitted = float(a), float(b), True
        return self

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for ``logits``."""
        return _sigmoid(self.a * np.asarray(logits, dtype=np.float64) + self.b)

    def __repr__(self) -> str:
        return f"PlattCalibrator(a={self.a:.4g}, b={self.b:.4g}, fitted={self.fitted})"
