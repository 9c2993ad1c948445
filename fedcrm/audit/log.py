"""An append-only, hash-chained, signed audit log kept by one writer.

A log is one file of JSON lines, ``DIR/audit.jsonl`` — a store keeps its log in
``STORE/.fedcrm/`` (never leaves the store), the coordinator in the run directory. Each line
is one :class:`AuditEntry`::

    {"format": "fedcrm-audit/1", "seq": 0, "time": "2026-01-05T10:00:00.000000+00:00",
     "writer": "store-s01", "key_id": "9f2c…", "kind": "run_start", "payload": {…},
     "prev": "000…0", "hash": "<64 hex>", "signature": "<base64>"}

``hash`` is the SHA-256 of the canonical JSON (:func:`canonical_json`) of the eight fields
before it; ``prev`` is the previous entry's ``hash`` (64 zeros for ``seq`` 0); ``signature``
is the Ed25519 signature of the 32 hash bytes by the writer's :class:`~fedcrm.audit.keys.AuditKey`.
Changing, removing, inserting or reordering an entry breaks the chain or a signature; cutting
entries off the end is caught against a reference to the log's head held by another party
(the coordinator records each store's head as a ``store_head`` entry; see
:mod:`fedcrm.audit.verify`).

:meth:`AuditLog.append` takes an exclusive ``fcntl.flock`` on ``DIR/audit.lock``, reads the
current head (refusing to extend a log whose last entry does not verify: fail closed), appends
one line with a single ``write`` and fsyncs it. Several processes and threads may append to one
log; each gets the next ``seq``.

**No personal data in a payload.** Callers pass counts, rates, ε/δ and other parameters,
hashes (:func:`digest`), ids of runs and model versions, policy and column names and
pseudonymous store ids — never a customer id, a pseudonym, a name or any value of a customer
record. :func:`check_payload` enforces the shape (JSON values, no bytes, finite numbers, short
strings), not the meaning: the rule above is the caller's duty.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcrm.audit.keys import AuditKey, check_writer, load_public_key, public_key_id
from fedcrm.data.atomic import atomic_file
from fedcrm.errors import ConfigError, PrivacyError

__all__ = [
    "AUDIT_LOCK_NAME",
    "AUDIT_LOG_NAME",
    "AUDIT_PUBLIC_KEY_NAME",
    "FORMAT",
    "GENESIS",
    "KINDS",
    "MAX_ENTRY_BYTES",
    "MAX_TEXT",
    "STORE_HEAD",
    "AuditEntry",
    "AuditHead",
    "AuditLog",
    "canonical_json",
    "check_kind",
    "check_payload",
    "digest",
    "parse_line",
]

AUDIT_LOG_NAME = "audit.jsonl"
AUDIT_LOCK_NAME = "audit.lock"
#: A copy of the writer's public key, next to its log, so the log can be verified anywhere.
AUDIT_PUBLIC_KEY_NAME = "audit.pub"
FORMAT = "fedcrm-audit/1"
GENESIS = "0" * 64
#: Longest string (value or key) a payload may hold.
MAX_TEXT = 200
#: Longest line (entry) a log may hold, in bytes.
MAX_ENTRY_BYTES = 64 * 1024
_MAX_DEPTH = 16
STORE_HEAD = "store_head"

#: The event vocabulary (other kinds matching ``[a-z][a-z0-9_]{0,63}`` are accepted too).
KINDS: dict[str, str] = {
    "run_start": "a run begins: run id, purpose(s), software version",
    "run_end": "a run ends: run id, status (completed / failed / refused)",
    "config": "the run configuration's hash (digest) and the settings that matter to privacy",
    "consent_filter": "consent counts per purpose: included, excluded by reason",
    "deidentification": "policy hash and the action per column (drop/pseudonymise/...)",
    "dp_round": "DP parameters of a round and ε spent in the round and cumulatively",
    "guard_decision": "an egress guard's decision (allowed/refused) and its reason code",
    "analytics_release": "a query released: ε spent, k, noise scale, suppressed cell count",
    "refusal": "a request refused (budget, consent, policy): requested/remaining numbers",
    "model_version": "a model version produced or used: id, hash, training run",
    "erasure_request": "an erasure or revocation request: request id, counts, action taken",
    STORE_HEAD: "another log's head (store, writer, seq, hash, key_id) as seen by this writer",
}

_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_BODY_FIELDS = ("format", "seq", "time", "writer", "key_id", "kind", "payload", "prev")
_FIELDS = (*_BODY_FIELDS, "hash", "signature")


# -- canonical JSON, digests and payload checks ------------------------------------------
def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys, no spaces, no ASCII escaping and no NaN/Infinity.

    Raises :class:`ConfigError` when ``obj`` is not JSON (bytes, NaN, a set, an object …).
    """
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"not canonical JSON: {_type_only(exc)}") from None
    return text.encode("utf-8")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s canonical JSON, e.g. a configuration's hash for the log."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def _type_only(exc: Exception) -> str:
    # json's messages name the offending type ("Object of type bytes …") or NaN; never a value.
    text = str(exc)
    match = re.search(r"Object of type (\w+)", text)
    if match:
        return f"values of type {match.group(1)} are not JSON"
    if "Out of range float" in text:
        return "NaN and infinite numbers are not JSON"
    return type(exc).__name__


