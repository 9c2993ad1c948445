"""A store's lifetime privacy ledger: every DP spend, on the store's own disk.

``STORE/.fedcrm/privacy_ledger.json`` lists every spend of the store's customer data, across
all runs, as ``(noise_multiplier σ, sample_rate q, steps)`` per purpose. The ledger is owned by
the store (like NVIDIA FLARE's site policy, a job cannot override it); it is not Flower's
per-run ``Context.state``, which forgets earlier runs.

- :class:`PrivacyBudget` — the store's lifetime (ε, δ);
- :class:`BudgetSplit` — the share of that ε each purpose (:data:`PURPOSES`) may use;
- :class:`LedgerEntry` — one spend (a round of DP-SGD, or one Gaussian release for analytics
  with ``sample_rate=1, steps=1`` and σ = noise std / L2 sensitivity);
- :class:`PrivacyLedger` — ``open`` / ``check`` / ``record`` / ``spent`` / ``as_report``.

A spend is allowed only if, after it, the purpose's ε stays within its share AND the ε of the
whole history stays within the lifetime ε. ε is the PRV accountant's bound of the composed
history (:func:`~fedcrm.privacy.accounting.epsilon_of`); the lifetime check is not the sum of
the shares, because (ε, δ) composition at one δ is not additive.

δ is fixed for a store's lifetime: the file records it and :meth:`PrivacyLedger.open` refuses
another. The lifetime guarantee is one (ε, δ) statement, and every ε in the ledger is computed
at that δ; the same history has a smaller ε at a larger δ, so changing δ later would silently
"refund" budget and mix statements that cannot be compared. Pass the recorded δ
(:meth:`PrivacyLedger.recorded_delta`) rather than recomputing ``default_delta(n)`` from a
store size that changes over time.

``record`` takes an exclusive ``fcntl.flock`` on ``privacy_ledger.lock`` around
read-check-append-write, so two processes of one store cannot both spend the last of a budget;
the file is replaced atomically (fsync'd temporary file, then ``os.replace``). A refused spend
adds nothing to the history; it is kept in the file's ``refusals`` list for the audit report.
``record`` is not idempotent: every call is a spend. A ledger file that cannot be read is an
error (fail closed), never a fresh start.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import StoreLayout
from fedcrm.errors import BudgetExceededError, ConfigError, PrivacyError
from fedcrm.privacy.accounting import (
    ACCOUNTANT,
    HistoryEntry,
    epsilon_of,
    is_integer,
    is_real,
    plan_noise_multiplier,
)

__all__ = [
    "LEDGER_FILE_NAME",
    "LOCK_FILE_NAME",
    "PURPOSES",
    "BudgetDecision",
    "BudgetSplit",
    "LedgerEntry",
    "PrivacyBudget",
    "PrivacyLedger",
    "check_purpose",
]

LEDGER_FILE_NAME = "privacy_ledger.json"
LOCK_FILE_NAME = "privacy_ledger.lock"
#: Purposes a store may spend ε on; each has a share in :class:`BudgetSplit`.
PURPOSES: tuple[str, ...] = ("churn", "preference", "analytics")

_FORMAT = "fedcrm-privacy-ledger"
_VERSION = 1
_TOLERANCE = 1e-9  # float slack when comparing ε with a cap
_PRIVACY_UNIT = "customer record (one feature row per customer per snapshot)"
_MECHANISM = "Poisson-subsampled Gaussian (DP-SGD; analytics: Gaussian, q=1)"


def check_purpose(purpose: str) -> str:
    """``purpose`` if it is one of :data:`PURPOSES`, else ValueError listing the valid ones."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; valid: {', '.join(PURPOSES)}")
    return purpose


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"


