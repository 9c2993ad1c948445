"""Local scoring: one store scores its own customers with the federation's global churn model.

Scoring is profiling, so it happens entirely inside the store and only for customers who
allow it::

    RUN/model (churn.pt + model_card.json) ──load, check against the card──▶ global model
    store dir ──prepare_store(purpose, cutoff T, consent now)──▶ features of rows < T
        ──model (+ the store's own Platt calibrator)──▶ churn probability
        ──pseudonym map──▶ the store's own customer ids
        ──action rules, gated by current marketing consent──▶ StoreScores

- **Population**: customers with current consent for ``purpose`` (default ``analytics``) at
  processing time who bought before the cutoff ``T`` (default: the store's end of data, i.e.
  "now"). Features read only rows strictly before ``T``.
- **Calibration**: a :class:`~fedcrm.models.churn.PlattCalibrator` fitted on the store's own
  labelled history (features at ``T − horizon``, churn labels in ``[T − horizon, T)``), on the
  customers the training run held out (``eval_mask`` with the card's ``eval_fraction``). It is
  fitted without noise and never leaves the store. It is skipped (raw model probabilities,
  and the summary says why) with fewer than :data:`MIN_CALIBRATION_ROWS` rows, one class
  only, or when it would worsen ECE or Brier on those rows.
- **Actions**: :func:`~fedcrm.clients.actions.assign_actions`; a customer without a current
  marketing consent (latest marketing event at processing time is a grant) gets
  ``no_marketing_consent``. ``discount_sensitive`` is ``has_discount_data`` and
  ``discount_spend_share >= DISCOUNT_SENSITIVE_SHARE``.
- **Re-identification** uses the store's pseudonym map and fails closed: a pseudonym the map
  cannot resolve stops the run.

:class:`StoreScores` holds customer ids and profiles: it stays in the store. Its ``repr``,
:meth:`StoreScores.summary` and the logs carry counts and rates only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedcrm.clients.actions import DEFAULT_RULES, ActionRule, assign_actions
from fedcrm.clients.preparation import PreparationRequest, prepare_store, store_data_end
from fedcrm.clients.recommendations import load_preference_model, recommend
from fedcrm.clients.store_agent import eval_mask
from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import StoreLayout
from fedcrm.data.store import StoreData, load_store
from fedcrm.errors import ConfigError, OutputExistsError, PrivacyError
from fedcrm.models.churn import PlattCalibrator, build_churn_model, predict_logits
from fedcrm.models.metrics import brier_score, expected_calibration_error
from fedcrm.models.snapshot import FeatureSpec
from fedcrm.privacy.consent import ConsentReport, filter_by_consent
from fedcrm.privacy.keys import load_pseudonym_map
from fedcrm.server.checkpoints import read_model_card

__all__ = [
    "DISCOUNT_SENSITIVE_SHARE",
    "MIN_CALIBRATION_ROWS",
    "SCORE_COLUMNS",
    "CalibrationReport",
    "GlobalModel",
    "StoreScores",
    "check_scores_path",
    "load_global_model",
    "score_store",
    "write_scores",
]

logger = logging.getLogger(__name__)

#: A customer is discount-sensitive when at least this share of their spend was discounted.
DISCOUNT_SENSITIVE_SHARE = 0.3
#: Fewer held-out labelled rows than this and the store keeps the model's raw probabilities.
MIN_CALIBRATION_ROWS = 50
#: The columns of :attr:`StoreScores.frame` and of the CSV, in order.
SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "churn_probability",
    "action",
    "lifecycle_stage",
    "value_tier",
    "rfm_segment",
    "discount_sensitive",
    "marketing_consent",
    "top_categories",
    "offer_category",
)
#: Actions whose offer is for a category: the customer's top recommended one.
CATEGORY_OFFERS = frozenset(
    {"targeted_coupon", "second_purchase_incentive", "loyalty_upgrade_offer", "retention_call"}
)


# -- the global model -----------------------------------------------------------------------
@dataclass(frozen=True)
class GlobalModel:
    """The federation's churn model as written by ``fedcrm train``, checked against its card."""

    run_dir: Path
    run_id: str
    architecture: str
    spec: FeatureSpec = field(repr=False)
    horizon_days: int
    eval_fraction: float
    module: nn.Module = field(repr=False)


