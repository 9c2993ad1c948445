"""Verify audit logs: chains, signatures, and the heads other logs recorded.

:func:`verify_log` checks one ``audit.jsonl``; :func:`verify_tree` checks every log under a
directory (a run directory, a chain directory whose stores keep ``STORE/.fedcrm/audit.jsonl``,
or both) and then cross-checks every ``store_head`` reference against the referenced log.

For one log, line by line, the first problem is reported and checking stops (later problems
usually follow from it):

- the line is a JSON object with exactly the entry fields (a garbled or cut line is named);
- ``hash`` is the SHA-256 of the canonical JSON of the other fields (else: modified);
- ``key_id`` is the id of the writer's public key, and ``signature`` verifies with it (else:
  forged, or altered and re-hashed by someone without the key);
- ``writer`` is the same on every line;
- ``seq`` counts 0, 1, 2, … — a jump is a deletion, unless the missing entry turns up later
  (reordering); a repeated ``seq`` is an insertion;
- ``prev`` is the hash of the entry before (else: spliced from another copy).

The writer's public key is the one given, else ``DIR/audit.pub`` next to the log, else
``DIR/keys/audit-<writer>.pub``. A log checks out against a key found next to it only if the
key was not replaced together with the whole log: pin keys (``trusted_keys``) or rely on the
references other parties hold (``store_head`` entries record the referenced log's key id).

Cutting entries off the end of a log leaves a valid shorter log; only a head recorded
elsewhere reveals it (``expected_head``, or the coordinator's ``store_head`` entries).
Findings name files, lines, sequence numbers, kinds, hashes and key ids, never payload values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcrm.audit.keys import load_public_key, public_key_id, public_key_path
from fedcrm.audit.log import (
    AUDIT_LOG_NAME,
    AUDIT_PUBLIC_KEY_NAME,
    GENESIS,
    STORE_HEAD,
    AuditEntry,
    AuditHead,
    parse_line,
)
from fedcrm.errors import ConfigError, PrivacyError

__all__ = ["Finding", "VerificationReport", "find_logs", "verify_log", "verify_tree"]


@dataclass(frozen=True)
class Finding:
    """One problem: the log file, the entry's ``seq`` and 1-based ``line`` when known."""

    path: Path
    seq: int | None
    line: int | None
    problem: str

    def describe(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"{where}{seq}: {self.problem}"


@dataclass(frozen=True)
class VerificationReport:
    """``ok`` when no log has a finding. ``logs`` has one dict per log: ``path``, ``writer``,
    ``key_id``, ``entries`` (lines), ``verified`` (entries checked before the first problem),
    ``head_seq`` and ``head_hash`` (of the last verified entry; -1 / None when none), ``ok``.
    ``findings`` lists problems, per log in file order, then cross-log ones."""

    ok: bool
    logs: list[dict[str, Any]]
    findings: list[Finding]

    def first_finding(self, path: Path) -> Finding | None:
        return next((f for f in self.findings if f.path == Path(path)), None)


@dataclass
class _Line:
    number: int
    entry: AuditEntry | None
    error: str | None = None
    hash_ok: bool = False
    signed: bool = False  # hash matches and the signature verifies with the log's key


@dataclass
class _Log:
    path: Path
    writer: str | None = None
    key_id: str | None = None  # of the public key used (else of the entries)
    lines: list[_Line] = field(default_factory=list)
    verified: list[_Line] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    signed_by_seq: dict[int, list[_Line]] = field(default_factory=lambda: defaultdict(list))

    def add(self, seq: int | None, line: int | None, problem: str) -> None:
        self.findings.append(Finding(self.path, seq, line, problem))

    @property
    def max_signed_seq(self) -> int:
        return max(self.signed_by_seq, default=-1)


# -- one log ---------------------------------------------------------------------------------
def verify_log(
    path: Path,
    public_key: Ed25519PublicKey | None = None,
    *,
    expected_head: AuditHead | None = None,
) -> VerificationReport:
    """Check one log's lines, chain and signatures, and that it still holds ``expected_head``.

    ``public_key`` defaults to ``audit.pub`` next to the log (then ``keys/audit-<writer>.pub``).
    ``expected_head`` — a head recorded earlier, e.g. by the coordinator — reveals truncation
    (the log ends before ``expected_head.seq``) and rewriting (another hash at that seq).
    """
    log = _check_log(Path(path), public_key)
    if expected_head is not None:
        if log.writer is not None and expected_head.writer != log.writer:
            log.add(
                None,
                None,
                f"the log's writer is {log.writer!r}, but the expected head is of writer "
                f"{expected_head.writer!r}",
            )
        else:
            problem = _match(log, expected_head, "the expected head")
            if problem is not None:
                log.findings.append(problem)
    return _report([log], [])


def _check_log(
    path: Path,
    public_key: Ed25519PublicKey | None,
    trusted: set[str] | None = None,
) -> _Log:
    log = _Log(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        log.add(None, None, "no such audit log")
        return log
    except OSError as exc:
        log.add(None, None, f"cannot read the audit log ({exc.strerror})")
        return log
    if not raw:
        key = public_key or _find_public_key(log, path, None)
        if key is not None:
            log.key_id = public_key_id(key)
        return log

    parts = raw.split(b"\n")
    complete = raw.endswith(b"\n")
    if complete:
        parts = parts[:-1]
    for number, text in enumerate(parts, start=1):
        if not text.strip():
            log.lines.append(_Line(number, None, "empty line (the writer never writes one)"))
            continue
        try:
            log.lines.append(_Line(number, parse_line(text)))
        except ValueError as exc:
            log.lines.append(_Line(number, None, f"not an audit entry: {exc}"))
    if not complete:
        last = log.lines[-1]
        if last.error is None:
            last.error = "the last line has no line end (cut off or edited)"
        else:
            last.error = f"the last line is incomplete (a cut or torn write): {last.error}"

    first = next((ln.entry for ln in log.lines if ln.entry is not None), None)
    log.writer = first.writer if first is not None else None
    key = public_key or _find_public_key(log, path, log.writer)
    if key is not None:
        log.key_id = public_key_id(key)
        if trusted is not None and log.key_id not in trusted:
            log.add(
                None,
                None,
                f"the log's public key {log.key_id} is not among the trusted keys; it may "
                "have been replaced together with the log",
            )
    elif first is not None:
        log.key_id = first.key_id

    for ln in log.lines:
        entry = ln.entry
        if entry is None:
            continue
        ln.hash_ok = entry.compute_hash() == entry.hash
        ln.signed = (
            ln.hash_ok
            and key is not None
            and entry.key_id == log.key_id
            and entry.writer == log.writer
            and entry.signature_valid(key)
        )
        if ln.signed:
            log.signed_by_seq[entry.seq].append(ln)

    _walk(log, key)
    return log


def _find_public_key(log: _Log, path: Path, writer: str | None) -> Ed25519PublicKey | None:
    candidates = [path.parent / AUDIT_PUBLIC_KEY_NAME]
    if writer is not None:
        candidates.append(public_key_path(path.parent / "keys", writer))
    for candidate in candidates:
        if candidate.exists():
            try:
                return load_public_key(candidate)
            except PrivacyError as exc:
                log.add(None, None, f"{exc}; signatures cannot be checked")
                return None
    if writer is not None:
        looked = " or ".join(str(c) for c in candidates)
        log.add(
            None,
            None,
            f"no public key for writer {writer!r} (looked for {looked}); signatures cannot "
            "be checked — pass the writer's public key",
        )
    return None


def _walk(log: _Log, key: Ed25519PublicKey | None) -> None:
    """Check the lines in order; record the first problem and stop there."""
    expected, prev_hash, prev_line = 0, GENESIS, None
    seen: dict[int, _Line] = {}
    for index, ln in enumerate(log.lines):
        entry = ln.entry
        if entry is None:
            log.add(None, ln.number, ln.error or "not an audit entry")
            return
        seq, kind = entry.seq, entry.kind
        problem = None
        if entry.writer != log.writer:
            problem = (
                f"{kind} entry written by {entry.writer!r}, but the log's writer is "
                f"{log.writer!r}: an entry from another log was inserted"
            )
        elif not ln.hash_ok:
            problem = f"{kind} entry does not match its hash: the entry was modified"
        elif key is not None and entry.key_id != log.key_id:
            problem = (
                f"{kind} entry names key {entry.key_id}, but the writer's public key is "
                f"{log.key_id}: the key or the entry was replaced"
            )
        elif key is not None and not ln.signed:
            problem = (
                f"{kind} entry's signature does not verify with the writer's key "
                f"{log.key_id}: the entry was forged, or altered and re-hashed without the key"
            )
        elif seq > expected:
            later = [
                other.number
                for other in log.lines[index + 1 :]
                if other.entry is not None and other.entry.seq == expected and other.hash_ok
            ]
            if later:
                problem = (
                    f"entry seq {expected} is out of place (it is at line {later[0]}, after "
                    f"seq {seq}): entries were reordered"
                )
            else:
                missing = (
                    f"entry seq {expected} is"
                    if seq == expected + 1
                    else (f"entries seq {expected} to {seq - 1} are")
                )
                problem = f"{missing} missing before seq {seq}: entries were deleted"
            log.add(expected, ln.number, problem)
            return
        elif seq < expected:
            before = seen.get(seq)
            if before is not None and before.entry is not None:
                same = before.entry.hash == entry.hash
                problem = (
                    f"seq {seq} appears again (first at line {before.number}"
                    f"{', same entry' if same else ''}); expected seq {expected}: an entry was "
                    "inserted"
                )
            else:
                problem = f"seq {seq} where seq {expected} was expected: entries were reordered"
        elif entry.prev != prev_hash:
            where = "the genesis value" if prev_line is None else f"line {prev_line}"
            problem = (
                f"{kind} entry's prev does not link to the entry before ({where}): the chain "
                "is broken (entries spliced from another copy of the log)"
            )
        if problem is not None:
            log.add(seq, ln.number, problem)
            return
        seen[seq] = ln
        log.verified.append(ln)
        expected, prev_hash, prev_line = seq + 1, entry.hash, ln.number


def _match(log: _Log, head: AuditHead, source: str) -> Finding | None:
    """None when ``log`` holds ``head`` (a signed entry at its seq with its hash)."""
    if head.seq < 0:
        return None
    if head.key_id is not None and log.key_id is not None and head.key_id != log.key_id:
        return Finding(
            log.path,
            None,
            None,
            f"the log is kept with key {log.key_id}, but {source} recorded key {head.key_id}: "
            "the log (and its key) were replaced",
        )
    found = log.signed_by_seq.get(head.seq, [])
    if any(ln.entry is not None and ln.entry.hash == head.hash for ln in found):
        return None
    if found:
        ln = found[0]
        stated = ln.entry.hash if ln.entry is not None else "?"
        return Finding(
            log.path,
            head.seq,
            ln.number,
            f"entry seq {head.seq} has hash {stated[:16]}…, but {source} recorded "
            f"{head.hash[:16]}…: the log was rewritten after that point",
        )
    last = log.max_signed_seq
    if head.seq > last:
        ends = "holds no signed entry" if last < 0 else f"ends at seq {last}"
        return Finding(
            log.path,
            head.seq,
            None,
            f"the log {ends}, but {source} recorded its head at seq {head.seq}: entries were "
            "cut off the end (truncation)",
        )
    return Finding(
        log.path,
        head.seq,
        None,
        f"entry seq {head.seq}, recorded by {source}, is missing: it was deleted",
    )


# -- a tree of logs --------------------------------------------------------------------------
def find_logs(path: Path) -> list[Path]:
    """``path`` if it is a file, else every ``audit.jsonl`` under it (sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path}: no such file or directory")
    return sorted(p for p in path.rglob(AUDIT_LOG_NAME) if p.is_file())


def verify_tree(
    path: Path,
    extra_dirs: Sequence[Path] = (),
    *,
    trusted_keys: Iterable[Ed25519PublicKey] | None = None,
) -> VerificationReport:
    """Verify the log at ``path`` or every log under it, then the ``store_head`` references.

    Logs under ``extra_dirs`` (e.g. the chain directory, when ``path`` is a run directory)
    are verified too and are where references are looked up, by writer name. Every
    ``store_head`` entry in a verified part of a log must be found in the referenced log:
    same key id, a signed entry at the referenced seq with the referenced hash. A reference to
    a log that is not found is a finding. ``trusted_keys``, when given, are the only public
    keys logs may be kept with.

    Raises :class:`ConfigError` when ``path`` or an extra directory does not exist.
    """
    trusted = None if trusted_keys is None else {public_key_id(k) for k in trusted_keys}
    paths: list[Path] = []
    seen: set[Path] = set()
    for root in (Path(path), *map(Path, extra_dirs)):
        for found in find_logs(root):
            resolved = found.resolve()
            if resolved not in seen:
                seen.add(resolved)
                paths.append(found)
    if not paths:
        finding = Finding(Path(path), None, None, f"no audit log ({AUDIT_LOG_NAME}) found")
        return VerificationReport(False, [], [finding])
    logs = [_check_log(p, None, trusted) for p in paths]
    by_writer: dict[str, list[_Log]] = defaultdict(list)
    for log in logs:
        if log.writer is not None:
            by_writer[log.writer].append(log)

    cross: list[Finding] = []
    for log in logs:
        for ln in log.verified:
            entry = ln.entry
            if entry is None or entry.kind != STORE_HEAD:
                continue
            source = f"{log.path}:{ln.number} (seq {entry.seq})"
            try:
                head = AuditHead.from_payload(entry.payload)
            except ConfigError as exc:
                cross.append(Finding(log.path, entry.seq, ln.number, f"bad store_head: {exc}"))
                continue
            if head.seq < 0:
                continue
            candidates = by_writer.get(head.writer, [])
            if not candidates:
                cross.append(
                    Finding(
                        log.path,
                        entry.seq,
                        ln.number,
                        f"store_head references the log of writer {head.writer!r} (seq "
                        f"{head.seq}), which was not found; pass the directory that holds it "
                        "(--stores DIR)",
                    )
                )
                continue
            problems = [_match(c, head, source) for c in candidates]
            if all(p is not None for p in problems):
                cross.append(problems[0])  # type: ignore[arg-type]
    return _report(logs, cross)


def _report(logs: list[_Log], cross: list[Finding]) -> VerificationReport:
    # Per log in discovery order: its own problems first, then failed references to it.
    order = {log.path: i for i, log in enumerate(logs)}
    findings = [f for log in logs for f in log.findings]
    findings += sorted(cross, key=lambda f: order.get(f.path, len(logs)))
    findings.sort(key=lambda f: order.get(f.path, len(logs)))  # stable: keeps the above
    bad = {f.path for f in findings}
    rows = []
    for log in logs:
        last = log.verified[-1].entry if log.verified else None
        rows.append(
            {
                "path": str(log.path),
                "writer": log.writer,
                "key_id": log.key_id,
                "entries": len(log.lines),
                "verified": len(log.verified),
                "head_seq": -1 if last is None else last.seq,
                "head_hash": None if last is None else last.hash,
                "ok": log.path not in bad,
            }
        )
    return VerificationReport(not findings, rows, findings)
