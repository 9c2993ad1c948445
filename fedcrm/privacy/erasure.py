"""The erasure register: customers who asked to be erased, and the runs that used their data.

Two append-only files in the store's private directory (``STORE/.fedcrm/``, mode 0700; files
0600; they never leave the store)::

    erasure_register.jsonl   one line per erasure request (GDPR Art. 17, PIPL Art. 47)
    participation.jsonl      one line per (run, task): whose data the run used

**The register never holds a customer id.** A request records the customer as
``customer_ref`` = HMAC-SHA256 under the store's pseudonym key with its own domain
(:data:`ERASURE_DOMAIN`), so the store recognises the customer in every later load of its data
while the file alone identifies nobody. The ref is not the customer's pseudonym (another
domain), so the register cannot be joined with released data either. Each line records the
fingerprint of the key it was made with: the register is only meaningful with that key, and a
register made under another key is refused (fail closed) instead of silently no longer matching
anyone.

**Exclusion.** :func:`exclude_erased` drops every row of every erased customer from all tables
of a loaded store; :func:`fedcrm.privacy.boundary.release_for_purpose` calls it (given the
store's layout) before the consent filter, so no model, query or score sees an erased customer
again, whatever their consent says. A register that cannot be read is an error
(:class:`PrivacyError`), never an empty register.

**Participation.** :func:`record_participation` keeps, per (run, task), a truncated SHA-256 of
each pseudonym whose data the run used (not the pseudonyms). :func:`runs_including` recomputes
the pseudonym(s) of a raw id (the store-key pseudonym, plus any pseudonym of that id in the
persisted pseudonym map, e.g. a linkage pseudonym) and looks them up, so an erasure request can
list the model versions trained on the customer's data; :func:`remedy_commands` says what to do
about them. Models already trained are not changed by an erasure.

Writes take an exclusive ``fcntl.flock`` on a sibling ``.lock`` file, append one line and fsync
it; reads take a shared lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shlex
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fedcrm.data.layout import StoreLayout
from fedcrm.data.membership import text_isin
from fedcrm.data.store import StoreData, load_store
from fedcrm.errors import ConfigError, DataError, PrivacyError
from fedcrm.privacy.keys import (
    PSEUDONYM_KEY_NAME,
    StoreKeys,
    _private_dirs,
    load_pseudonym_map,
    write_pseudonym_map,
)
from fedcrm.privacy.pseudonyms import STORE_DOMAIN, keyed_pseudonyms

__all__ = [
    "ERASURE_DOMAIN",
    "ERASURE_REGISTER_NAME",
    "MAX_REASON_CHARS",
    "PARTICIPATION_LOG_NAME",
    "ErasureRequest",
    "customer_ref",
    "erased_refs",
    "exclude_erased",
    "list_requests",
    "record_erasure",
    "record_participation",
    "remedy_commands",
    "runs_including",
]

logger = logging.getLogger(__name__)

ERASURE_REGISTER_NAME = "erasure_register.jsonl"
PARTICIPATION_LOG_NAME = "participation.jsonl"
_REGISTER_LOCK = "erasure_register.lock"
_PARTICIPATION_LOCK = "participation.lock"

#: HMAC domain of a customer's erasure ref (never equal to a pseudonym of the same id).
ERASURE_DOMAIN = b"fedcrm.erasure.v1\x00customer\x00"
_PARTICIPATION_DOMAIN = b"fedcrm.participation.v1\x00pseudonym\x00"
_PARTICIPATION_HEX = 32  # 128 bits of SHA-256: collisions are negligible, and only over-report
MAX_REASON_CHARS = 200
_VERSION = 1
_REF = re.compile(r"[0-9a-f]{64}")
_REQUEST_ID = re.compile(r"erase-[0-9a-f]{12}")
_IDENTIFYING = ("name", "mobile", "email", "national_id", "address")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ErasureRequest:
    """One erasure request as recorded: no customer id, only the keyed ``customer_ref``."""

    request_id: str
    customer_ref: str
    requested_at: str
    reason: str | None
    affected_runs: tuple[dict[str, Any], ...]
    repeat: bool = False  # the customer had been erased before (recorded again)

    def __repr__(self) -> str:
        return (
            f"ErasureRequest(request_id={self.request_id!r}, "
            f"customer_ref={self.customer_ref[:12]}…, "
            f"requested_at={self.requested_at!r}, affected_runs={len(self.affected_runs)}, "
            f"repeat={self.repeat})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "customer_ref": self.customer_ref,
            "requested_at": self.requested_at,
            "reason": self.reason,
            "affected_runs": [dict(r) for r in self.affected_runs],
            "repeat": self.repeat,
        }


# -- keys and refs ----------------------------------------------------------------------------
def _existing_keys(layout: StoreLayout, what: str) -> StoreKeys:
    """The store's keys; a missing pseudonym key is an error here (never created)."""
    if not (layout.keys_dir / PSEUDONYM_KEY_NAME).is_file():
        raise PrivacyError(
            f"{layout.keys_dir / PSEUDONYM_KEY_NAME}: the store's pseudonym key is missing, so "
            f"{what} cannot recognise its customers; restore the key from backup (a new key "
            "matches nobody in the register)"
        )
    return StoreKeys.load_or_create(layout)


