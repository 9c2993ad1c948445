"""The audit trail: signed hash-chained logs, their keys, tampering detection and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import stat
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import fedcrm.cli.audit_commands  # noqa: F401 - registers `audit` until fedcrm.cli imports it
from fedcrm.audit.keys import AuditKey, load_public_key, public_key_id
from fedcrm.audit.log import (
    AUDIT_LOG_NAME,
    AUDIT_PUBLIC_KEY_NAME,
    GENESIS,
    STORE_HEAD,
    AuditHead,
    AuditLog,
    canonical_json,
    check_payload,
    digest,
)
from fedcrm.audit.verify import Finding, VerificationReport, verify_log, verify_tree
from fedcrm.cli import app
from fedcrm.errors import ConfigError, PrivacyError, PrivacyWarning

runner = CliRunner()
SECRET = "PAYLOAD-VALUE-7731"  # must never show up in a finding or CLI output
BODY = ("format", "seq", "time", "writer", "key_id", "kind", "payload", "prev")


# -- helpers -----------------------------------------------------------------------------------
def store_dir(root: Path, store: str = "s1") -> Path:
    return root / "chain" / store / ".fedcrm"


def make_store_log(root: Path, store: str = "s1", n: int = 6) -> AuditLog:
    log = AuditLog.open(store_dir(root, store), f"store-{store}")
    log.append("run_start", {"run_id": "r1", "note": SECRET})
    for i in range(1, n):
        log.append("dp_round", {"round": i, "epsilon": 0.25 * i, "sigma": 1.1})
    return log


def make_run(root: Path, stores: tuple[str, ...] = ("s1", "s2")) -> tuple[AuditLog, list[AuditLog]]:
    logs = [make_store_log(root, s) for s in stores]
    key = AuditKey.load_or_create(root / "coordinator-keys", "coordinator")
    coordinator = AuditLog.open(root / "run", "coordinator", key)
    coordinator.append("run_start", {"run_id": "r1", "config": digest({"rounds": 3})})
    for store, log in zip(stores, logs, strict=True):
        coordinator.append_store_head(store, log.head())
    coordinator.append("run_end", {"run_id": "r1", "status": "completed"})
    return coordinator, logs


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(canonical_json(r) + b"\n" for r in rows))


def rehash(row: dict[str, Any], key: AuditKey | None = None) -> dict[str, Any]:
    """What an attacker can do: recompute the hash; sign only with a key it holds."""
    row = dict(row)
    row["hash"] = hashlib.sha256(canonical_json({k: row[k] for k in BODY})).hexdigest()
    if key is not None:
        row["signature"] = base64.b64encode(key.sign(bytes.fromhex(row["hash"]))).decode()
    return row


def rechain(rows: list[dict[str, Any]], key: AuditKey | None = None) -> list[dict[str, Any]]:
    """Renumber and relink every entry, as an attacker repairing the chain would."""
    out, prev = [], GENESIS
    for seq, row in enumerate(rows):
        row = rehash({**row, "seq": seq, "prev": prev}, key)
        out.append(row)
        prev = row["hash"]
    return out


def first(report: VerificationReport, path: Path | None = None) -> Finding:
    assert not report.ok
    found = report.findings if path is None else [f for f in report.findings if f.path == path]
    assert found, report.findings
    assert all(SECRET not in f.problem for f in report.findings)
    return found[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- writing, reading, keys --------------------------------------------------------------------
def test_append_read_round_trip_and_head(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "log", "store-s1")
    assert log.head() == AuditHead("store-s1", -1, GENESIS, log.key_id)
    written = [log.append("consent_filter", {"included": 10 + i, "refused": i}) for i in range(3)]
    assert log.entries() == written
    assert [e.seq for e in written] == [0, 1, 2]
    assert written[0].prev == GENESIS
    assert [e.prev for e in written[1:]] == [e.hash for e in written[:-1]]
    for entry in written:
        assert entry.compute_hash() == entry.hash
        assert entry.signature_valid(load_public_key(tmp_path / "log" / AUDIT_PUBLIC_KEY_NAME))
        assert datetime.fromisoformat(entry.time).utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert entry.writer == "store-s1" and entry.key_id == log.key_id
    assert log.head() == AuditHead("store-s1", 2, written[-1].hash, log.key_id)
    line = (tmp_path / "log" / AUDIT_LOG_NAME).read_text(encoding="utf-8").splitlines()[1]
    assert json.loads(line) == written[1].to_dict()
    assert verify_log(log.path).ok


def test_keys_are_private_and_reloaded(tmp_path: Path) -> None:
    directory = store_dir(tmp_path)
    first_log = AuditLog.open(directory, "store-s1")
    first_log.append("run_start", {"run_id": "r1"})
    keys = directory / "keys"
    private = keys / "audit-store-s1.key"
    assert mode(keys) == 0o700
    assert mode(directory) == 0o700
    assert mode(private) == 0o600
    assert mode(first_log.path) == 0o600
    public = load_public_key(keys / "audit-store-s1.pub")
    assert public_key_id(public) == first_log.key_id
    assert public_key_id(load_public_key(directory / AUDIT_PUBLIC_KEY_NAME)) == first_log.key_id
    key = AuditKey.load_or_create(keys, "store-s1")
    assert key.key_id == first_log.key_id and len(key.key_id) == 16
    assert "PRIVATE" not in repr(key) and key.key_id in repr(key)
    second_log = AuditLog.open(directory, "store-s1")  # a new process: same key, same chain
    assert second_log.key_id == first_log.key_id
    assert second_log.append("run_end", {"run_id": "r1"}).seq == 1
    assert verify_log(first_log.path).ok


def test_key_custody_fails_closed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = AuditKey.load_or_create(keys, "coordinator")
    private = keys / "audit-coordinator.key"
    pem = private.read_bytes()
    private.write_bytes(pem[:40] + b"garbage" + pem[60:])
    with pytest.raises(PrivacyError, match=r"audit-coordinator\.key") as info:
        AuditKey.load_or_create(keys, "coordinator")
    assert pem[30:60].decode() not in str(info.value)
    private.write_bytes(pem)
    (keys / "audit-coordinator.pub").write_text(AuditKey.generate("x").public_pem())
    with pytest.raises(PrivacyError, match="replaced"):
        AuditKey.load_or_create(keys, "coordinator")
    (keys / "audit-coordinator.pub").unlink()
    assert AuditKey.load_or_create(keys, "coordinator").key_id == key.key_id
    with pytest.raises(ConfigError, match="writer name"):
        AuditKey.load_or_create(keys, "../evil")


def test_a_key_readable_by_others_is_announced(tmp_path: Path) -> None:
    key = AuditKey.load_or_create(tmp_path / "keys", "coordinator")
    os.chmod(tmp_path / "keys" / "audit-coordinator.key", 0o644)
    with pytest.warns(PrivacyWarning, match="chmod 600"):
        assert AuditKey.load_or_create(tmp_path / "keys", "coordinator").key_id == key.key_id


def test_a_log_keeps_its_writer_and_key(tmp_path: Path) -> None:
    log = make_store_log(tmp_path, n=2)
    other = AuditKey.generate("store-s1")
    with pytest.raises(PrivacyError, match="kept with key"):
        AuditLog.open(log.path.parent, "store-s1", other)
    with pytest.raises(ConfigError, match="belongs to writer"):
        AuditLog.open(log.path.parent, "store-s2", other)


def test_appending_to_a_tampered_log_is_refused(tmp_path: Path) -> None:
    log = make_store_log(tmp_path, n=3)
    rows = read_lines(log.path)
    rows[-1]["payload"]["epsilon"] = 0.0
    write_lines(log.path, rows)
    with pytest.raises(PrivacyError, match="refusing to append"):
        log.append("run_end", {"run_id": "r1"})
    with log.path.open("ab") as fh:  # a torn write after a crash
        fh.write(b'{"format":"fedcrm-au')
    with pytest.raises(PrivacyError, match="incomplete"):
        AuditLog.open(log.path.parent, "store-s1")


def _append_many(directory: str, count: int) -> None:
    log = AuditLog.open(Path(directory), "store-s1")
    for i in range(count):
        log.append("guard_decision", {"decision": "allowed", "i": i, "pid": os.getpid()})


def test_concurrent_appends_from_threads_keep_one_chain(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    AuditLog.open(directory, "store-s1")
    threads = [threading.Thread(target=_append_many, args=(str(directory), 25)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify_log(directory / AUDIT_LOG_NAME)
    assert report.ok, report.findings
    assert report.logs[0]["entries"] == 100 and report.logs[0]["head_seq"] == 99


def test_concurrent_appends_from_processes_keep_one_chain(tmp_path: Path) -> None:
    directory = tmp_path / "log"  # no key yet: the processes race to create it, too
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_append_many, args=(str(directory), 20)) for _ in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    report = verify_log(directory / AUDIT_LOG_NAME)
    assert report.ok, report.findings
    assert report.logs[0]["entries"] == 60
    assert len({e.payload["pid"] for e in AuditLog.open(directory, "store-s1").entries()}) == 3


# -- payloads ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"blob": b"\x00\x01"}, "bytes"),
        ({"epsilon": float("nan")}, "NaN"),
        ({"nested": {"eps": [1.0, float("inf")]}}, "infinite"),
        ({"note": "x" * 201}, "201 characters"),
        ({"k" * 201: 1}, "key of 201"),
        ({"count": np.int64(3)}, "int64"),
        ({1: "a"}, "keys must be strings"),
        ({"s": {1, 2}}, "set"),
    ],
)
def test_check_payload_refuses(payload: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        check_payload(payload)
    assert "xxxxxxxx" not in str(info.value)


def test_check_payload_accepts_json_and_normalises() -> None:
    payload = {"n": 3, "eps": np.float64(0.5), "ok": True, "none": None, "cols": ("a", "b")}
    assert check_payload(payload) == {
        "n": 3,
        "eps": 0.5,
        "ok": True,
        "none": None,
        "cols": ["a", "b"],
    }
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    assert len(digest({})) == 64
    with pytest.raises(ConfigError):
        digest({"x": float("nan")})


def test_invalid_kinds_and_store_heads_are_refused(tmp_path: Path) -> None:
    log = AuditLog.open(tmp_path / "log", "coordinator")
    with pytest.raises(ConfigError, match="kind"):
        log.append("Run Start", {})
    with pytest.raises(ConfigError, match="hash"):
        log.append(STORE_HEAD, {"store": "s1", "writer": "store-s1", "seq": 1, "hash": "ab"})
    assert log.head().seq == -1


# -- verification: clean -----------------------------------------------------------------------
def test_verify_clean_tree_with_store_heads(tmp_path: Path) -> None:
    _, stores = make_run(tmp_path)
    report = verify_tree(tmp_path)
    assert report.ok, report.findings
    assert {row["writer"] for row in report.logs} == {"coordinator", "store-s1", "store-s2"}
    for row in report.logs:
        assert row["ok"] and row["entries"] == row["verified"]
    assert verify_tree(tmp_path / "run", [tmp_path / "chain"]).ok
    assert verify_tree(stores[0].path).ok
    # The stores append after the head was recorded: still consistent (append-only).
    stores[0].append("run_end", {"run_id": "r1"})
    assert verify_tree(tmp_path).ok


def test_reference_to_a_missing_log_is_a_finding(tmp_path: Path) -> None:
    make_run(tmp_path)
    finding = first(verify_tree(tmp_path / "run"))
    assert finding.path == tmp_path / "run" / AUDIT_LOG_NAME
    assert (finding.line, finding.seq) == (2, 1)
    assert "not found" in finding.problem


def test_missing_path_and_no_logs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such"):
        verify_tree(tmp_path / "nope")
    report = verify_tree(tmp_path)
    assert not report.ok and "no audit log" in report.findings[0].problem
    assert "no such audit log" in first(verify_log(tmp_path / AUDIT_LOG_NAME)).problem


# -- verification: tampering -------------------------------------------------------------------
def test_modification_in_place_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    rows[2]["payload"]["epsilon"] = 0.01
    write_lines(log.path, rows)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (3, 2)
    assert "modified" in finding.problem


def test_modification_with_recomputed_hash_is_caught_by_the_signature(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    rows[0]["payload"]["note"] = "edited"
    rows = rechain(rows)  # hashes and links repaired, signatures kept: no key
    write_lines(log.path, rows)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (1, 0)
    assert "signature does not verify" in finding.problem


def test_deletion_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    del rows[2]
    write_lines(log.path, rows)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (3, 2)
    assert "missing" in finding.problem and "deleted" in finding.problem


def test_forged_insertion_is_caught_by_the_signature(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    forged = {**rows[2], "kind": "refusal", "payload": {"reason": "budget"}}
    # (a) a plausible line linked to its predecessor, hash recomputed, no valid signature.
    plain = [*rows[:3], rehash({**forged, "seq": 3, "prev": rows[2]["hash"]}), *rows[3:]]
    write_lines(log.path, plain)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (4, 3)
    assert "signature" in finding.problem
    # (b) the whole chain renumbered and relinked around it, signed with the attacker's key.
    attacker = AuditKey.generate("store-s1")
    rows_b = rechain([*rows[:3], forged, *rows[3:]])
    rows_b[3] = rehash(rows_b[3], attacker)
    write_lines(log.path, rows_b)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (4, 3)
    assert "signature" in finding.problem


def test_replayed_entry_insertion_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    write_lines(log.path, [*rows[:4], rows[1], *rows[4:]])  # a genuine, signed entry again
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (5, 1)
    assert "appears again" in finding.problem and "inserted" in finding.problem


def test_reordering_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    rows[2], rows[3] = rows[3], rows[2]
    write_lines(log.path, rows)
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (3, 2)
    assert "reordered" in finding.problem


def test_truncation_is_detected_against_a_recorded_head(tmp_path: Path) -> None:
    coordinator, stores = make_run(tmp_path)
    head = stores[0].head()
    rows = read_lines(stores[0].path)
    write_lines(stores[0].path, rows[:-2])
    assert verify_log(stores[0].path).ok  # a shorter log is internally valid …
    finding = first(verify_log(stores[0].path, expected_head=head))  # … but not the same log
    assert finding.seq == head.seq and "truncation" in finding.problem
    report = verify_tree(tmp_path)
    finding = first(report, stores[0].path)
    assert finding.seq == 5 and "truncation" in finding.problem
    assert f"{coordinator.path}:2" in finding.problem
    assert [row["ok"] for row in report.logs if row["writer"] == "store-s2"] == [True]


def test_rewriting_after_the_reference_is_detected(tmp_path: Path) -> None:
    _, stores = make_run(tmp_path)
    rows = read_lines(stores[0].path)
    write_lines(stores[0].path, rows[:-1])
    # The store itself (it holds its key) writes a different last entry: a valid log.
    stores[0].append("dp_round", {"round": 5, "epsilon": 0.0})
    assert verify_log(stores[0].path).ok
    finding = first(verify_tree(tmp_path), stores[0].path)
    assert (finding.line, finding.seq) == (6, 5)
    assert "rewritten" in finding.problem


def test_a_swapped_public_key_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    other = AuditKey.generate("store-s1")
    (log.path.parent / AUDIT_PUBLIC_KEY_NAME).write_text(other.public_pem())
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (1, 0)
    assert f"names key {log.key_id}" in finding.problem and other.key_id in finding.problem


def test_an_entry_signed_by_another_key_is_detected(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    rows = read_lines(log.path)
    other = AuditKey.generate("store-s1")
    extra = rehash(
        {**rows[-1], "seq": len(rows), "prev": rows[-1]["hash"], "payload": {"round": 9}}, other
    )
    write_lines(log.path, [*rows, extra])  # key_id still claims the writer's key
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (len(rows) + 1, len(rows))
    assert "signature does not verify" in finding.problem
    write_lines(log.path, [*rows, rehash({**extra, "key_id": other.key_id}, other)])
    finding = first(verify_log(log.path))
    assert finding.line == len(rows) + 1 and f"names key {other.key_id}" in finding.problem


def test_a_log_replaced_with_its_key_is_caught_by_reference_or_pinning(tmp_path: Path) -> None:
    """A forger re-signs the whole log with a new key and replaces audit.pub: internally the
    log is valid, but the coordinator recorded the original key id (and keys can be pinned)."""
    _, stores = make_run(tmp_path)
    original = AuditKey.load_or_create(stores[0].path.parent / "keys", "store-s1")
    forger = AuditKey.generate("store-s1")
    rows = [{**r, "key_id": forger.key_id} for r in read_lines(stores[0].path)]
    write_lines(stores[0].path, rechain(rows, forger))
    (stores[0].path.parent / AUDIT_PUBLIC_KEY_NAME).write_text(forger.public_pem())
    assert verify_log(stores[0].path).ok
    finding = first(verify_tree(tmp_path), stores[0].path)
    assert "replaced" in finding.problem and original.key_id in finding.problem
    pinned = [load_public_key(tmp_path / "coordinator-keys" / "audit-coordinator.pub")]
    pinned += [original.public_key, AuditKey.load_or_create(
        stores[1].path.parent / "keys", "store-s2"
    ).public_key]  # fmt: skip
    report = verify_tree(tmp_path, trusted_keys=pinned)
    assert "not among the trusted keys" in first(report, stores[0].path).problem
    assert [f.path for f in report.findings if "trusted" in f.problem] == [stores[0].path]


def test_garbled_and_cut_lines_are_named(tmp_path: Path) -> None:
    log = make_store_log(tmp_path)
    text = log.path.read_bytes().split(b"\n")
    text[3] = text[3][:50] + b"}}garbage"
    log.path.write_bytes(b"\n".join(text))
    finding = first(verify_log(log.path))
    assert (finding.line, finding.seq) == (4, None)
    assert "not valid JSON" in finding.problem
    log = make_store_log(tmp_path / "b")
    log.path.write_bytes(log.path.read_bytes()[:-30])
    finding = first(verify_log(log.path))
    assert finding.line == 6 and "incomplete" in finding.problem


def test_an_entry_from_another_writer_is_detected(tmp_path: Path) -> None:
    one, two = make_store_log(tmp_path, "s1"), make_store_log(tmp_path, "s2")
    rows = read_lines(one.path)
    rows[3] = read_lines(two.path)[3]
    write_lines(one.path, rows)
    finding = first(verify_log(one.path))
    assert (finding.line, finding.seq) == (4, 3) and "another log" in finding.problem


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_verify_clean_and_tampered(tmp_path: Path) -> None:
    _, stores = make_run(tmp_path)
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "run"), "--stores",
                                 str(tmp_path / "chain")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "store-s2" in result.output

    rows = read_lines(stores[1].path)
    rows[2]["payload"]["epsilon"] = 0.0
    write_lines(stores[1].path, rows)
    result = runner.invoke(app, ["audit", "verify", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{stores[1].path}:3 (seq 2)" in result.output
    assert "modified" in result.output and "FAILED" in result.output
    assert SECRET not in result.output

    result = runner.invoke(app, ["audit", "verify", str(stores[0].path)])
    assert result.exit_code == 0, result.output


def test_cli_truncation_and_missing_path(tmp_path: Path) -> None:
    _, stores = make_run(tmp_path)
    write_lines(stores[0].path, read_lines(stores[0].path)[:3])
    result = runner.invoke(app, ["audit", "verify", str(tmp_path)])
    assert result.exit_code == 1
    assert "truncation" in result.output and "seq 5" in result.output
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no such file" in result.output
