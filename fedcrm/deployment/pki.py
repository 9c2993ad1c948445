"""Keys and certificates for a multi-site deployment (``fedcrm pki init`` / ``pki check``).

:func:`init_pki` writes, all or nothing, the files a deployment needs::

    DIR/
      inventory.json              every file: owner, kind, secret?, algorithm, fingerprint
      README.txt                  which file goes to which host
      ca/ca.key                   CA private key (EC P-256, PKCS#8 PEM)       secret: keep offline
      ca/ca.crt                   self-signed CA certificate (PEM)            public
      superlink/server.key        SuperLink TLS key (EC P-256, PKCS#8 PEM)    secret
      superlink/server.pem        SuperLink certificate signed by the CA      public
      stores/<store>/supernode.key  SuperNode auth key (EC P-256, OpenSSH)    secret
      stores/<store>/supernode.pub  its public key (OpenSSH one line)         public
      stores/<store>/audit.key    store audit signing key (Ed25519, PKCS#8)   secret
      stores/<store>/audit.pub    its public key (SubjectPublicKeyInfo PEM)   public
      coordinator/audit.key       coordinator audit signing key (Ed25519)    secret
      coordinator/audit.pub       its public key                              public

Formats follow what the tools that read them expect: ``flower-superlink --ssl-*`` reads PEM
files (uvicorn / gRPC); ``flower-supernode --auth-supernode-private-key`` loads the key with
``cryptography``'s ``load_ssh_private_key`` (OpenSSH private key format) and ``flwr supernode
register`` loads the public key with ``load_ssh_public_key`` (``ecdsa-sha2-nistp256 ...``);
the audit keys are those :mod:`fedcrm.audit.keys` reads.

Directories are created 0700, private keys 0600, public files 0644. The tree is built in a
temporary sibling directory and renamed into place at the end, so a failure leaves nothing
behind. Fingerprints are SHA-256 over the public key's SubjectPublicKeyInfo DER, in hex; no
message, inventory entry or log line ever holds private key bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcrm.errors import ConfigError

__all__ = [
    "INVENTORY_FORMAT",
    "INVENTORY_NAME",
    "INVENTORY_VERSION",
    "check_store_name",
    "init_pki",
    "public_fingerprint",
    "verify_pki",
]

INVENTORY_FORMAT = "fedcrm-pki-inventory"
INVENTORY_VERSION = 1
INVENTORY_NAME = "inventory.json"
README_NAME = "README.txt"

DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
MAX_DAYS = 3650
#: Certificates start a little in the past so that hosts with slightly slow clocks accept them.
CLOCK_SKEW = dt.timedelta(minutes=5)

_STORE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

CA_KEY = "ca/ca.key"
CA_CERT = "ca/ca.crt"
SERVER_KEY = "superlink/server.key"
SERVER_CERT = "superlink/server.pem"
COORDINATOR_AUDIT_KEY = "coordinator/audit.key"
COORDINATOR_AUDIT_PUB = "coordinator/audit.pub"


def store_files(store: str) -> tuple[str, str, str, str]:
    """(supernode.key, supernode.pub, audit.key, audit.pub) of ``store``, relative to DIR."""
    base = f"stores/{store}"
    return (
        f"{base}/supernode.key",
        f"{base}/supernode.pub",
        f"{base}/audit.key",
        f"{base}/audit.pub",
    )


# -- validation ----------------------------------------------------------------------------
def check_store_name(name: str) -> str:
    """``name`` if it is a valid store name (it names a directory), else :class:`ConfigError`."""
    if not isinstance(name, str) or not _STORE.fullmatch(name) or name.startswith("."):
        raise ConfigError(
            f"invalid store name {name!r}: use 1-64 characters of A-Z a-z 0-9 . _ - "
            "not starting with '.' (e.g. 's00')"
        )
    return name


def _check_stores(stores: Sequence[str]) -> list[str]:
    if isinstance(stores, str):
        raise ConfigError("stores must be a list of names, e.g. ['s00', 's01']")
    names = [check_store_name(s) for s in stores]
    if not names:
        raise ConfigError("at least one store is needed (e.g. --stores s00,s01)")
    seen: dict[str, str] = {}
    for name in names:
        # Case-insensitive: S00 and s00 would be one directory on some file systems.
        if name.lower() in seen:
            raise ConfigError(
                f"duplicate store name {name!r} (also given as {seen[name.lower()]!r})"
            )
        seen[name.lower()] = name
    return names


def _check_hosts(hosts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for host in hosts:
        if not isinstance(host, str):
            raise ConfigError(f"invalid SuperLink host name {host!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise ConfigError(f"{host!r} is an IP address: give it as an IP (--superlink-ip)")
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ConfigError(
                f"invalid SuperLink host name {host!r}: use a DNS name such as "
                "'superlink.example.org' (letters, digits, '-' and '.')"
            )
        if host.lower() not in (h.lower() for h in out):
            out.append(host)
    return out


def _check_ips(ips: Sequence[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(str(ip).strip())
        except ValueError:
            raise ConfigError(
                f"invalid SuperLink IP address {ip!r} (e.g. 127.0.0.1 or 10.0.0.5)"
            ) from None
        if addr not in out:
            out.append(addr)
    return out


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ConfigError(f"invalid validity {days!r}: give whole days from 1 to {MAX_DAYS}")
    return days


# -- key material -------------------------------------------------------------------------
def public_fingerprint(public_key: Any) -> str:
    """SHA-256 (hex) of the public key's SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _pkcs8(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki_pem(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ssh_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def _ssh_public(public_key: ec.EllipticCurvePublicKey, comment: str) -> bytes:
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return line + b" " + comment.encode("ascii") + b"\n"


