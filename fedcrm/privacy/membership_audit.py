"""Empirical privacy audit of local DP-SGD: canary membership inference → a lower bound on ε.

A DP claim is an upper bound on what one record can reveal; this module measures a LOWER
bound by attacking the product's own training (:func:`~fedcrm.privacy.dp_sgd.train_dp`, σ
planned with :func:`~fedcrm.privacy.accounting.plan_noise_multiplier`, a
:mod:`~fedcrm.models.churn` model). One audit run (Steinke, Nasr & Jagielski 2023, "Privacy
Auditing with One (1) Training Run"):

1. craft ``m`` canary records (:data:`CANARY_DESIGNS`) and include each in the store's rows
   independently with probability 1/2;
2. train once; score every canary by the model's confidence in the canary's label;
3. guess "in" for the ``k`` highest scores and "out" for the ``k`` lowest, abstain on the
   rest; count the correct guesses ``v`` of ``r = 2k``;
4. :func:`one_run_epsilon`: the largest ε at which (ε, δ)-DP would make ``v`` or more correct
   guesses less likely than ``1 - confidence`` (their Theorem 5.2 and Appendix D, computed
   exactly from binomial tails). A few ``k`` fixed in advance are tried with a Bonferroni
   correction, so the reported maximum holds at ``confidence``.

What the bound means: with probability at least ``confidence`` over the coin flips and the
training's randomness, the audited training is NOT (ε_lower, δ)-DP. A non-private control
(same model, no clipping, no noise) must give a clearly positive bound, or the audit could not
fail. A DP run must stay below its claimed ε: a bound above it is evidence of a bug (noise,
sampling or accounting). Staying below is a necessary check, not a proof: one-run black-box
audits are loose (1,000 canaries give at most 4.7 even when every guess is right, and the
auditor sees only the final model), so a DP model's bound sits well below its ε even when
everything is right; see docs/privacy_audit.md for measured figures.

:func:`clopper_pearson_epsilon` is the classic multi-run bound (one model per trial,
``TPR ≤ e^ε·FPR + δ``) for audits that train many models; it must not be used on the canaries
of one run, whose guesses are not independent trials.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import torch
from scipy import stats
from scipy.special import expit
from torch import nn

from fedcrm.errors import ConfigError
from fedcrm.models.churn import CHURN_MODELS, build_churn_model, predict_logits
from fedcrm.privacy.accounting import plan_noise_multiplier
from fedcrm.privacy.dp_sgd import (
    OPTIMIZERS,
    DpSgdConfig,
    effective_batch_size,
    sample_rate_for,
    steps_per_epoch,
    train_dp,
)

__all__ = [
    "CANARY_DESIGNS",
    "AuditConfig",
    "AuditResult",
    "Canaries",
    "GuessOutcome",
    "clopper_pearson_epsilon",
    "epsilon_lower_bound",
    "one_run_epsilon",
    "one_run_p_value",
    "run_audit",
    "score_canaries",
]

logger = logging.getLogger(__name__)


# -- the bounds ------------------------------------------------------------------------------
def _check_counts(m: int, r: int, v: int) -> None:
    if not all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in (m, r, v)):
        raise ConfigError(f"m, r and v must be integers (got {m!r}, {r!r}, {v!r})")
    if not 0 <= v <= r <= m:
        raise ConfigError(f"need 0 <= correct <= guesses <= canaries (got {v}, {r}, {m})")


def _check_probability(name: str, value: float, *, closed: bool = False) -> None:
    ok = 0 <= value < 1 if closed else 0 < value < 1
    if not (isinstance(value, int | float) and not isinstance(value, bool) and ok):
        raise ConfigError(f"{name} must be in {'[0, 1)' if closed else '(0, 1)'} (got {value!r})")


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Bound on P[≥ ``v`` of ``r`` guesses correct] for an (ε, δ)-DP training on ``m`` canaries.

    Steinke et al. 2023, Theorem 5.2 (Appendix D): ``P[Bin(r, e^ε/(1+e^ε)) ≥ v] + 2mδ·α``
    with ``α = max_{1≤i≤v} P[v-i ≤ Bin(r, e^ε/(1+e^ε)) < v] / i``; at most 1.
    """
    _check_counts(m, r, v)
    _check_probability("delta", delta, closed=True)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"epsilon must be a finite number >= 0 (got {epsilon!r})")
    if v == 0:
        return 1.0
    q = float(expit(epsilon))  # the accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))  # P[v-i ≤ B < v]
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + alpha * delta * 2 * m)


