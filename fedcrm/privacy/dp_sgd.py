"""Local DP-SGD on a store's own rows, with Opacus (ghost clipping, Poisson sampling).

The privacy unit is the customer record: one feature row per customer per snapshot, with its
label — one churn bit, or a multi-hot row over categories for the preference model. Each step
samples every row independently with probability ``q`` (Poisson), clips each row's gradient to
L2 norm ``max_grad_norm`` (ghost clipping: per-row norms without per-row gradients), sums,
adds Gaussian noise of std ``noise_multiplier x max_grad_norm`` and divides by the expected
batch size. A row's gradient is that of its whole loss (for a multi-hot row, the sum over all
categories), so the clipping bounds one customer's contribution across every category at once.

:func:`train_dp` spends privacy but does not account for it: it returns the ``steps`` taken and
the ``sample_rate`` used, and the caller records ``(σ, q, steps)`` in the store's
:class:`~fedcrm.privacy.ledger.PrivacyLedger` (better: checks it BEFORE training). Plan σ once
per run with :func:`sample_rate_for` and :func:`steps_per_epoch`, which give exactly the ``q``
and step count Opacus will use (``q = 1 / ceil(n / batch)``).

Guarantee caveats, said out loud:

- Noise and sampling come from torch's Mersenne-Twister generator, not a cryptographic one:
  ``secure_mode`` needs torchcsprng, which does not install with torch 2.13 (logged once).
  By default both generators are seeded from ``os.urandom``; a ``seed`` makes the noise
  reproducible by anyone who knows it (a :class:`~fedcrm.errors.PrivacyWarning` is issued),
  so never take a seed from the coordinator outside tests.
- An empty Poisson batch still takes a noise-only step (zero gradient plus noise): skipping it
  would reveal that the batch was empty, which the accounting does not cover.
- ``mean_loss`` and ``records`` are computed from private data without noise: keep them in the
  store's logs; do not send them to the coordinator as if they were DP.
- ``torch.set_num_threads(1)`` (one thread per simulated store) is the caller's job.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.grad_sample import AbstractGradSampleModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fedcrm.errors import ConfigError, DataError, PrivacyWarning

__all__ = [
    "MIN_STEPS_PER_EPOCH",
    "OPTIMIZERS",
    "DpSgdConfig",
    "DpTrainResult",
    "effective_batch_size",
    "sample_rate_for",
    "steps_per_epoch",
    "train_dp",
]

logger = logging.getLogger(__name__)

#: The batch is capped near N / 20, so an epoch has at least about 20 steps (dp.md: small
#: stores are expensive; a small sample rate buys amplification by subsampling).
MIN_STEPS_PER_EPOCH = 20
#: Optimizers by name (wrapped by Opacus' DPOptimizer).
OPTIMIZERS: Mapping[str, Callable[..., torch.optim.Optimizer]] = MappingProxyType(
    {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
)

_warned_insecure_rng = False


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class DpSgdConfig:
    """Local DP-SGD settings; σ comes from the run's plan, never from a per-round ε."""

    noise_multiplier: float
    max_grad_norm: float = 1.0
    expected_batch_size: int = 256
    epochs: int = 1
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    seed: int | None = None  # None: fresh OS entropy; an int is for tests only (see module)

    def __post_init__(self) -> None:
        checks = (
            ("noise_multiplier", self.noise_multiplier, lambda v: v >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm, lambda v: v > 0, "> 0"),
            ("learning_rate", self.learning_rate, lambda v: v > 0, "> 0"),
        )
        for name, value, ok, bound in checks:
            if not (_is_real(value) and math.isfinite(value) and ok(value)):
                raise ConfigError(f"{name} must be a finite number {bound} (got {value!r})")
            object.__setattr__(self, name, float(value))
        for name in ("expected_batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1 (got {value!r})")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed must be None or an integer >= 0 (got {self.seed!r})")


@dataclass(frozen=True)
class DpTrainResult:
    """What one call of :func:`train_dp` produced and what the ledger must record."""

    state_dict: dict[str, torch.Tensor]  # of the raw module: no ``_module.`` prefix
    steps: int  # Poisson draws taken (empty ones included): record these
    sample_rate: float  # q the steps used: record this
    mean_loss: float  # private, not DP: local logs only
    records: int