def load_global_model(run_dir: Path) -> GlobalModel:
    """Read ``RUN/model/model_card.json`` and ``RUN/model/churn.pt``; :class:`ConfigError`
    naming the file when anything does not match (format, names, shapes, feature spec)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    card_path = run_dir / "model" / "model_card.json"
    if not card_path.is_file():
        raise ConfigError(
            f"{card_path}: no model card; is {run_dir} a finished `fedcrm train` run?"
        )
    card = read_model_card(card_path)
    try:
        model, data = card["model"], card["data"]
        architecture, n_features = str(model["architecture"]), int(model["n_features"])
        names = [str(n) for n in model["parameter_names"]]
        spec = FeatureSpec.from_dict(data["feature_spec"])
        horizon_days, eval_fraction = int(data["horizon_days"]), float(data["eval_fraction"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(
            f"{card_path}: malformed model card ({type(exc).__name__}: {exc})"
        ) from None
    listed = data.get("features")
    if len(spec) != n_features or (listed is not None and tuple(listed) != spec.feature_names):
        raise ConfigError(
            f"{card_path}: feature spec mismatch: the spec has {len(spec)} features, the model "
            f"{n_features}{'' if listed is None else f', the card lists {len(listed)}'}"
        )
    try:
        module = build_churn_model(architecture, n_features)  # the server's defaults (hidden)
    except ValueError as exc:
        raise ConfigError(f"{card_path}: {exc}") from None
    weights_path = run_dir / "model" / "churn.pt"
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{weights_path}: no model weights") from None
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ConfigError(f"{weights_path}: not a torch state_dict ({exc})") from None
    if not isinstance(state, dict) or list(state) != names:
        got = list(state) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{weights_path}: parameters {got} do not match the card's {names}")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    if shapes != expected:
        raise ConfigError(
            f"{weights_path}: parameter shapes {shapes} do not match a {architecture} model "
            f"with {n_features} features {expected}"
        )
    module.load_state_dict(state)
    module.eval()
    return GlobalModel(
        run_dir=run_dir,
        run_id=str(card.get("run_id", run_dir.name)),
        architecture=architecture,
        spec=spec,
        horizon_days=horizon_days,
        eval_fraction=eval_fraction,
        module=module,
    )


# -- calibration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationReport:
    """How the store calibrated its scores: counts and rates only.

    The metrics are in-sample, on the held-out rows the calibrator was fitted on; ``*_after``
    are those of the probabilities actually used (equal to ``*_before`` when not applied).
    """

    applied: bool
    reason: str
    cutoff: str
    rows: int = 0
    churn_rate: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    brier_before: float | None = None
    brier_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _calibrate(
    model: GlobalModel,
    store_dir: Path,
    store: StoreData,
    cutoff: pd.Timestamp,
    purpose: str,
    as_of: pd.Timestamp,
) -> tuple[PlattCalibrator, CalibrationReport]:
    """Fit Platt scaling on the held-out customers' labelled history before ``cutoff``."""
    cal_cutoff = cutoff - pd.Timedelta(days=model.horizon_days)
    day = f"{cal_cutoff:%Y-%m-%d}"
    request = PreparationRequest(
        cutoff=cal_cutoff, purpose=purpose, horizon_days=model.horizon_days, consent_as_of=as_of
    )
    try:
        prepared = prepare_store(store_dir, request, spec=model.spec, store=store)
    except ConfigError:  # no consented customer bought before cal_cutoff
        return PlattCalibrator(), CalibrationReport(False, "no labelled history", day)
    assert prepared.labels is not None
    held_out = eval_mask(prepared.features.customer_ids, model.eval_fraction)
    y = np.asarray(prepared.labels.churn)[held_out]
    n = int(held_out.sum())
    if n < MIN_CALIBRATION_ROWS or len(np.unique(y)) < 2:
        why = f"{n} held-out rows (< {MIN_CALIBRATION_ROWS})" if n < MIN_CALIBRATION_ROWS else ""
        reason = f"skipped: {why or 'one class only'}; raw model probabilities"
        return PlattCalibrator(), CalibrationReport(False, reason, day, rows=n)
    logits = predict_logits(model.module, prepared.features.matrix[held_out])
    calibrator = PlattCalibrator().fit(logits, y)
    raw, platt = PlattCalibrator().apply(logits), calibrator.apply(logits)
    ece = expected_calibration_error(y, raw), expected_calibration_error(y, platt)
    brier = brier_score(y, raw), brier_score(y, platt)
    applied = ece[1] <= ece[0] and brier[1] <= brier[0]  # never apply a worse calibration
    logger.info("Platt scaling on %d held-out rows: ECE %.4f -> %.4f", n, *ece)
    reason = (
        "Platt scaling on the store's held-out customers (kept in the store)"
        if applied
        else f"skipped: Platt scaling did not improve the held-out rows (ECE {ece[0]:.4f} -> "
        f"{ece[1]:.4f}, Brier {brier[0]:.4f} -> {brier[1]:.4f}); raw model probabilities"
    )
    report = CalibrationReport(
        applied=applied,
        reason=reason,
        cutoff=day,
        rows=n,
        churn_rate=float(y.mean()),
        ece_before=ece[0],
        ece_after=ece[1] if applied else ece[0],
        brier_before=brier[0],
        brier_after=brier[1] if applied else brier[0],
    )
    return (calibrator if applied else PlattCalibrator()), report