def check_kind(kind: str) -> str:
    """``kind`` if it is a valid event kind (``[a-z][a-z0-9_]{0,63}``), else ConfigError."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ConfigError(
            f"invalid audit event kind {str(kind)[:40]!r}: use lower-case letters, digits and "
            "'_' (e.g. 'dp_round')"
        )
    return kind


def check_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-JSON copy of ``payload``, or :class:`ConfigError` naming the offending key.

    Allowed: a mapping with string keys whose values are None, bool, int, finite float,
    strings of at most :data:`MAX_TEXT` characters, and lists/tuples/mappings of those (nested
    at most 16 deep). Refused: bytes, NaN/±inf, longer strings or keys, any other type (convert
    numpy numbers with ``int()``/``float()``). Error messages name keys, never values.

    The check guards the log's shape; keeping personal data out is the caller's duty: pass
    counts, parameters, hashes, run/model ids and pseudonymous store ids only.
    """
    if not isinstance(payload, Mapping):
        raise ConfigError(
            f"an audit payload must be a mapping of field names to values "
            f"(got {type(payload).__name__})"
        )
    result = _plain(payload, "payload", 0)
    if len(canonical_json(result)) > MAX_ENTRY_BYTES - 1024:
        raise ConfigError(
            f"the audit payload is too large (over {MAX_ENTRY_BYTES - 1024} bytes as JSON); "
            "record counts and hashes, not tables"
        )
    return result