def _check_count(n_records: int, expected_batch_size: int) -> None:
    for name, value in (("n_records", n_records), ("expected_batch_size", expected_batch_size)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1 (got {value!r})")


def effective_batch_size(n_records: int, expected_batch_size: int) -> int:
    """The expected batch size used: ``min(expected_batch_size, n // 20)``, at least 1."""
    _check_count(n_records, expected_batch_size)
    return max(1, min(int(expected_batch_size), int(n_records) // MIN_STEPS_PER_EPOCH))


def steps_per_epoch(n_records: int, expected_batch_size: int) -> int:
    """Poisson steps per epoch: ``ceil(n / effective batch)`` (Opacus' loader length)."""
    return math.ceil(n_records / effective_batch_size(n_records, expected_batch_size))


def sample_rate_for(n_records: int, expected_batch_size: int) -> float:
    """The sampling probability q Opacus will use: ``1 / steps_per_epoch``.

    The batch is capped near N/20 when the store is small (N < 20 x batch), so an epoch has
    at least ~20 steps; for N=1,500 and batch 128 that is batch 75 and q = 1/20.
    """
    return 1.0 / steps_per_epoch(n_records, expected_batch_size)


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Features and labels as tensors, fetched a whole batch at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return self.x[idx], self.y[idx]


def _batch_as_is(batch: Any) -> Any:
    """Collate for :meth:`_Rows.__getitems__`, which already returns stacked tensors."""
    return batch


def _as_arrays(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x_arr = np.ascontiguousarray(x, dtype=np.float32)
    y_arr = np.asarray(y)
    if x_arr.ndim != 2 or len(x_arr) == 0:
        raise DataError(f"x must be a non-empty 2-D array (got shape {x_arr.shape})")
    if y_arr.ndim not in (1, 2) or y_arr.shape[0] != len(x_arr) or 0 in y_arr.shape[1:]:
        raise DataError(
            f"y must have shape ({len(x_arr)},) or ({len(x_arr)}, V) like x's rows "
            f"(got {y_arr.shape})"
        )
    if not np.isfinite(x_arr).all():
        raise DataError("x holds NaN or infinite values")
    if not np.isin(y_arr, (0, 1)).all():
        raise DataError("y must hold only 0 and 1")
    return torch.from_numpy(x_arr), torch.from_numpy(np.ascontiguousarray(y_arr, np.float32))


def _generators(seed: int | None) -> tuple[torch.Generator, torch.Generator]:
    """(sampling, noise) generators: OS entropy, or derived from ``seed`` (tests only)."""
    if seed is None:
        seeds = [int.from_bytes(os.urandom(8), "little") for _ in range(2)]
    else:
        warnings.warn(
            f"DP-SGD noise is seeded (seed={seed}): anyone who knows the seed can reproduce "
            "and remove the noise; use a seed in tests only",
            PrivacyWarning,
            stacklevel=3,
        )
        seeds = [seed * 2 + 1, seed * 2 + 2]
    return tuple(torch.Generator().manual_seed(s) for s in seeds)  # type: ignore[return-value]


def _warn_once_insecure_rng() -> None:
    global _warned_insecure_rng
    if not _warned_insecure_rng:
        logger.warning(
            "DP-SGD noise comes from torch's non-cryptographic generator (secure_mode needs "
            "torchcsprng, which does not install with torch 2.13)"
        )
        _warned_insecure_rng = True


def train_dp(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: DpSgdConfig,
    *,
    pos_weight: float | None = None,
    criterion: nn.Module | None = None,
) -> DpTrainResult:
    """Train ``model`` with DP-SGD for ``config.epochs`` epochs.

    ``y`` is either 0/1 of shape (n,) — ``model`` gives 1 logit per row, reshaped to (B,),
    default loss BCE — or 0/1 of shape (n, V) — ``model`` gives (B, V) logits, default loss
    :class:`~fedcrm.models.preference.MultiLabelLoss` (BCE summed over the V columns per row).
    A custom ``criterion(logits, y_batch)`` must honour ``reduction`` ("none": one loss per
    row, which ghost clipping clips; it must be "mean" when passed in).

    ``model`` must be a plain module (not already wrapped by Opacus); it is trained in place,
    unwrapped afterwards and its ``state_dict`` returned. ``pos_weight`` weights the positive
    labels in the default loss (a public constant, or one derived from the store's label
    counts — the latter is data-dependent and belongs to the store). Returns the steps and
    sample rate to record in the ledger; computes no ε.
    """
    if isinstance(model, AbstractGradSampleModule):
        raise ConfigError("train_dp needs a plain nn.Module, not one already wrapped by Opacus")
    if pos_weight is not None and not (
        _is_real(pos_weight) and math.isfinite(pos_weight) and pos_weight > 0
    ):
        raise ConfigError(f"pos_weight must be None or a finite number > 0 (got {pos_weight!r})")
    if criterion is not None and pos_weight is not None:
        raise ConfigError("pass pos_weight to your criterion, not to train_dp")
    if criterion is not None and getattr(criterion, "reduction", "mean") != "mean":
        raise ConfigError(
            f"criterion.reduction must be 'mean' (got {criterion.reduction!r}); "
            "Opacus switches it to 'none' to clip per-row losses"
        )
    _register_grad_samplers(model)
    xt, yt = _as_arrays(x, y)
    n = len(xt)
    batch = effective_batch_size(n, config.expected_batch_size)
    _warn_once_insecure_rng()
    if config.noise_multiplier == 0:
        warnings.warn(
            "noise_multiplier=0: this training is NOT differentially private",
            PrivacyWarning,
            stacklevel=2,
        )
    sampling, noise = _generators(config.seed)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.learning_rate)
    if criterion is None:
        criterion = _default_criterion(multi_label=yt.ndim == 2, pos_weight=pos_weight)
    with _opacus_notices_handled():
        return _train(model, xt, yt, config, batch, criterion, optimizer, sampling, noise)


def _register_grad_samplers(model: nn.Module) -> None:
    """Register with Opacus the per-sample gradient of every layer type in ``model`` that
    defines one (a static ``grad_sample(layer, activations, backprops)``), so that models
    need not import Opacus to be built or evaluated."""
    from opacus.grad_sample import register_grad_sampler

    for layer_type in {type(m) for m in model.modules()}:
        sampler = layer_type.__dict__.get("grad_sample")
        if isinstance(sampler, staticmethod):  # registering again replaces it with itself
            register_grad_sampler(layer_type)(sampler.__func__)


def _default_criterion(*, multi_label: bool, pos_weight: float | None) -> nn.Module:
    if multi_label:
        from fedcrm.models.preference import MultiLabelLoss  # privacy does not import models

        return MultiLabelLoss(pos_weight=None if pos_weight is None else float(pos_weight))
    weight = None if pos_weight is None else torch.tensor(float(pos_weight))
    return nn.BCEWithLogitsLoss(pos_weight=weight)


@contextmanager
def _opacus_notices_handled() -> Iterator[None]:
    """Silence two Opacus/torch notices that fedcrm handles itself: the insecure-RNG notice
    (stated once by :func:`_warn_once_insecure_rng`) and the full-backward-hook notice that
    ghost clipping's second backward pass triggers by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def _train(
    model: nn.Module,
    xt: torch.Tensor,
    yt: torch.Tensor,
    config: DpSgdConfig,
    batch: int,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampling: torch.Generator,
    noise: torch.Generator,
) -> DpTrainResult:
    loader = DataLoader(
        _Rows(xt, yt), batch_size=batch, collate_fn=_batch_as_is, generator=sampling
    )
    engine = PrivacyEngine(secure_mode=False)
    dp_model, dp_optimizer, dp_criterion, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=config.noise_multiplier,
        max_grad_norm=config.max_grad_norm,
        poisson_sampling=True,
        grad_sample_mode="ghost",
        criterion=criterion,
        noise_generator=noise,
    )
    sample_rate = 1.0 / len(dp_loader)
    params = [p for p in model.parameters() if p.requires_grad]
    steps, loss_sum, loss_rows = 0, 0.0, 0
    was_training = model.training
    try:
        dp_model.train()
        for _ in range(config.epochs):
            for xb, yb in dp_loader:
                steps += 1
                dp_optimizer.zero_grad()
                if len(xb) == 0:  # noise-only step: zero gradient sum, noise still added
                    for p in params:
                        p.grad = torch.zeros_like(p)
                else:
                    logits = dp_model(xb)
                    loss = dp_criterion(logits.reshape(-1) if yb.ndim == 1 else logits, yb)
                    loss.backward()
                    loss_sum += float(loss.item()) * len(xb)
                    loss_rows += len(xb)
                dp_optimizer.step()
        dp_optimizer.zero_grad()
    finally:
        dp_model.to_standard_module()  # removes Opacus' hooks: the module can be wrapped again
        model.train(was_training)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return DpTrainResult(
        state_dict=state,
        steps=steps,
        sample_rate=sample_rate,
        mean_loss=loss_sum / loss_rows if loss_rows else float("nan"),
        records=len(xt),
    )
