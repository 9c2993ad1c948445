"""Deployment PKI: `fedcrm pki init` / `pki check` and the library behind them."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

import fedcrm.cli.pki_commands  # noqa: F401 - registers `pki` until fedcrm.cli imports it
from fedcrm.audit.keys import AuditKey, load_public_key, public_key_id
from fedcrm.cli import app
from fedcrm.deployment import pki
from fedcrm.deployment.pki import init_pki, verify_pki
from fedcrm.errors import ConfigError

runner = CliRunner()
STORES = ["s00", "s01", "s02"]
WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki") / "deploy"
    init_pki(
        out,
        STORES,
        hosts=("localhost", "superlink.example.org"),
        ips=("127.0.0.1", "10.0.0.5"),
        days=30,
    )
    return out


@pytest.fixture()
def fresh(tmp_path: Path) -> Path:
    out = tmp_path / "deploy"
    init_pki(out, ["s00", "s01"])
    return out


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def _spki_sha256(public_key: object) -> str:
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# -- layout and permissions -------------------------------------------------------------------
def test_init_writes_every_file_with_private_modes(tree: Path) -> None:
    secret = ["ca/ca.key", "superlink/server.key", "coordinator/audit.key"]
    public = ["ca/ca.crt", "superlink/server.pem", "coordinator/audit.pub"]
    public += ["inventory.json", "README.txt"]
    for store in STORES:
        secret += [f"stores/{store}/supernode.key", f"stores/{store}/audit.key"]
        public += [f"stores/{store}/supernode.pub", f"stores/{store}/audit.pub"]
    for rel in secret:
        assert _mode(tree / rel) == 0o600, rel
    for rel in public:
        assert _mode(tree / rel) == 0o644, rel
    dirs = [tree, *(p for p in tree.rglob("*") if p.is_dir())]
    assert {p.relative_to(tree).as_posix() for p in dirs} >= {".", "ca", "superlink", "stores"}
    assert all(_mode(d) == 0o700 for d in dirs)
    files = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    assert files == set(secret) | set(public)
    assert _leftovers(tree.parent) == []
    assert verify_pki(tree) == []


def test_inventory_lists_every_file_with_owner_secret_and_matching_fingerprint(tree: Path) -> None:
    inv = json.loads((tree / "inventory.json").read_text())
    assert inv["format"] == "fedcrm-pki-inventory" and inv["version"] == 1
    dt.datetime.fromisoformat(inv["created_at"])
    listed = {e["path"]: e for e in inv["files"]}
    on_disk = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"inventory.json", "README.txt"}

    for rel, entry in listed.items():
        assert entry["secret"] == rel.endswith(".key"), rel
        raw = (tree / rel).read_bytes()
        if rel.endswith("supernode.key"):
            public = serialization.load_ssh_private_key(raw, None).public_key()
        elif rel.endswith(".key"):
            public = serialization.load_pem_private_key(raw, None).public_key()
        elif rel.endswith("supernode.pub"):
            public = serialization.load_ssh_public_key(raw)
        elif rel.endswith(".pub"):
            public = serialization.load_pem_public_key(raw)
        else:
            cert = x509.load_pem_x509_certificate(raw)
            public = cert.public_key()
            assert entry["not_before"] == cert.not_valid_before_utc.isoformat().replace(
                "+00:00", "Z"
            )
            assert dt.datetime.fromisoformat(entry["not_after"]) == cert.not_valid_after_utc
        assert entry["fingerprint"] == _spki_sha256(public), rel
        assert entry["algorithm"] and entry["kind"]

    owners = {e["owner"] for e in inv["files"]}
    assert owners == {"ca", "superlink", "coordinator", *(f"store:{s}" for s in STORES)}
    assert listed["ca/ca.key"]["owner"] == "ca"
    assert listed["superlink/server.key"]["owner"] == "superlink"
    assert listed["stores/s01/supernode.key"]["owner"] == "store:s01"
    assert listed["superlink/server.pem"]["sans"] == {
        "dns": ["localhost", "superlink.example.org"],
        "ip": ["127.0.0.1", "10.0.0.5"],
    }
    assert inv["keep_secret"] == {
        "ca": ["ca/ca.key"],
        "superlink": ["superlink/server.key"],
        **{f"store:{s}": [f"stores/{s}/supernode.key", f"stores/{s}/audit.key"] for s in STORES},
        "coordinator": ["coordinator/audit.key"],
    }
    assert inv["distribute"]["superlink"] == [
        "ca/ca.crt",
        "superlink/server.pem",
        "superlink/server.key",
    ]
    assert "ca/ca.key" not in json.dumps({k: v for k, v in inv["distribute"].items() if k != "ca"})
    readme = (tree / "README.txt").read_text()
    for needle in ("server.pem", "server.key", "ca.crt", "supernode.key", "OFFLINE", "s02"):
        assert needle in readme


# -- certificates -------------------------------------------------------------------------------
def test_ca_certificate_is_a_ca(tree: Path) -> None:
    ca = x509.load_pem_x509_certificate((tree / "ca/ca.crt").read_bytes())
    assert ca.issuer == ca.subject
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name in ("secp256r1", "secp384r1")
    public.verify(ca.signature, ca.tbs_certificate_bytes, ec.ECDSA(ca.signature_hash_algorithm))


def test_server_certificate_chains_to_the_ca_and_names_the_superlink(tree: Path) -> None:
    ca = x509.load_pem_x509_certificate((tree / "ca/ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tree / "superlink/server.pem").read_bytes())
    assert cert.issuer == ca.subject
    ca_public = ca.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    ca_public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=10)
    key = serialization.load_pem_private_key((tree / "superlink/server.key").read_bytes(), None)
    assert _spki_sha256(key.public_key()) == _spki_sha256(cert.public_key())


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_tls_handshake_with_the_written_files(tree: Path, server_name: str) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tree / "superlink/server.pem", tree / "superlink/server.key")
    client_ctx = ssl.create_default_context(cafile=str(tree / "ca/ca.crt"))
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(b"ok")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(b, server_hostname=server_name) as c:
        assert c.recv(2) == b"ok"
    thread.join(5)
    assert not errors


# -- key formats the tools expect ------------------------------------------------------------
def test_store_keys_load_the_way_flwr_loads_them(tree: Path) -> None:
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    for store in STORES:
        base = tree / "stores" / store
        args = argparse.Namespace(
            auth_supernode_private_key=str(base / "supernode.key"), auth_supernode_public_key=None
        )
        private, public = _try_setup_client_authentication(args)  # type: ignore[misc]
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp256r1"
        registered = try_load_public_key(base / "supernode.pub")  # `flwr supernode register`
        assert serialization.load_pem_public_key(registered) == public
    keys = [(tree / "stores" / s / "supernode.key").read_bytes() for s in STORES]
    assert len(set(keys)) == len(STORES)


def test_audit_keys_are_what_fedcrm_audit_reads(tree: Path, tmp_path: Path) -> None:
    inv = {e["path"]: e for e in json.loads((tree / "inventory.json").read_text())["files"]}
    for base, writer in [("coordinator", "coordinator"), ("stores/s00", "store-s00")]:
        public = load_public_key(tree / base / "audit.pub")
        assert isinstance(public, Ed25519PublicKey)
        assert inv[f"{base}/audit.pub"]["key_id"] == public_key_id(public)
        # Installed where fedcrm.audit looks for it, the key is used as it is (not replaced).
        keys = tmp_path / writer
        keys.mkdir(mode=0o700)
        shutil.copy2(tree / base / "audit.key", keys / f"audit-{writer}.key")
        shutil.copy2(tree / base / "audit.pub", keys / f"audit-{writer}.pub")
        assert AuditKey.load_or_create(keys, writer).key_id == public_key_id(public)


# -- refusals and all-or-nothing ------------------------------------------------------------
def test_existing_directory_is_refused_without_force(fresh: Path) -> None:
    before = (fresh / "ca/ca.crt").read_bytes()
    with pytest.raises(ConfigError, match=str(fresh)):
        init_pki(fresh, ["s00"])
    assert (fresh / "ca/ca.crt").read_bytes() == before
    init_pki(fresh, ["s09"], force=True)
    assert (fresh / "ca/ca.crt").read_bytes() != before
    assert (fresh / "stores/s09").is_dir() and not (fresh / "stores/s00").exists()
    assert _leftovers(fresh.parent) == [] and verify_pki(fresh) == []


def test_force_never_replaces_a_directory_pki_did_not_write(tmp_path: Path) -> None:
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing"):
        init_pki(other, ["s00"], force=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    init_pki(tmp_path / "deploy", ["s00"])
    assert _mode(tmp_path / "deploy") == 0o700 and verify_pki(tmp_path / "deploy") == []


@pytest.mark.parametrize(
    ("stores", "match"),
    [
        (["s00", "bad/name"], "invalid store name"),
        (["..", "s01"], "invalid store name"),
        ([".hidden"], "invalid store name"),
        (["x" * 65], "invalid store name"),
        ([""], "invalid store name"),
        (["s00", "s01", "s00"], "duplicate store name 's00'"),
        (["s00", "S00"], "duplicate store name"),
        ([], "at least one store"),
    ],
)
def test_bad_or_duplicate_store_names_are_refused(
    tmp_path: Path, stores: list[str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        init_pki(tmp_path / "deploy", stores)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ips": ("127.0.0.1", "10.0.0.300")}, "invalid SuperLink IP"),
        ({"hosts": ("bad host",)}, "invalid SuperLink host"),
        ({"hosts": ("10.0.0.5",)}, "--superlink-ip"),
        ({"days": 0}, "invalid validity"),
    ],
)
def test_invalid_arguments_leave_nothing_behind(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        init_pki(tmp_path / "deploy", STORES, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_failure_late_in_the_build_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pki, "_readme", boom)  # after every key has been written
    with pytest.raises(OSError, match="No space"):
        init_pki(tmp_path / "deploy", STORES)
    assert list(tmp_path.iterdir()) == []

    # ... and with --force the previous tree survives intact.
    monkeypatch.undo()
    init_pki(tmp_path / "deploy", ["s00"])
    before = (tmp_path / "deploy/inventory.json").read_bytes()
    monkeypatch.setattr(pki, "_readme", boom)
    with pytest.raises(OSError):
        init_pki(tmp_path / "deploy", STORES, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]
    assert (tmp_path / "deploy/inventory.json").read_bytes() == before


# -- pki check ----------------------------------------------------------------------------------
def test_check_finds_a_server_certificate_from_another_ca(fresh: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_pki(other, ["s00"])
    shutil.copy2(other / "superlink/server.pem", fresh / "superlink/server.pem")
    problems = verify_pki(fresh)
    assert any("signature does not verify with the CA key" in p for p in problems)
    assert any("server.pem: public-key fingerprint" in p for p in problems)
    assert any("server.key: does not match" in p for p in problems)

    result = runner.invoke(app, ["pki", "check", str(fresh)], env=WIDE)
    assert result.exit_code == 1
    assert "signature does not verify" in result.output


def test_check_finds_a_readable_key_and_a_swapped_public_key(fresh: Path) -> None:
    key = fresh / "stores/s00/supernode.key"
    os.chmod(key, 0o644)
    shutil.copy2(fresh / "stores/s01/supernode.pub", fresh / "stores/s00/supernode.pub")
    problems = verify_pki(fresh)
    assert any(str(key) in p and "0o644" in p and "chmod 600" in p for p in problems)
    assert any("stores/s00/supernode.key: does not match" in p for p in problems)
    result = runner.invoke(app, ["pki", "check", str(fresh)], env=WIDE)
    assert result.exit_code == 1 and "chmod 600" in result.output


def test_check_requires_the_names_asked_for(fresh: Path) -> None:
    assert verify_pki(fresh, ips=["127.0.0.1"], hosts=["localhost"]) == []
    problems = verify_pki(fresh, ips=["10.9.9.9"], hosts=["superlink.example.org"])
    assert any("lacks IP:10.9.9.9" in p for p in problems)
    assert any("lacks DNS:superlink.example.org" in p for p in problems)
    ok = runner.invoke(app, ["pki", "check", str(fresh)], env=WIDE)
    assert ok.exit_code == 0 and "ok:" in ok.output
    bad = runner.invoke(app, ["pki", "check", str(fresh), "--superlink-ip", "10.9.9.9"], env=WIDE)
    assert bad.exit_code == 1 and "IP:10.9.9.9" in bad.output


def test_check_of_a_directory_without_inventory(tmp_path: Path) -> None:
    assert "inventory" in verify_pki(tmp_path)[0]


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_init_prints_what_was_written_and_no_key_material(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = runner.invoke(
        app,
        ["pki", "init", "--out", str(out), "--stores", "s00,s01", "--superlink-ip", "10.0.0.5",
         "--superlink-host", "superlink.example.org", "--days", "90"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    inv = json.loads((out / "inventory.json").read_text())
    for entry in inv["files"]:
        line = next(ln for ln in result.output.splitlines() if entry["path"] + " " in ln)
        assert entry["owner"] in line
        assert ("SECRET" in line) == entry["secret"]
    assert inv["superlink"] == {
        "hosts": ["localhost", "superlink.example.org"],
        "ips": ["127.0.0.1", "10.0.0.5"],
    }
    assert "IP:127.0.0.1" in result.output and "IP:10.0.0.5" in result.output
    assert "BEGIN" not in result.output and "ecdsa-sha2" not in result.output
    for path in out.rglob("*"):
        if path.suffix in (".key", ".pub", ".pem", ".crt"):
            body = [ln for ln in path.read_text().splitlines() if ln and "-----" not in ln]
            for chunk in body:
                for word in chunk.split():
                    if len(word) >= 16:
                        assert word[:16] not in result.output, path
    assert verify_pki(out) == []


def test_cli_init_refuses_an_existing_directory_and_bad_stores(fresh: Path, tmp_path: Path) -> None:
    again = runner.invoke(app, ["pki", "init", "--out", str(fresh), "--stores", "s00"], env=WIDE)
    assert again.exit_code == 1 and str(fresh) in again.output and "--force" in again.output
    bad = runner.invoke(
        app, ["pki", "init", "--out", str(tmp_path / "x"), "--stores", "s00,,s01"], env=WIDE
    )
    assert bad.exit_code == 1 and "--stores" in bad.output
    dup = runner.invoke(
        app, ["pki", "init", "--out", str(tmp_path / "x"), "--stores", "s00,s00"], env=WIDE
    )
    assert dup.exit_code == 1 and "duplicate" in dup.output
    assert not (tmp_path / "x").exists()