# -- scores ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreScores:
    """One store's scored customers. ``frame`` holds ids and profiles: it stays in the store."""

    store_id: str
    run_id: str
    purpose: str
    cutoff: pd.Timestamp
    consent_as_of: pd.Timestamp
    consent: ConsentReport
    calibration: CalibrationReport
    frame: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:  # never rows
        return (
            f"StoreScores(store_id={self.store_id!r}, run_id={self.run_id!r}, "
            f"cutoff={self.cutoff:%Y-%m-%d}, customers={len(self.frame)}, "
            f"calibrated={self.calibration.applied})"
        )

    def summary(self) -> dict[str, Any]:
        """Counts and rates only; safe to print or log."""

        def counts(column: str) -> dict[str, int]:
            return {str(k): int(v) for k, v in self.frame[column].value_counts().items()}

        return {
            "store_id": self.store_id,
            "run_id": self.run_id,
            "purpose": self.purpose,
            "cutoff": self.cutoff.isoformat(),
            "consent_as_of": self.consent_as_of.isoformat(),
            "customers_scored": len(self.frame),
            "with_recommendations": int((self.frame["top_categories"] != "").sum()),
            "consent": self.consent.as_dict(),
            "marketing_consent": int(self.frame["marketing_consent"].sum()),
            "discount_sensitive": int(self.frame["discount_sensitive"].sum()),
            "actions": counts("action"),
            "lifecycle_stages": counts("lifecycle_stage"),
            "value_tiers": counts("value_tier"),
            "calibration": self.calibration.as_dict(),
        }


def _reidentify(store_dir: Path, pseudonyms: pd.Index) -> pd.Series:
    """The store's own customer ids of ``pseudonyms``; fails closed on any unknown one."""
    layout = StoreLayout(store_dir)
    ids = load_pseudonym_map(layout).customer_id_of(pd.Series(pseudonyms, dtype="str"))
    missing = int(ids.isna().sum())
    if missing:
        raise PrivacyError(
            f"{layout.pseudonym_map_path}: {missing} of {len(ids)} pseudonyms cannot be "
            "re-identified (was the pseudonym key replaced?); nothing was scored"
        )
    return ids.reset_index(drop=True)