@dataclass(frozen=True)
class PrivacyBudget:
    """A store's lifetime (ε, δ); validated on construction."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (is_real(self.epsilon) and math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"budget ε must be a finite number > 0 (got {self.epsilon!r})")
        if not (is_real(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"budget δ must be strictly between 0 and 1 (got {self.delta!r})")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))


@dataclass(frozen=True)
class BudgetSplit:
    """The fraction of the lifetime ε each purpose may use (each in [0, 1], sum ≤ 1)."""

    churn: float = 0.5
    preference: float = 0.3
    analytics: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (is_real(value) and 0 <= value <= 1):
                raise ConfigError(f"budget share of {f.name} must be in [0, 1] (got {value!r})")
            object.__setattr__(self, f.name, float(value))
        total = sum(getattr(self, p) for p in PURPOSES)
        if total > 1 + _TOLERANCE:
            shares = ", ".join(f"{p}={getattr(self, p)}" for p in PURPOSES)
            raise ConfigError(f"budget shares must sum to at most 1 (got {shares}: {total:g})")

    def fraction(self, purpose: str) -> float:
        return float(getattr(self, check_purpose(purpose)))


@dataclass(frozen=True)
class LedgerEntry:
    """One spend: ``steps`` Poisson-subsampled Gaussian steps at (σ, q) for a purpose."""

    run_id: str
    round: int
    purpose: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    recorded_at: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id.strip():
            raise ConfigError(f"run_id must be a non-empty string (got {self.run_id!r})")
        if not is_integer(self.round) or self.round < 0:
            raise ConfigError(f"round must be an integer >= 0 (got {self.round!r})")
        check_purpose(self.purpose)
        sigma = self.noise_multiplier
        if not (is_real(sigma) and math.isfinite(sigma) and sigma > 0):
            raise ConfigError(
                f"noise_multiplier must be a finite number > 0 (got {sigma!r}); "
                "σ = 0 gives no differential privacy and cannot be recorded"
            )
        if not (is_real(self.sample_rate) and 0 < self.sample_rate <= 1):
            raise ConfigError(f"sample_rate must be in (0, 1] (got {self.sample_rate!r})")
        if not is_integer(self.steps) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1 (got {self.steps!r})")
        try:
            datetime.fromisoformat(self.recorded_at)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"recorded_at must be an ISO 8601 timestamp (got {self.recorded_at!r})"
            ) from exc
        object.__setattr__(self, "round", int(self.round))
        object.__setattr__(self, "noise_multiplier", float(sigma))
        object.__setattr__(self, "sample_rate", float(self.sample_rate))
        object.__setattr__(self, "steps", int(self.steps))

    @property
    def history_entry(self) -> HistoryEntry:
        """``(noise_multiplier, sample_rate, steps)`` for the accountant."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BudgetDecision:
    """Whether a spend fits; numbers for the constraint that decides (``scope``).

    ``requested`` is the ε increase the spend causes and ``remaining`` what is left before
    it, both for ``scope``: the purpose's share (named after the purpose) unless that share
    fits and the lifetime total does not (``"lifetime"``). ``limit`` is that scope's cap.
    """

    allowed: bool
    requested: float
    remaining: float
    difference: float
    message: str
    scope: str
    limit: float