def _plain(value: Any, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: NaN and infinite numbers cannot be recorded")
        return float(value)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ConfigError(
                f"{where}: a string of {len(value)} characters (at most {MAX_TEXT}); record a "
                "digest() or a count instead"
            )
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raise ConfigError(f"{where}: bytes cannot be recorded; record a digest (hex) instead")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: keys must be strings (got {type(key).__name__})")
            if not key or len(key) > MAX_TEXT:
                raise ConfigError(
                    f"{where}: a key of {len(key)} characters (1 to {MAX_TEXT} allowed)"
                )
            out[key] = _plain(item, f"{where}[{key!r}]", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ConfigError(
        f"{where}: values of type {type(value).__name__} cannot be recorded; use JSON values "
        "(convert numpy numbers with int() or float())"
    )


# -- entries and heads ---------------------------------------------------------------------
@dataclass(frozen=True)
class AuditHead:
    """Where a log ends: its writer, last ``seq`` and that entry's ``hash`` (and key id).

    An empty log's head has ``seq = -1`` and ``hash = GENESIS``. A head recorded in another
    party's log (:data:`STORE_HEAD`) lets a verifier detect later truncation or rewriting.
    """

    writer: str
    seq: int
    hash: str
    key_id: str | None = None

    def as_payload(self, store: str) -> dict[str, Any]:
        """The ``store_head`` payload that references this head."""
        payload: dict[str, Any] = {
            "store": store,
            "writer": self.writer,
            "seq": self.seq,
            "hash": self.hash,
        }
        if self.key_id is not None:
            payload["key_id"] = self.key_id
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> AuditHead:
        """The head a ``store_head`` payload references; ConfigError when malformed."""
        writer, seq, hash_, key_id = (payload.get(k) for k in ("writer", "seq", "hash", "key_id"))
        if not isinstance(payload.get("store"), str) or not payload["store"]:
            raise ConfigError("a store_head reference needs a 'store' label")
        check_writer(writer)  # type: ignore[arg-type]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < -1:
            raise ConfigError("a store_head reference needs an integer 'seq' >= -1")
        if not isinstance(hash_, str) or not _HEX64.fullmatch(hash_):
            raise ConfigError("a store_head reference needs a 64-hex-digit 'hash'")
        if key_id is not None and (not isinstance(key_id, str) or not _HEX16.fullmatch(key_id)):
            raise ConfigError("a store_head reference's 'key_id' must be 16 hex digits")
        return cls(writer, seq, hash_, key_id)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AuditEntry:
    """One line of an audit log (see the module docstring for the fields)."""

    format: str
    seq: int
    time: str
    writer: str
    key_id: str
    kind: str
    payload: dict[str, Any]
    prev: str
    hash: str
    signature: str

    def body(self) -> dict[str, Any]:
        """The hashed fields."""
        return {name: getattr(self, name) for name in _BODY_FIELDS}

    def compute_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`body`."""
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``signature`` is ``public_key``'s signature of the (stated) hash bytes."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
            public_key.verify(signature, bytes.fromhex(self.hash))
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def to_line(self) -> str:
        """The entry as one canonical JSON line (without the newline)."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.writer, self.seq, self.hash, self.key_id)

    @classmethod
    def from_dict(cls, data: Any) -> AuditEntry:
        """An entry from a parsed line; ValueError saying which field is wrong (no values)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        missing = [f for f in _FIELDS if f not in data]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        extra = sorted(set(data) - set(_FIELDS))
        if extra:
            raise ValueError(f"unexpected field(s) {', '.join(extra[:5])}")
        if data["format"] != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        seq = data["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("seq is not an integer >= 0")
        if not isinstance(data["time"], str) or not _is_utc_time(data["time"]):
            raise ValueError("time is not an ISO 8601 UTC timestamp")
        if not isinstance(data["writer"], str) or not _valid_writer(data["writer"]):
            raise ValueError("writer is not a valid writer name")
        if not isinstance(data["key_id"], str) or not _HEX16.fullmatch(data["key_id"]):
            raise ValueError("key_id is not 16 hex digits")
        if not isinstance(data["kind"], str) or not _KIND.fullmatch(data["kind"]):
            raise ValueError("kind is not a valid event kind")
        if not isinstance(data["payload"], dict):
            raise ValueError("payload is not a JSON object")
        for name in ("prev", "hash"):
            if not isinstance(data[name], str) or not _HEX64.fullmatch(data[name]):
                raise ValueError(f"{name} is not 64 lower-case hex digits")
        if not isinstance(data["signature"], str):
            raise ValueError("signature is not a string")
        try:
            if len(base64.b64decode(data["signature"], validate=True)) != 64:
                raise ValueError
        except (ValueError, binascii.Error):
            raise ValueError("signature is not 64 bytes of base64") from None
        return cls(**{name: data[name] for name in _FIELDS})


def _valid_writer(writer: str) -> bool:
    try:
        check_writer(writer)
    except ConfigError:
        return False
    return True


def _is_utc_time(text: str) -> bool:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return False
    return when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("a key appears twice in one object")
        out[key] = value
    return out


def parse_line(line: bytes | str) -> AuditEntry:
    """An entry from one log line; ValueError describing the problem (never the content)."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_refuse_constant,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return AuditEntry.from_dict(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# -- the log ---------------------------------------------------------------------------------
@contextmanager
def _locked(lock_path: Path, *, exclusive: bool) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class AuditLog:
    """One writer's audit log at ``DIR/audit.jsonl``; obtain one with :meth:`open`."""

    def __init__(self, path: Path, key: AuditKey) -> None:
        self._path = Path(path)
        self._dir = self._path.parent
        self._lock_path = self._dir / AUDIT_LOCK_NAME
        self._key = key

    @classmethod
    def open(cls, directory: Path, writer: str, key: AuditKey | None = None) -> AuditLog:
        """The log in ``directory`` (created, mode 0700, if missing) written by ``writer``.

        ``key`` defaults to ``AuditKey.load_or_create(directory / "keys", writer)`` — right
        for a store (``directory = STORE/.fedcrm``, so the key sits beside the pseudonym key
        in ``STORE/.fedcrm/keys/``). The coordinator passes its own key, loaded from a key
        directory outside the run directory. The public key is copied to
        ``directory/audit.pub`` for verifiers.

        Raises :class:`PrivacyError` when the existing log or ``audit.pub`` belongs to another
        writer or key, or its last entry does not verify (fail closed: nothing is appended to
        a log that may have been tampered with); :class:`ConfigError` for a bad writer name.
        """
        directory = Path(directory)
        check_writer(writer)
        if key is not None and key.writer != writer:
            raise ConfigError(f"the audit key belongs to writer {key.writer!r}, not {writer!r}")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing one keeps its mode
        if key is None:
            key = AuditKey.load_or_create(directory / "keys", writer)
        log = cls(directory / AUDIT_LOG_NAME, key)
        with _locked(log._lock_path, exclusive=True):
            log._publish_public_key()
            log._tail()
        return log

    # -- properties ------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def writer(self) -> str:
        return self._key.writer

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def public_key_path(self) -> Path:
        return self._dir / AUDIT_PUBLIC_KEY_NAME

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, writer={self.writer!r}, key_id=<{self.key_id}>)"

    # -- writing -----------------------------------------------------------------------------
    def append(self, kind: str, payload: Mapping[str, Any]) -> AuditEntry:
        """Append one signed event and return it (fsync'd before returning).

        Raises :class:`ConfigError` for an invalid kind or payload (see :func:`check_payload`)
        and :class:`PrivacyError` when the log's last entry does not verify.
        """
        kind = check_kind(kind)
        body_payload = check_payload(payload)
        if kind == STORE_HEAD:
            AuditHead.from_payload(body_payload)
        with _locked(self._lock_path, exclusive=True):
            last = self._tail()
            unsigned = AuditEntry(
                format=FORMAT,
                seq=0 if last is None else last.seq + 1,
                time=_utc_now(),
                writer=self.writer,
                key_id=self.key_id,
                kind=kind,
                payload=body_payload,
                prev=GENESIS if last is None else last.hash,
                hash="",
                signature="",
            )
            hash_ = unsigned.compute_hash()
            signature = base64.b64encode(self._key.sign(bytes.fromhex(hash_))).decode("ascii")
            entry = replace(unsigned, hash=hash_, signature=signature)
            data = (entry.to_line() + "\n").encode("utf-8")
            if len(data) > MAX_ENTRY_BYTES:
                raise ConfigError(
                    f"the audit entry is too large ({len(data)} bytes; at most "
                    f"{MAX_ENTRY_BYTES}); record counts and hashes, not tables"
                )
            self._write(data)
        return entry

    def append_store_head(self, store: str, head: AuditHead) -> AuditEntry:
        """Record another log's head (a ``store_head`` entry) so it cannot be cut later."""
        return self.append(STORE_HEAD, head.as_payload(store))

    def _write(self, data: bytes) -> None:
        created = not self._path.exists()
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            dir_fd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _publish_public_key(self) -> None:
        path = self.public_key_path
        if path.exists():
            found = public_key_id(load_public_key(path))
            if found != self.key_id:
                raise PrivacyError(
                    f"{path}: the audit log in {self._dir} is kept with key {found}, but "
                    f"writer {self.writer!r} now holds key {self.key_id}; a log cannot change "
                    "keys — restore the writer's original key from backup"
                )
            return
        with atomic_file(path, mode=0o644) as tmp:
            tmp.write_text(self._key.public_pem(), encoding="ascii")

    # -- reading -----------------------------------------------------------------------------
    def head(self) -> AuditHead:
        """The last entry's ``(writer, seq, hash, key_id)``; ``seq = -1`` for an empty log."""
        with _locked(self._lock_path, exclusive=False):
            last = self._tail()
        if last is None:
            return AuditHead(self.writer, -1, GENESIS, self.key_id)
        return last.head

    def entries(self) -> list[AuditEntry]:
        """Every entry, oldest first. Parses each line (PrivacyError naming the line when one
        is malformed) but checks neither chain nor signatures: use
        :func:`fedcrm.audit.verify.verify_log` for that."""
        with _locked(self._lock_path, exclusive=False):
            try:
                raw = self._path.read_bytes()
            except FileNotFoundError:
                return []
        if raw and not raw.endswith(b"\n"):
            raise PrivacyError(f"{self._path}: the last line is incomplete")
        entries = []
        for number, line in enumerate(raw.split(b"\n")[:-1], start=1):
            try:
                entries.append(parse_line(line))
            except ValueError as exc:
                raise PrivacyError(f"{self._path}:{number}: not an audit entry ({exc})") from None
        return entries

    def _tail(self) -> AuditEntry | None:
        """The last entry, verified against this writer's key; None for an empty log."""
        try:
            with open(self._path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                start = max(0, size - 2 * MAX_ENTRY_BYTES)
                fh.seek(start)
                data = fh.read()
        except FileNotFoundError:
            return None
        if not data:
            return None
        refuse = (
            f"{self._path}: refusing to append to this audit log: its last entry "
            "{problem}; run `fedcrm audit verify {path}` and restore the log from backup"
        )
        if not data.endswith(b"\n"):
            raise PrivacyError(
                refuse.format(problem="is incomplete (no line end)", path=self._path)
            )
        lines = data[:-1].split(b"\n")
        if start > 0 and len(lines) < 2:
            raise PrivacyError(refuse.format(problem="is too long", path=self._path))
        try:
            last = parse_line(lines[-1])
        except ValueError as exc:
            raise PrivacyError(
                refuse.format(problem=f"is malformed ({exc})", path=self._path)
            ) from None
        problem = None
        if last.writer != self.writer:
            problem = f"was written by {last.writer!r}, not {self.writer!r}"
        elif last.key_id != self.key_id:
            problem = f"was signed with key {last.key_id}, not this writer's key {self.key_id}"
        elif last.compute_hash() != last.hash:
            problem = "does not match its hash"
        elif not last.signature_valid(self._key.public_key):
            problem = "has an invalid signature"
        if problem is not None:
            raise PrivacyError(refuse.format(problem=problem, path=self._path))
        return last