def _refs(key: bytes, ids: Iterable[str]) -> list[str]:
    base = hmac.new(key, ERASURE_DOMAIN, hashlib.sha256)
    out = []
    for value in ids:
        h = base.copy()
        h.update(str(value).encode("utf-8"))
        out.append(h.hexdigest())
    return out


def customer_ref(keys: StoreKeys, customer_id: str) -> str:
    """HMAC-SHA256(pseudonym key, :data:`ERASURE_DOMAIN` + id) in hex: the register's name for a
    customer. Not a pseudonym (another domain); meaningless without the store's key."""
    return _refs(keys.pseudonym_key, [customer_id])[0]


def _participation_hashes(pseudonyms: Iterable[str]) -> list[str]:
    base = hashlib.sha256(_PARTICIPATION_DOMAIN)
    out = []
    for p in pseudonyms:
        h = base.copy()
        h.update(str(p).encode("utf-8"))
        out.append(h.hexdigest()[:_PARTICIPATION_HEX])
    return out


# -- append-only JSON lines -------------------------------------------------------------------
@contextmanager
def _locked(lock_path: Path, *, exclusive: bool) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (caller holds the exclusive lock)."""
    new = not path.exists()
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:  # make the new directory entry durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_lines(path: Path, what: str) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file as a dict; [] when the file does not exist.

    Raises :class:`PrivacyError` on anything unreadable (fail closed).
    """
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrivacyError(f"{path}: cannot read the {what} ({exc})") from exc
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or record.get("version") != _VERSION:
            raise PrivacyError(
                f"{path}: line {number} is not a valid {what} record; refusing to continue "
                "(a damaged register is never read as empty): restore the file from backup"
            )
        records.append(record)
    if text and not text.endswith("\n"):
        raise PrivacyError(
            f"{path}: the last line of the {what} is incomplete (an interrupted write?); "
            "restore the file from backup"
        )
    return records