@contextmanager
def _locked(lock_path: Path, *, exclusive: bool) -> Iterator[None]:
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class PrivacyLedger:
    """A store's lifetime privacy ledger; obtain one with :meth:`open`."""

    def __init__(
        self,
        *,
        path: Path,
        store_id: str,
        budget: PrivacyBudget,
        split: BudgetSplit,
    ) -> None:
        self._path = path
        self._lock_path = path.with_name(LOCK_FILE_NAME)
        self._store_id = store_id
        self._budget = budget
        self._split = split
        self._entries: tuple[LedgerEntry, ...] = ()
        self._refusals: tuple[dict[str, Any], ...] = ()

    # -- opening and reading -------------------------------------------------------------
    @classmethod
    def open(
        cls, layout: StoreLayout, budget: PrivacyBudget, split: BudgetSplit | None = None
    ) -> PrivacyLedger:
        """The store's ledger with its recorded history (empty for a new store).

        Raises :class:`ConfigError` when the file records another δ than ``budget.delta``,
        :class:`PrivacyError` when the file cannot be read as a ledger.
        """
        ledger = cls(
            path=layout.private_dir / LEDGER_FILE_NAME,
            store_id=layout.store_id,
            budget=budget,
            split=split if split is not None else BudgetSplit(),
        )
        ledger.refresh()
        return ledger

    @staticmethod
    def recorded_delta(layout: StoreLayout) -> float | None:
        """The δ a store's ledger file fixes, or None before its first spend."""
        path = layout.private_dir / LEDGER_FILE_NAME
        with _locked(path.with_name(LOCK_FILE_NAME), exclusive=False):
            data = _read(path)
        return None if data is None else data[0]

    def refresh(self) -> None:
        """Reload the history from disk (another process may have recorded since)."""
        with _locked(self._lock_path, exclusive=False):
            self._load()

    def _load(self) -> None:
        data = _read(self._path)
        if data is None:
            self._entries, self._refusals = (), ()
            return
        delta, entries, refusals = data
        if delta != self._budget.delta:
            raise ConfigError(
                f"store {self._store_id}: the privacy ledger {self._path} is kept at δ={delta!r} "
                f"but δ={self._budget.delta!r} was requested; δ is fixed for a store's lifetime "
                f"(every recorded ε is stated at it), so pass δ={delta!r}"
            )
        self._entries, self._refusals = entries, refusals

    @property
    def path(self) -> Path:
        return self._path

    @property
    def store_id(self) -> str:
        return self._store_id

    @property
    def budget(self) -> PrivacyBudget:
        return self._budget

    @property
    def split(self) -> BudgetSplit:
        return self._split

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Recorded spends, oldest first (as of the last open, refresh, check or record)."""
        return self._entries

    @property
    def refusals(self) -> tuple[dict[str, Any], ...]:
        """Refused spends with the numbers of their refusal, oldest first."""
        return self._refusals

    # -- budget arithmetic -----------------------------------------------------------------
    def _history(self, purpose: str | None) -> list[HistoryEntry]:
        if purpose is not None:
            check_purpose(purpose)
        return [e.history_entry for e in self._entries if purpose in (None, e.purpose)]

    def cap(self, purpose: str | None = None) -> float:
        """The lifetime ε, or the ε a purpose's share allows."""
        if purpose is None:
            return self._budget.epsilon
        return self._split.fraction(purpose) * self._budget.epsilon

    def spent(self, purpose: str | None = None) -> float:
        """ε of the whole history, or of one purpose's entries (PRV, at the budget's δ)."""
        return epsilon_of(self._history(purpose), self._budget.delta)

    def remaining(self, purpose: str | None = None) -> float:
        """``cap - spent`` for the purpose (or the lifetime), never below 0."""
        return max(0.0, self.cap(purpose) - self.spent(purpose))

    def plan_noise_multiplier(self, purpose: str, sample_rate: float, steps: int) -> float:
        """The σ for a run of ``steps`` steps at ``sample_rate`` that fits what remains.

        Plans against the purpose's share (given its history) and the lifetime ε (given the
        whole history) and returns the larger σ, so :meth:`record` allows every round of the
        plan. Raises :class:`ConfigError` when nothing remains.
        """
        self.refresh()
        delta = self._budget.delta
        own, whole = self._history(purpose), self._history(None)
        sigma = plan_noise_multiplier(self.cap(purpose), delta, sample_rate, steps, prior=own)
        if len(own) < len(whole):  # else the share (≤ the lifetime, same history) is tighter
            lifetime = plan_noise_multiplier(self.cap(None), delta, sample_rate, steps, prior=whole)
            sigma = max(sigma, lifetime)
        return sigma

    def check(self, entry: LedgerEntry) -> BudgetDecision:
        """Would ``entry`` fit? Reads the latest file; records nothing."""
        with _locked(self._lock_path, exclusive=False):
            self._load()
        return self._decide(entry)

    def _decide(self, entry: LedgerEntry) -> BudgetDecision:
        delta = self._budget.delta
        new = entry.history_entry
        purpose_history = self._history(entry.purpose)
        whole_history = self._history(None)
        scopes = []
        for scope, history, limit in (
            (entry.purpose, purpose_history, self.cap(entry.purpose)),
            ("lifetime", whole_history, self.cap(None)),
        ):
            before = epsilon_of(history, delta)
            after = epsilon_of([*history, new], delta)
            scopes.append(
                (scope, after - before, limit - before, limit, after <= limit + _TOLERANCE)
            )
        allowed = all(ok for *_, ok in scopes)
        failing = [s for s in scopes if not s[4]]
        scope, requested, remaining, limit, _ = failing[0] if failing else scopes[0]
        remaining = max(0.0, remaining)
        difference = requested - remaining
        what = f"{entry.purpose} round {entry.round} of run {entry.run_id}"
        share = "lifetime" if scope == "lifetime" else f"the {scope} share"
        numbers_ = (
            f"requested ε={_fmt(requested)}, remaining ε={_fmt(remaining)} of {_fmt(limit)} "
            f"({share}; δ={delta:g})"
        )
        if allowed:
            message = f"store {self._store_id} allows {what}: {numbers_}"
        else:
            message = (
                f"store {self._store_id} refuses {what}: {numbers_} (difference "
                f"{_fmt(difference)}); raise the noise multiplier, train fewer rounds or "
                "epochs, or use a smaller sample rate"
            )
        return BudgetDecision(
            allowed=allowed,
            requested=requested,
            remaining=remaining,
            difference=difference,
            message=message,
            scope=scope,
            limit=limit,
        )

    # -- spending ------------------------------------------------------------------------
    def record(self, entry: LedgerEntry) -> None:
        """Spend: check against the latest file, then append and persist, under a lock.

        Raises :class:`BudgetExceededError` (with the decision's message) when the purpose's
        share or the lifetime ε would be exceeded; the history is then unchanged and the
        refusal is logged in the file.
        """
        with _locked(self._lock_path, exclusive=True):
            self._load()
            decision = self._decide(entry)
            if not decision.allowed:
                refusal = {
                    **entry.to_dict(),
                    "scope": decision.scope,
                    "requested": decision.requested,
                    "remaining": decision.remaining,
                    "limit": decision.limit,
                    "refused_at": _utc_now(),
                }
                self._write(self._entries, (*self._refusals, refusal))
                self._refusals = (*self._refusals, refusal)
                raise BudgetExceededError(decision.message)
            entries = (*self._entries, entry)
            self._write(entries, self._refusals)
            self._entries = entries

    def _write(self, entries: Sequence[LedgerEntry], refusals: Sequence[dict[str, Any]]) -> None:
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "store_id": self._store_id,
            "accountant": ACCOUNTANT,
            "delta": self._budget.delta,
            "entries": [e.to_dict() for e in entries],
            "refusals": list(refusals),
        }
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with atomic_file(self._path, mode=0o600) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    # -- reporting -----------------------------------------------------------------------
    def as_report(self) -> dict[str, Any]:
        """Spent / cap / remaining per purpose and in total, for the audit report."""
        purposes = {
            p: {
                "spent": self.spent(p),
                "cap": self.cap(p),
                "remaining": self.remaining(p),
                "entries": sum(e.purpose == p for e in self._entries),
            }
            for p in PURPOSES
        }
        return {
            "store_id": self._store_id,
            "accountant": ACCOUNTANT,
            "mechanism": _MECHANISM,
            "privacy_unit": _PRIVACY_UNIT,
            "delta": self._budget.delta,
            "epsilon_budget": self._budget.epsilon,
            "purposes": purposes,
            "total": {
                "spent": self.spent(),
                "cap": self.cap(),
                "remaining": self.remaining(),
                "entries": len(self._entries),
            },
            "runs": sorted({e.run_id for e in self._entries}),
            "refusals": len(self._refusals),
        }


def _read(
    path: Path,
) -> tuple[float, tuple[LedgerEntry, ...], tuple[dict[str, Any], ...]] | None:
    """``(delta, entries, refusals)`` from a ledger file, or None when there is none."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a fedcrm privacy ledger")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r}")
        if data.get("accountant") != ACCOUNTANT:
            raise ValueError(f"kept with accountant {data.get('accountant')!r}, not {ACCOUNTANT}")
        delta = data["delta"]
        if not (is_real(delta) and 0 < delta < 1):
            raise ValueError(f"invalid δ {delta!r}")
        entries = tuple(LedgerEntry.from_dict(e) for e in data["entries"])
        refusals = tuple(dict(r) for r in data.get("refusals", []))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrivacyError(f"{path}: cannot read the privacy ledger ({exc})") from exc
    except (ValueError, TypeError, KeyError, ConfigError) as exc:
        raise PrivacyError(
            f"{path}: not a valid privacy ledger ({exc}); refusing to train until it is "
            "restored (a ledger is never restarted silently)"
        ) from exc
    return float(delta), entries, refusals