def one_run_epsilon(m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """The ε lower bound of one audit run: ``v`` correct of ``r`` guesses over ``m`` canaries.

    The largest ε (to 1e-6) whose p-value (:func:`one_run_p_value`) is below
    ``1 - confidence``: the training is not (ε, δ)-DP, with that confidence. 0.0 when even
    ε = 0 cannot be rejected (e.g. half the guesses right).
    """
    _check_probability("confidence", confidence)
    level = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < level:  # the p-value grows with ε
        low, high = high, 2 * high
    while high - low > 1e-6:
        mid = (low + high) / 2
        if one_run_p_value(m, r, v, mid, delta) < level:
            low = mid
        else:
            high = mid
    return low  # the p-value at ``low`` is below the level: a valid lower bound


def clopper_pearson_epsilon(
    true_pos: int,
    false_neg: int,
    false_pos: int,
    true_neg: int,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """Multi-run ε lower bound ``ln((TPR_low - δ) / FPR_high)`` from independent trials.

    Each trial is one trained model and one membership guess. TPR_low and FPR_high are
    one-sided Clopper-Pearson bounds at ``(1 - confidence) / 2`` each, so both hold together
    with ``confidence``; (ε, δ)-DP implies ``TPR ≤ e^ε·FPR + δ``. 0.0 when nothing is shown.
    """
    counts = (true_pos, false_neg, false_pos, true_neg)
    if any(not isinstance(c, int | np.integer) or isinstance(c, bool) or c < 0 for c in counts):
        raise ConfigError(f"counts must be integers >= 0 (got {counts!r})")
    if true_pos + false_neg == 0 or false_pos + true_neg == 0:
        raise ConfigError("need at least one member and one non-member trial")
    _check_probability("delta", delta, closed=True)
    _check_probability("confidence", confidence)
    tail = (1.0 - confidence) / 2
    tpr_low = float(stats.beta.ppf(tail, true_pos, false_neg + 1)) if true_pos else 0.0
    fpr_high = float(stats.beta.ppf(1 - tail, false_pos + 1, true_neg)) if true_neg else 1.0
    if tpr_low <= delta:
        return 0.0
    return max(0.0, math.log((tpr_low - delta) / fpr_high))


@dataclass(frozen=True)
class GuessOutcome:
    """One guessing rule: ``guesses`` = top k "in" + bottom k "out"; its own bound."""

    guesses: int
    correct: int
    epsilon_lower: float  # at the Bonferroni-corrected confidence


def _check_fractions(fractions: tuple[float, ...]) -> None:
    if not fractions or not all(isinstance(f, int | float) and 0 < f <= 0.5 for f in fractions):
        raise ConfigError(f"guess fractions must lie in (0, 0.5] (got {fractions!r})")


def epsilon_lower_bound(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    guess_fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5),
    confidence: float = 0.95,
) -> tuple[float, tuple[GuessOutcome, ...]]:
    """(ε lower bound, per-rule outcomes) of canary ``scores`` (high: "in") against the truth.

    For each fraction f, k = max(1, ⌊f·m⌋): the top k are guessed in, the bottom k out. Each
    rule is tested at ``1 - (1 - confidence) / len(rules)`` (Bonferroni), so the maximum over
    rules holds at ``confidence``. Ties are broken by canary index, fixed before the coin flips.
    Scores pooled from several independent runs (each canary in one run) form one valid audit.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(included, dtype=bool).reshape(-1)
    m = len(s)
    if m < 2 or truth.shape != s.shape or not np.isfinite(s).all():
        raise ConfigError(
            f"need >= 2 finite scores and one truth per score (got {m}, {truth.shape})"
        )
    _check_fractions(guess_fractions)
    _check_probability("confidence", confidence)
    ks = sorted({max(1, int(f * m)) for f in guess_fractions})
    order = np.argsort(-s, kind="stable")
    per_rule = 1.0 - (1.0 - confidence) / len(ks)
    outcomes = []
    for k in ks:
        correct = int(truth[order[:k]].sum() + (~truth[order[m - k :]]).sum())
        outcomes.append(
            GuessOutcome(2 * k, correct, one_run_epsilon(m, 2 * k, correct, delta, per_rule))
        )
    return max(o.epsilon_lower for o in outcomes), tuple(outcomes)


# -- the canaries ----------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditConfig:
    """One audit run. ``epsilon=None`` is the non-private control: the same model and loop
    with no clipping and no noise. The other training fields mirror :class:`DpSgdConfig`."""

    epsilon: float | None  # the claimed ε of the DP-SGD run; None: non-private control
    delta: float = 1e-5  # δ of the claim and of the bound
    canaries: int = 1000
    design: str = "rare_feature"  # a key of CANARY_DESIGNS
    model: str = "logistic"  # a key of fedcrm.models.churn.CHURN_MODELS
    hidden: int = 32  # "mlp" only
    epochs: int = 20
    learning_rate: float = 0.5
    optimizer: str = "sgd"
    expected_batch_size: int = 128
    max_grad_norm: float = 1.0
    canary_value: float = 10.0  # rare_feature: the canary's value in its own column
    guess_fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
    confidence: float = 0.95
    seed: int | None = None  # None: OS entropy; an int makes coins, init and noise repeatable

    def __post_init__(self) -> None:
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"epsilon must be None or a finite number > 0 (got {self.epsilon!r})")
        _check_probability("delta", self.delta)
        _check_probability("confidence", self.confidence)
        for name, registry in (
            ("design", CANARY_DESIGNS),
            ("model", CHURN_MODELS),
            ("optimizer", OPTIMIZERS),
        ):
            if getattr(self, name) not in registry:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(registry)}"
                )
        for name, least in (("canaries", 2), ("hidden", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{name} must be an integer >= {least} (got {value!r})")
        _check_fractions(self.guess_fractions)
        if not (math.isfinite(self.canary_value) and self.canary_value > 0):
            raise ConfigError(
                f"canary_value must be a finite number > 0 (got {self.canary_value!r})"
            )
        DpSgdConfig(  # the training fields: validated by the config they feed
            noise_multiplier=0.0,
            max_grad_norm=self.max_grad_norm,
            epochs=self.epochs,
            expected_batch_size=self.expected_batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Canaries:
    """Canary rows and labels, and the store's rows as the model sees them (same width)."""

    x: np.ndarray  # (m, width)
    y: np.ndarray  # (m,) 0/1
    base_x: np.ndarray  # (n, width)


def _rare_feature(
    x: np.ndarray, y: np.ndarray, config: AuditConfig, rng: np.random.Generator
) -> Canaries:
    """Each canary is a customer with a one-off attribute: a column of its own (0 for everyone
    else) set to ``canary_value``, every other feature 0, label 1. For a linear model the
    canary alone moves its column's weight (an input-space "Dirac canary"): clipping caps its
    gradient, but no other row dilutes it, so the final weight shows it as clearly as DP-SGD's
    noise allows."""
    m, (n, d) = config.canaries, x.shape
    base = np.zeros((n, d + m), dtype=np.float32)
    base[:, :d] = x
    rows = np.zeros((m, d + m), dtype=np.float32)
    rows[np.arange(m), d + np.arange(m)] = config.canary_value
    return Canaries(rows, np.ones(m, dtype=np.float32), base)


def _mislabeled(
    x: np.ndarray, y: np.ndarray, config: AuditConfig, rng: np.random.Generator
) -> Canaries:
    """Realistic-looking rows with a surprising label: each feature drawn independently from
    its column in the store (plausible values, unusual combinations), labelled the opposite of
    what a reference model (same kind, trained without canaries, no DP) predicts. A model must
    memorise a canary to fit it, which needs capacity: use ``model="mlp"``."""
    n, d = x.shape
    rows = x[rng.integers(0, n, size=(config.canaries, d)), np.arange(d)].astype(np.float32)
    reference = _new_model(config, d)
    # Fixed training, whatever the audited run's: every run of an audit, DP or not, gets the
    # same kind of canaries.
    _train_plain(reference, x, y, replace(config, optimizer="adam", learning_rate=0.01, epochs=50))
    labels = (predict_logits(reference, rows) < 0).astype(np.float32)
    return Canaries(rows, labels, np.asarray(x, dtype=np.float32))


#: Canary designs by name: ``design(x, y, config, rng) -> Canaries``.
CANARY_DESIGNS: Mapping[str, Callable[..., Canaries]] = MappingProxyType(
    {"rare_feature": _rare_feature, "mislabeled": _mislabeled}
)


def score_canaries(model: nn.Module, canaries: Canaries) -> np.ndarray:
    """The model's confidence in each canary's label: ``(2y - 1) x logit`` (high: "in")."""
    return (2.0 * canaries.y - 1.0) * predict_logits(model, canaries.x)


# -- one audit run ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AuditResult:
    """What one run measured. ``epsilon_lower`` holds at ``confidence``; ``auc`` (scores vs
    inclusion) is a diagnostic of the attack, not a bound."""

    claimed_epsilon: float | None  # None: the non-private control
    delta: float
    epsilon_lower: float
    outcomes: tuple[GuessOutcome, ...]
    canaries: int
    included: int
    records: int  # rows trained on: the store's plus the included canaries
    noise_multiplier: float  # 0.0 for the control
    sample_rate: float | None  # None for the control (shuffled fixed-size batches)
    steps: int
    auc: float
    seconds: float
    scores: np.ndarray  # per canary, for pooling runs
    membership: np.ndarray  # per canary: True if included

    @property
    def below_claim(self) -> bool | None:
        """True when the bound stays below the claimed ε (None for the control)."""
        return None if self.claimed_epsilon is None else self.epsilon_lower < self.claimed_epsilon


def _new_model(config: AuditConfig, width: int) -> nn.Module:
    kwargs = {"hidden": config.hidden} if config.model == "mlp" else {}
    return build_churn_model(config.model, width, **kwargs)


def _train_plain(model: nn.Module, x: np.ndarray, y: np.ndarray, config: AuditConfig) -> int:
    """Non-private minibatch training (shuffled, same batch size as DP-SGD); returns steps."""
    xt = torch.tensor(np.asarray(x), dtype=torch.float32)  # a copy: x may be read-only
    yt = torch.tensor(np.asarray(y), dtype=torch.float32)
    batch = effective_batch_size(len(xt), config.expected_batch_size)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.learning_rate)
    loss = nn.BCEWithLogitsLoss()
    steps = 0
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xt))
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss(model(xt[idx]).reshape(-1), yt[idx]).backward()
            optimizer.step()
            steps += 1
    model.eval()
    return steps


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    ranks = stats.rankdata(scores)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def run_audit(x: np.ndarray, y: np.ndarray, config: AuditConfig) -> AuditResult:
    """Audit one training of a churn model on the store rows ``x``, ``y`` (0/1).

    Canaries are built, each included with probability 1/2, and the model is trained once:
    with DP-SGD at ``config.epsilon`` (σ planned by PRV for the whole run from the actual row
    count, sample rate and steps, as a store does) or, for ``epsilon=None``, without privacy.
    """
    x_arr = np.asarray(x, dtype=np.float32)
    y_arr = np.asarray(y, dtype=np.float32).reshape(-1)
    if x_arr.ndim != 2 or len(x_arr) == 0 or len(y_arr) != len(x_arr):
        raise ConfigError(
            f"x must be 2-D with one label per row (got {x_arr.shape}, {y_arr.shape})"
        )
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[]):  # model init and shuffles; the caller's RNG is kept
        torch.manual_seed(config.seed if config.seed is not None else int(rng.integers(2**62)))
        canaries = CANARY_DESIGNS[config.design](x_arr, y_arr, config, rng)
        membership = rng.random(config.canaries) < 0.5
        train_x = np.concatenate([canaries.base_x, canaries.x[membership]])
        train_y = np.concatenate([y_arr, canaries.y[membership]])
        model = _new_model(config, train_x.shape[1])
        sigma, sample_rate = 0.0, None
        if config.epsilon is None:
            steps = _train_plain(model, train_x, train_y, config)
        else:
            n, batch = len(train_x), config.expected_batch_size
            sample_rate = sample_rate_for(n, batch)
            steps = config.epochs * steps_per_epoch(n, batch)
            sigma = plan_noise_multiplier(config.epsilon, config.delta, sample_rate, steps)
            dp = DpSgdConfig(
                noise_multiplier=sigma,
                max_grad_norm=config.max_grad_norm,
                expected_batch_size=batch,
                epochs=config.epochs,
                learning_rate=config.learning_rate,
                optimizer=config.optimizer,
                seed=config.seed,
            )
            trained = train_dp(model, train_x, train_y, dp)
            if trained.steps != steps or trained.sample_rate != sample_rate:
                raise RuntimeError(  # a bug: the claim would not describe the training
                    f"DP-SGD took {trained.steps} steps at q={trained.sample_rate}, "
                    f"planned {steps} at q={sample_rate}"
                )
    scores = score_canaries(model, canaries)
    bound, outcomes = epsilon_lower_bound(
        scores, membership, config.delta, config.guess_fractions, config.confidence
    )
    result = AuditResult(
        claimed_epsilon=config.epsilon,
        delta=config.delta,
        epsilon_lower=bound,
        outcomes=outcomes,
        canaries=config.canaries,
        included=int(membership.sum()),
        records=len(train_x),
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=steps,
        auc=_auc(scores, membership),
        seconds=time.perf_counter() - started,
        scores=scores,
        membership=membership,
    )
    logger.info(
        "audit %s/%s, claimed ε=%s: ε_lower=%.3f (AUC %.3f, σ=%.3f, %d steps, %.1f s)",
        config.design,
        config.model,
        config.epsilon,
        bound,
        result.auc,
        sigma,
        steps,
        result.seconds,
    )
    return result