def _check_register(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for number, r in enumerate(records, start=1):
        ok = (
            isinstance(r.get("customer_ref"), str)
            and _REF.fullmatch(r["customer_ref"]) is not None
            and isinstance(r.get("request_id"), str)
            and _REQUEST_ID.fullmatch(r["request_id"]) is not None
            and isinstance(r.get("key_id"), str)
            and isinstance(r.get("requested_at"), str)
            and isinstance(r.get("affected_runs", []), list)
        )
        if not ok:
            raise PrivacyError(
                f"{path}: record {number} lacks a valid customer ref, request id, key id or "
                "time; refusing to continue: restore the file from backup"
            )
    return records


def _register_records(layout: StoreLayout) -> list[dict[str, Any]]:
    path = layout.private_dir / ERASURE_REGISTER_NAME
    if not path.exists():
        return []
    with _locked(layout.private_dir / _REGISTER_LOCK, exclusive=False):
        return _check_register(path, _read_lines(path, "erasure register"))


# -- the register ------------------------------------------------------------------------------
def erased_refs(layout: StoreLayout) -> frozenset[str]:
    """The refs of every erased customer of the store (empty when nothing was erased).

    Raises :class:`PrivacyError` when the register cannot be read (fail closed).
    """
    return frozenset(r["customer_ref"] for r in _register_records(layout))


def list_requests(layout: StoreLayout) -> list[ErasureRequest]:
    """Every recorded request, oldest first."""
    return [
        ErasureRequest(
            request_id=r["request_id"],
            customer_ref=r["customer_ref"],
            requested_at=r["requested_at"],
            reason=r.get("reason"),
            affected_runs=tuple(dict(a) for a in r.get("affected_runs", [])),
            repeat=bool(r.get("repeat", False)),
        )
        for r in _register_records(layout)
    ]


def _check_reason(reason: str | None, customer_id: str, row: pd.Series | None) -> str | None:
    if reason is None:
        return None
    text = " ".join(str(reason).split())
    if not text:
        return None
    if len(text) > MAX_REASON_CHARS:
        raise ConfigError(
            f"the reason is {len(text)} characters long; at most {MAX_REASON_CHARS} are kept"
        )
    folded = text.casefold()
    # The id as a whole token (a short id such as "7" must not match "Art. 17").
    token = re.compile(rf"(?<![0-9a-z]){re.escape(customer_id.casefold())}(?![0-9a-z])")
    found = token.search(folded) is not None
    if row is not None and not found:
        for column in _IDENTIFYING:
            value = row.get(column)
            if value is None or pd.isna(value):
                continue
            value = " ".join(str(value).split()).casefold()
            if len(value) >= 2 and value in folded:
                found = True
                break
    if found:
        raise ConfigError(
            "the reason contains the customer's id or contact data; the register must not hold "
            "them: describe the request without identifying the customer"
        )
    return text


def record_erasure(
    layout: StoreLayout,
    customer_id: str,
    reason: str | None = None,
    *,
    store: StoreData | None = None,
) -> ErasureRequest:
    """Record that ``customer_id`` asked to be erased; from now on the boundary drops them.

    ``store`` is the store's data when already loaded from ``layout.root``. The customer must
    be in the customers table (else :class:`DataError`, which never echoes the id). A second
    request for the same customer is recorded again with ``repeat`` set. The request lists
    the (run, task) pairs whose data included the customer (:func:`runs_including`), and the
    customer's rows are removed from the persisted pseudonym map (nothing local re-identifies
    their pseudonym any more). Raises :class:`ConfigError` for a reason that is too long or
    that identifies the customer, :class:`PrivacyError` when the register or the participation
    log cannot be read (nothing is recorded then).
    """
    customer_id = str(customer_id).strip()
    if store is None:
        store = load_store(layout.root)
    ids = store.customers["customer_id"].astype("str")
    match = (ids == customer_id).to_numpy()
    if not customer_id or not match.any():
        raise DataError(f"no such customer in {store.store_id}")
    row = store.customers.loc[match].iloc[0]
    text = _check_reason(reason, customer_id, row)

    keys = StoreKeys.load_or_create(layout)
    ref = customer_ref(keys, customer_id)
    _private_dirs(layout)
    affected = runs_including(layout, customer_id, keys=keys)
    with _locked(layout.private_dir / _REGISTER_LOCK, exclusive=True):
        path = layout.private_dir / ERASURE_REGISTER_NAME
        existing = _check_register(path, _read_lines(path, "erasure register"))
        mismatched = [r for r in existing if r.get("key_id") != keys.pseudonym_key_id]
        if mismatched:
            raise PrivacyError(
                f"{path}: {len(mismatched)} request(s) were recorded under another pseudonym "
                "key; restore the store's key before recording more (nothing recorded)"
            )
        request = ErasureRequest(
            request_id="erase-" + secrets.token_hex(6),
            customer_ref=ref,
            requested_at=_utc_now(),
            reason=text,
            affected_runs=tuple(affected),
            repeat=any(r.get("customer_ref") == ref for r in existing),
        )
        record = {"version": _VERSION, "key_id": keys.pseudonym_key_id, **request.to_dict()}
        _append_line(path, record)
    _forget_pseudonyms(layout, customer_id)
    logger.info(
        "recorded erasure request %s (%d affected run(s)%s)",
        request.request_id,
        len(affected),
        ", repeat" if request.repeat else "",
    )
    return request


def _forget_pseudonyms(layout: StoreLayout, customer_id: str) -> None:
    if not layout.pseudonym_map_path.is_file():
        return
    frame = load_pseudonym_map(layout).frame
    keep = frame["customer_id"].astype("str") != customer_id
    if not keep.all():
        write_pseudonym_map(layout, frame.loc[keep].reset_index(drop=True))


def exclude_erased(
    store: StoreData, layout: StoreLayout, *, keys: StoreKeys | None = None
) -> tuple[StoreData, int]:
    """``store`` without any row of an erased customer, and how many customers were dropped.

    Every table (customers, transactions, interactions, consents) loses the rows of erased
    customers. ``keys`` defaults to the store's keys. Raises :class:`PrivacyError` when the
    register cannot be read or was made under another pseudonym key (fail closed).
    """
    records = _register_records(layout)
    if not records:
        return store, 0
    if keys is None:
        keys = _existing_keys(layout, "the erasure register")
    wrong = {r["key_id"] for r in records} - {keys.pseudonym_key_id}
    if wrong:
        raise PrivacyError(
            f"{layout.private_dir / ERASURE_REGISTER_NAME}: requests were recorded under "
            f"pseudonym key(s) {', '.join(sorted(wrong))}, not the store's key "
            f"{keys.pseudonym_key_id}; erased customers cannot be recognised: restore the key"
        )
    refs = {r["customer_ref"] for r in records}
    frames = store.tables()
    seen = [f["customer_id"].dropna().astype("str") for f in frames.values() if "customer_id" in f]
    ids: list[str] = list(pd.concat(seen, ignore_index=True).unique()) if seen else []
    refs_of_ids = _refs(keys.pseudonym_key, ids)
    erased = pd.Index([i for i, r in zip(ids, refs_of_ids, strict=True) if r in refs])
    if len(erased) == 0:
        return store, 0

    def drop(frame: pd.DataFrame) -> pd.DataFrame:
        if "customer_id" not in frame.columns:
            return frame
        return frame.loc[~text_isin(frame["customer_id"], erased)]

    out = replace(
        store,
        customers=drop(store.customers),
        transactions=drop(store.transactions),
        interactions=drop(store.interactions),
        consents=drop(store.consents),
    )
    logger.info("store %s: %d erased customer(s) excluded", store.store_id, len(erased))
    return out, len(erased)


# -- participation -----------------------------------------------------------------------------
def record_participation(
    layout: StoreLayout, run_id: str, task: str, pseudonyms: Iterable[str]
) -> None:
    """Record that run ``run_id`` used, for ``task``, the data of the customers ``pseudonyms``.

    One line per call, holding a truncated domain-separated SHA-256 of each pseudonym (never
    the pseudonyms), their count and the time. Several calls for one (run, task) are read as
    the union of their sets.
    """
    run_id, task = str(run_id).strip(), str(task).strip()
    if not run_id or not task:
        raise ConfigError("record_participation needs a run id and a task")
    members = sorted(set(_participation_hashes(pseudonyms)))
    _private_dirs(layout)
    record = {
        "version": _VERSION,
        "run_id": run_id,
        "task": task,
        "recorded_at": _utc_now(),
        "customers": len(members),
        "members": members,
    }
    with _locked(layout.private_dir / _PARTICIPATION_LOCK, exclusive=True):
        _append_line(layout.private_dir / PARTICIPATION_LOG_NAME, record)


def _participation(layout: StoreLayout) -> list[dict[str, Any]]:
    """Recorded (run, task) pairs in order of first record: run_id, task, recorded_at, members."""
    path = layout.private_dir / PARTICIPATION_LOG_NAME
    if not path.exists():
        return []
    with _locked(layout.private_dir / _PARTICIPATION_LOCK, exclusive=False):
        records = _read_lines(path, "participation log")
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for number, r in enumerate(records, start=1):
        if not (
            isinstance(r.get("run_id"), str)
            and isinstance(r.get("task"), str)
            and isinstance(r.get("members"), list)
        ):
            raise PrivacyError(
                f"{path}: record {number} lacks a run id, task or member list; restore the file"
            )
        key = (r["run_id"], r["task"])
        if key not in runs:
            runs[key] = {
                "run_id": key[0],
                "task": key[1],
                "recorded_at": r.get("recorded_at"),
                "members": set(),
            }
        runs[key]["members"].update(r["members"])
    return list(runs.values())


def _pseudonyms_of(layout: StoreLayout, customer_id: str, keys: StoreKeys | None) -> set[str]:
    found: set[str] = set()
    if keys is None and (layout.keys_dir / PSEUDONYM_KEY_NAME).is_file():
        keys = StoreKeys.load_or_create(layout)
    if keys is not None:
        found.update(keyed_pseudonyms(keys.pseudonym_key, STORE_DOMAIN, [customer_id]))
    if layout.pseudonym_map_path.is_file():  # e.g. linkage pseudonyms (keyed on mobile/email)
        frame = load_pseudonym_map(layout).frame
        found.update(frame.loc[frame["customer_id"] == customer_id, "pseudonym"].astype("str"))
    return found


def runs_including(
    layout: StoreLayout, customer_id: str, *, keys: StoreKeys | None = None
) -> list[dict[str, Any]]:
    """The recorded (run, task) pairs whose data included ``customer_id``, oldest first.

    Each item is ``{"run_id", "task", "recorded_at"}``. The customer's pseudonyms are the
    store-key pseudonym recomputed from the id plus any pseudonym the persisted map gives the
    id (linkage pseudonyms). Raises :class:`PrivacyError` when the log cannot be read.
    """
    runs = _participation(layout)
    if not runs:
        return []
    wanted = set(_participation_hashes(_pseudonyms_of(layout, str(customer_id).strip(), keys)))
    return [
        {"run_id": r["run_id"], "task": r["task"], "recorded_at": r["recorded_at"]}
        for r in runs
        if wanted & r["members"]
    ]


def remedy_commands(
    affected: Sequence[dict[str, Any]],
    *,
    store_dir: Path,
    config: Path | None = None,
    out: Path | None = None,
) -> list[str]:
    """What to do about the models trained on an erased customer's data, as lines of text.

    For every task of ``affected``: the last recorded run of that task whose data did not
    include the customer, if any (its model is the last version trained without them). Then
    the command that retrains from scratch; the boundary now excludes the customer, so the new
    model never sees their data. Warm-starting from an earlier checkpoint is not implemented.
    """
    if not affected:
        return [
            "No recorded run used this customer's data: no model to retrain. (Runs from before "
            "participation was recorded are not listed.)"
        ]
    layout = StoreLayout(Path(store_dir))
    hit = {(str(a["run_id"]), str(a["task"])) for a in affected}
    runs = _participation(layout)
    lines = []
    tasks = list(dict.fromkeys(str(a["task"]) for a in affected))
    models = [t for t in tasks if t != "analytics"]
    for task in models:
        clean = [r for r in runs if r["task"] == task and (r["run_id"], task) not in hit]
        if clean:
            last = clean[-1]
            lines.append(
                f"{task}: run {last['run_id']} (recorded {last['recorded_at']}) is the last "
                "model version trained without the customer; use it until the retrained model "
                "replaces it. Warm-starting a retrain from it is not implemented yet: retrain "
                "from scratch."
            )
        else:
            lines.append(f"{task}: no recorded run of this task was trained without the customer.")
    if models:
        command = ["fedcrm", "train", "--data", str(Path(store_dir).parent)]
        command += ["--out", str(out) if out is not None else "NEW_RUN_DIR"]
        if config is not None:
            command += ["--config", str(config)]
        lines.append(
            "Retrain from scratch (the customer is now excluded at this store; this spends "
            "privacy budget again at every store): " + shlex.join(command)
        )
    if "analytics" in tasks:
        lines.append(
            "analytics: released aggregates cannot be recalled; they are differentially private, "
            "so the customer's contribution to them is bounded by the ε spent."
        )
    return lines