def score_store(
    run_dir: Path,
    store_dir: Path,
    *,
    cutoff: pd.Timestamp | str | None = None,
    purpose: str = "analytics",
    rules: Sequence[ActionRule] = DEFAULT_RULES,
    consent_as_of: pd.Timestamp | str | None = None,
    top_k: int = 10,
) -> StoreScores:
    """Score the store at ``store_dir`` with the global model of ``run_dir``, in the store.

    ``cutoff`` defaults to the store's end of data; consent (``purpose`` for the population,
    ``marketing`` for actions) is checked at ``consent_as_of``, default now.
    """
    model = load_global_model(run_dir)
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        raise ConfigError(f"{store_dir}: no such store directory")
    store = load_store(store_dir)
    data_end = store_data_end(store.transactions, store.manifest)
    request = PreparationRequest(  # PreparationRequest parses and checks the two times
        cutoff=data_end if cutoff is None else cutoff,  # type: ignore[arg-type]
        purpose=purpose,
        horizon_days=model.horizon_days,
        consent_as_of=consent_as_of or pd.Timestamp.now(),  # type: ignore[arg-type]
        with_labels=False,
    )
    assert request.cutoff is not None and request.consent_as_of is not None
    if request.cutoff > data_end:
        raise ConfigError(
            f"cutoff {request.cutoff:%Y-%m-%d} is after the store's end of data "
            f"{data_end:%Y-%m-%d}; features would treat unobserved days as inactivity"
        )
    preference = load_preference_model(run_dir)
    vocabulary = preference.vocabulary if preference is not None else None
    prepared = prepare_store(
        store_dir, request, spec=model.spec, vocabulary=vocabulary, store=store
    )
    features = prepared.features
    customer_ids = _reidentify(store_dir, features.customer_ids)
    calibrator, calibration = _calibrate(
        model, store_dir, store, request.cutoff, purpose, request.consent_as_of
    )
    x = np.array(features.matrix)  # a writable copy: torch warns on read-only arrays
    probability = calibrator.apply(predict_logits(model.module, x))
    marketing = filter_by_consent(store, "marketing", request.consent_as_of).customer_ids
    consented = customer_ids.isin(marketing).to_numpy()
    sensitive = (features.column("has_discount_data") > 0) & (
        features.column("discount_spend_share") >= DISCOUNT_SENSITIVE_SHARE
    )
    profile = features.profile.reset_index(drop=True)
    actions = assign_actions(
        churn_probability=probability,
        lifecycle_stage=profile["lifecycle_stage"].tolist(),
        value_tier=profile["value_tier"].tolist(),
        discount_sensitive=sensitive,
        marketing_consent=consented,
        rules=rules,
    )
    top = pd.Series("", index=range(len(customer_ids)), dtype="str")
    if preference is not None and prepared.history is not None:
        top = pd.Series(recommend(preference, x, prepared.history, top_k), dtype="str")
        top[~consented] = ""  # nothing is recommended without marketing consent
    offer = top.str.split(";").str[0].where(pd.Series(actions).isin(CATEGORY_OFFERS), "")
    frame = pd.DataFrame(
        {
            "customer_id": customer_ids,
            "churn_probability": probability,
            "action": actions.astype(str),
            "lifecycle_stage": profile["lifecycle_stage"].astype(str),
            "value_tier": profile["value_tier"].astype(str),
            "rfm_segment": profile["rfm_segment"].astype(str),
            "discount_sensitive": sensitive,
            "marketing_consent": consented,
            "top_categories": top,
            "offer_category": offer.fillna(""),
        },
        columns=list(SCORE_COLUMNS),
    )
    frame = frame.sort_values(
        ["churn_probability", "customer_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    logger.info(
        "scored %d customers of store %s (cutoff %s, %d with marketing consent)",
        len(frame),
        prepared.store_id,
        f"{request.cutoff:%Y-%m-%d}",
        int(consented.sum()),
    )
    return StoreScores(
        store_id=prepared.store_id,
        run_id=model.run_id,
        purpose=purpose,
        cutoff=request.cutoff,
        consent_as_of=request.consent_as_of,
        consent=prepared.consent,
        calibration=calibration,
        frame=frame,
    )


# -- output ---------------------------------------------------------------------------------
def check_scores_path(path: Path, *, force: bool = False) -> Path:
    """``path`` if it is a ``.csv`` that does not exist yet (or ``force``), else an error."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"{path}: scores are written as CSV; give a path ending in .csv")
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a directory")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists; choose another path or use --force")
    return path


def write_scores(scores: StoreScores, path: Path, *, force: bool = False) -> Path:
    """Write ``scores.frame`` as CSV (mode 0600, all or nothing); returns the path.

    The file holds the store's customer ids and profiles: it is personal data for the store.
    """
    path = check_scores_path(path, force=force)
    with atomic_file(path, mode=0o600) as tmp:
        scores.frame.to_csv(tmp, index=False)
    logger.info("wrote %d scores to %s", len(scores.frame), path)
    return path