def _ski(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcrm deployment"),
            x509.NameAttribute(NameOID.COMMON_NAME, "fedcrm deployment CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    common = hosts[0] if hosts else str(ips[0])
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    sans += [x509.IPAddress(ip) for ip in ips]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcrm deployment"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


# -- writing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    path: str
    kind: str
    owner: str
    secret: bool
    algorithm: str
    fingerprint: str
    extra: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "owner": self.owner,
            "secret": self.secret,
            "algorithm": self.algorithm,
            "fingerprint": self.fingerprint,
            **self.extra,
        }


class _Writer:
    """Writes files under the staging root with exact modes (independent of the umask)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: list[_Entry] = []

    def _dir(self, rel: str) -> None:
        parent = self.root
        for part in Path(rel).parent.parts:
            parent = parent / part
            if not parent.exists():
                parent.mkdir(mode=DIR_MODE)
            os.chmod(parent, DIR_MODE)

    def raw(self, rel: str, data: bytes, *, secret: bool) -> None:
        self._dir(rel)
        mode = SECRET_MODE if secret else PUBLIC_MODE
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.root / rel, flags, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def file(
        self,
        rel: str,
        data: bytes,
        *,
        kind: str,
        owner: str,
        secret: bool,
        algorithm: str,
        public_key: Any,
        **extra: Any,
    ) -> None:
        self.raw(rel, data, secret=secret)
        fingerprint = public_fingerprint(public_key)
        self.entries.append(_Entry(rel, kind, owner, secret, algorithm, fingerprint, extra))


def _key_and_certificate(
    writer: _Writer,
    paths: tuple[str, str],
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    *,
    kind: str,
    owner: str,
    **facts: Any,
) -> None:
    """An ECDSA private key (secret) and its certificate, with their inventory entries."""
    public = key.public_key()
    writer.file(paths[0], _pkcs8(key), kind=f"{kind}-private-key", owner=owner, secret=True,
                algorithm="ECDSA P-256", public_key=public)  # fmt: skip
    writer.file(
        paths[1], cert.public_bytes(serialization.Encoding.PEM), kind=f"{kind}-certificate",
        owner=owner, secret=False, algorithm="ECDSA P-256 / SHA-256", public_key=public,
        **facts, **_cert_facts(cert),
    )  # fmt: skip


def _audit_pair(writer: _Writer, base: str, owner: str) -> None:
    from fedcrm.audit.keys import public_key_id

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    key_id = public_key_id(public)
    common = {"owner": owner, "algorithm": "Ed25519", "public_key": public, "key_id": key_id}
    writer.file(f"{base}/audit.key", _pkcs8(key), kind="audit-signing-key", secret=True, **common)
    writer.file(
        f"{base}/audit.pub", _spki_pem(public), kind="audit-public-key", secret=False, **common
    )


def init_pki(
    out: Path,
    stores: Sequence[str],
    *,
    hosts: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    days: int = 365,
    force: bool = False,
) -> Path:
    """Write a deployment's CA, SuperLink certificate and per-party keys to ``out``.

    Returns the path of ``out/inventory.json``. Raises :class:`ConfigError` (naming the
    offending value or directory) for an invalid or duplicate store name, host, IP or
    validity, or when ``out`` exists and is not empty (unless ``force``; even then only a
    directory this function wrote is replaced). Nothing is left behind on failure.
    """
    out = Path(out)
    names = _check_stores(stores)
    host_list = _check_hosts(list(hosts))
    ip_list = _check_ips(list(ips))
    if not host_list and not ip_list:
        raise ConfigError("the SuperLink certificate needs at least one host name or IP address")
    days = _check_days(days)
    _check_target(out, force=force)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))  # 0700
    try:
        os.chmod(staging, DIR_MODE)
        _build(staging, names, host_list, ip_list, days)
        _move_into_place(staging, out, force=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / INVENTORY_NAME


def _check_target(out: Path, *, force: bool) -> None:
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return  # an empty directory is replaced silently
    if not force:
        raise ConfigError(
            f"{out}: already exists; choose another --out, or use --force to replace it "
            "(its keys and certificates are then lost)"
        )
    if _read_inventory(out) is None:
        raise ConfigError(
            f"{out}: exists and holds no {INVENTORY_NAME} written by fedcrm pki init; "
            "refusing to replace it even with --force"
        )


def _move_into_place(staging: Path, out: Path, *, force: bool) -> None:
    if os.path.lexists(out) and any(out.iterdir()):
        if not force:  # appeared meanwhile
            raise ConfigError(f"{out}: already exists; choose another --out or use --force")
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        try:
            os.replace(staging, out)
        except BaseException:
            os.replace(trash / out.name, out)
            shutil.rmtree(trash, ignore_errors=True)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


def _build(
    root: Path,
    stores: Sequence[str],
    hosts: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    days: int,
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    w = _Writer(root)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now, days)
    _key_and_certificate(w, (CA_KEY, CA_CERT), ca_key, ca_cert, kind="ca", owner="ca")

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(server_key, ca_key, ca_cert, hosts, ips, now, days)
    _key_and_certificate(
        w, (SERVER_KEY, SERVER_CERT), server_key, server_cert, kind="tls", owner="superlink",
        sans={"dns": list(hosts), "ip": [str(ip) for ip in ips]},
    )  # fmt: skip

    for store in stores:
        owner = f"store:{store}"
        key_rel, pub_rel, _, _ = store_files(store)
        node_key = ec.generate_private_key(ec.SECP256R1())
        node_pub = node_key.public_key()
        w.file(
            key_rel,
            _ssh_private(node_key),
            kind="supernode-auth-key",
            owner=owner,
            secret=True,
            algorithm="ECDSA P-256 (OpenSSH)",
            public_key=node_pub,
        )
        w.file(
            pub_rel,
            _ssh_public(node_pub, f"fedcrm-{store}"),
            kind="supernode-auth-public-key",
            owner=owner,
            secret=False,
            algorithm="ECDSA P-256 (OpenSSH)",
            public_key=node_pub,
        )
        _audit_pair(w, f"stores/{store}", owner)

    _audit_pair(w, "coordinator", "coordinator")

    inventory = _inventory(w.entries, stores, hosts, ips, days, now)
    w.raw(README_NAME, _readme(stores, hosts, ips).encode("utf-8"), secret=False)
    data = json.dumps(inventory, indent=2, sort_keys=False).encode("utf-8") + b"\n"
    w.raw(INVENTORY_NAME, data, secret=False)


def _cert_facts(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "certificate_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _inventory(
    entries: Sequence[_Entry],
    stores: Sequence[str],
    hosts: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    days: int,
    now: dt.datetime,
) -> dict[str, Any]:
    parties = ["ca", "superlink", *(f"store:{s}" for s in stores), "coordinator"]
    keep_secret = {p: [e.path for e in entries if e.owner == p and e.secret] for p in parties}
    distribute: dict[str, list[str]] = {
        "ca": [CA_KEY, CA_CERT],
        "superlink": [CA_CERT, SERVER_CERT, SERVER_KEY],
        **{f"store:{s}": [CA_CERT, store_files(s)[0], store_files(s)[2]] for s in stores},
        "coordinator": [
            COORDINATOR_AUDIT_KEY,
            *(store_files(s)[1] for s in stores),
            *(store_files(s)[3] for s in stores),
        ],
    }
    return {
        "format": INVENTORY_FORMAT,
        "version": INVENTORY_VERSION,
        "created_at": _iso(now),
        "validity_days": days,
        "stores": list(stores),
        "superlink": {"hosts": list(hosts), "ips": [str(ip) for ip in ips]},
        "fingerprint": "SHA-256 of the public key's SubjectPublicKeyInfo DER (hex)",
        "files": [e.as_json() for e in entries],
        "keep_secret": keep_secret,
        "distribute": distribute,
    }


def _readme(
    stores: Sequence[str],
    hosts: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> str:
    names = ", ".join([*hosts, *(str(ip) for ip in ips)])
    lines = [
        "fedcrm deployment keys and certificates (written by `fedcrm pki init`)",
        "=" * 70,
        "",
        "Files marked SECRET are private keys (mode 0600): copy each only to the party named,",
        "over a secure channel, and keep it readable by that party's service account only.",
        "inventory.json lists every file with its owner and public-key fingerprint: compare",
        "fingerprints out of band after copying. `fedcrm pki check DIR` re-checks this tree.",
        "",
        "CA (ca/)",
        "  ca/ca.key          SECRET  move OFFLINE after setup; it signs server certificates",
        "  ca/ca.crt                  public; every party gets a copy",
        "",
        f"SuperLink host (certificate valid for: {names})",
        "  ca/ca.crt                  --ssl-ca-certfile",
        "  superlink/server.pem       --ssl-certfile",
        "  superlink/server.key SECRET --ssl-keyfile",
        "  with node authentication: --enable-supernode-auth, then register each store:",
        "    flwr supernode register stores/<store>/supernode.pub <connection> --name <store>",
        "",
        "Each store (SuperNode host)",
        "  ca/ca.crt                         --root-certificates",
        "  stores/<store>/supernode.key SECRET  --auth-supernode-private-key",
        "  stores/<store>/audit.key     SECRET  store audit signing key; install as",
        "        STORE/.fedcrm/keys/audit-store-<store>.key (mode 0600), with audit.pub as",
        "        STORE/.fedcrm/keys/audit-store-<store>.pub",
        "        (<store> must be the store's store_id in STORE/store.json: name the",
        "        stores by their ids in `fedcrm pki init --stores`)",
        "  supernode.pub and audit.pub are public: the coordinator keeps copies.",
        "",
        "Coordinator",
        "  coordinator/audit.key SECRET  coordinator audit signing key; install as",
        "        <audit key dir>/audit-coordinator.key (mode 0600), audit.pub as",
        "        audit-coordinator.pub",
        "  stores/*/audit.pub             trusted keys for `fedcrm audit verify --trusted-key`",
        "",
        "Stores: " + ", ".join(stores),
        "",
    ]
    return "\n".join(lines)


# -- checking -------------------------------------------------------------------------------
def _read_inventory(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / INVENTORY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != INVENTORY_FORMAT:
        return None
    return data


def _load_private(rel: str, raw: bytes) -> Any:
    if rel.endswith("supernode.key"):
        return serialization.load_ssh_private_key(raw, password=None)
    return serialization.load_pem_private_key(raw, password=None)


def _load_public(rel: str, raw: bytes) -> Any:
    if rel.endswith((".crt", ".pem")):
        return x509.load_pem_x509_certificate(raw).public_key()
    if rel.endswith("supernode.pub"):
        return serialization.load_ssh_public_key(raw)
    return serialization.load_pem_public_key(raw)


def verify_pki(
    directory: Path,
    *,
    hosts: Sequence[str] | None = None,
    ips: Sequence[str] | None = None,
) -> list[str]:
    """Problems found in a tree written by :func:`init_pki`; an empty list means it is sound.

    Checks: permissions (directories 0700, private keys 0600 — no group/other bits), every
    inventory file present with the recorded fingerprint, each private key matching its
    public file, the CA certificate being a CA, the SuperLink certificate signed by that CA
    (signature verified with the CA public key), currently valid, for serverAuth, and naming
    ``hosts`` and ``ips`` (default: those in the inventory) in its SANs.
    """
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        return [f"{directory}: not a directory"]
    inventory = _read_inventory(directory)
    if inventory is None:
        return [f"{directory / INVENTORY_NAME}: missing or not a {INVENTORY_FORMAT} inventory"]

    for path in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append(f"{path}: directory mode {oct(mode & 0o777)}; run: chmod 700 {path}")

    publics: dict[str, Any] = {}
    for entry in inventory.get("files", []):
        rel = str(entry.get("path", ""))
        path = directory / rel
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{directory / INVENTORY_NAME}: invalid file path {rel!r}")
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(f"{path}: missing (listed in the inventory)")
            continue
        mode = path.stat().st_mode
        if entry.get("secret") and mode & (stat.S_IRWXG | stat.S_IRWXO):
            problems.append(
                f"{path}: private key has mode {oct(mode & 0o777)}; run: chmod 600 {path}"
            )
        raw = path.read_bytes()
        try:
            if entry.get("secret"):
                public = _load_private(rel, raw).public_key()
            else:
                public = _load_public(rel, raw)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The parser's message could quote key material: never pass it on.
            problems.append(f"{path}: cannot be read as a {entry.get('kind', 'key')} file")
            continue
        fingerprint = public_fingerprint(public)
        if fingerprint != entry.get("fingerprint"):
            problems.append(
                f"{path}: public-key fingerprint {fingerprint[:16]}… differs from the "
                f"inventory's {str(entry.get('fingerprint'))[:16]}…"
            )
        publics[rel] = public

    pairs = [
        (CA_KEY, CA_CERT),
        (SERVER_KEY, SERVER_CERT),
        (COORDINATOR_AUDIT_KEY, COORDINATOR_AUDIT_PUB),
    ]
    for store in inventory.get("stores", []):
        key_rel, pub_rel, audit_rel, audit_pub = store_files(str(store))
        pairs += [(key_rel, pub_rel), (audit_rel, audit_pub)]
    for private_rel, public_rel in pairs:
        if (
            private_rel in publics
            and public_rel in publics
            and public_fingerprint(publics[private_rel]) != public_fingerprint(publics[public_rel])
        ):
            problems.append(
                f"{directory / private_rel}: does not match the public key in "
                f"{directory / public_rel}"
            )

    want_hosts = list(inventory.get("superlink", {}).get("hosts", [])) if hosts is None else hosts
    want_ips = list(inventory.get("superlink", {}).get("ips", [])) if ips is None else ips
    problems += _check_certificates(directory, want_hosts, want_ips)
    return problems


def _check_certificates(directory: Path, hosts: Sequence[str], ips: Sequence[str]) -> list[str]:
    ca_path, server_path = directory / CA_CERT, directory / SERVER_CERT
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        server = x509.load_pem_x509_certificate(server_path.read_bytes())
    except (OSError, ValueError):
        return [f"{ca_path} / {server_path}: cannot read both certificates"]
    problems: list[str] = []
    try:
        if not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            problems.append(f"{ca_path}: not a CA certificate (BasicConstraints CA=false)")
    except x509.ExtensionNotFound:
        problems.append(f"{ca_path}: not a CA certificate (no BasicConstraints)")
    if server.issuer != ca.subject:
        problems.append(f"{server_path}: issued by {server.issuer.rfc4514_string()}, not by the CA")
    ca_public = ca.public_key()
    try:
        if not isinstance(ca_public, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        hash_algorithm = server.signature_hash_algorithm
        if hash_algorithm is None:
            raise InvalidSignature
        ca_public.verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(hash_algorithm))
    except InvalidSignature:
        problems.append(f"{server_path}: signature does not verify with the CA key in {ca_path}")
    now = dt.datetime.now(dt.UTC)
    for path, cert in ((ca_path, ca), (server_path, server)):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            problems.append(
                f"{path}: not valid now (valid {_iso(cert.not_valid_before_utc)} to "
                f"{_iso(cert.not_valid_after_utc)})"
            )
    try:
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        addrs = set(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, addrs = set(), set()
    for host in hosts:
        if host.lower() not in dns:
            problems.append(f"{server_path}: subjectAltName lacks DNS:{host}")
    for ip in ips:
        try:
            addr = ipaddress.ip_address(str(ip))
        except ValueError:
            problems.append(f"invalid IP address {ip!r} to check")
            continue
        if addr not in addrs:
            problems.append(f"{server_path}: subjectAltName lacks IP:{ip}")
    try:
        eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
            problems.append(f"{server_path}: not valid for TLS server authentication (EKU)")
    except x509.ExtensionNotFound:
        problems.append(f"{server_path}: no ExtendedKeyUsage serverAuth")
    try:
        if server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            problems.append(f"{server_path}: the server certificate must not be a CA")
    except x509.ExtensionNotFound:
        pass
    return problems
