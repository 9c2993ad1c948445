"""Audit signing keys: one Ed25519 key per log writer, held by that writer.

Files, in the key directory the writer uses (a store: ``STORE/.fedcrm/keys/``; the
coordinator: a directory its operator chooses, outside any run directory)::

    audit-<writer>.key   the private key (PKCS#8 PEM, unencrypted), mode 0600 — secret
    audit-<writer>.pub   the public key (SubjectPublicKeyInfo PEM), mode 0644 — public

The directory is created with mode 0700. A key is created once, atomically and without ever
replacing an existing key (two processes racing to create it end up with the same key). A key
file that cannot be read, is not an Ed25519 key, or disagrees with its public key is an error
(:class:`~fedcrm.errors.PrivacyError` naming the file, never the key bytes): the writer stops
rather than start a new key, since a new key would make its earlier log unverifiable against
the references other parties hold.

A key is known publicly by its ``key_id``: the first 16 hex characters of the SHA-256 of the
32-byte raw public key (``openssl pkey -pubin -outform DER | tail -c 32 | sha256sum``). The
private key never appears in ``repr``, ``str``, logs or error messages.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcrm.data.atomic import atomic_file
from fedcrm.errors import ConfigError, PrivacyError

__all__ = [
    "AuditKey",
    "check_writer",
    "load_public_key",
    "private_key_path",
    "public_key_id",
    "public_key_path",
]

logger = logging.getLogger(__name__)

_WRITER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_writer(writer: str) -> str:
    """``writer`` if it is a valid writer name (it names files), else :class:`ConfigError`.

    A writer name is 1-64 characters of ``A-Z a-z 0-9 . _ -``, starting with a letter or a
    digit, such as ``coordinator`` or ``store-s01``. Use pseudonymous store ids, never a
    person's name.
    """
    if not isinstance(writer, str) or not _WRITER.fullmatch(writer):
        raise ConfigError(
            f"invalid audit writer name {writer!r}: use 1-64 characters of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit (e.g. 'coordinator', 'store-s01')"
        )
    return writer


def private_key_path(directory: Path, writer: str) -> Path:
    return Path(directory) / f"audit-{check_writer(writer)}.key"


def public_key_path(directory: Path, writer: str) -> Path:
    return Path(directory) / f"audit-{check_writer(writer)}.pub"


def public_key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex characters of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(frozen=True, repr=False)
class AuditKey:
    """An Ed25519 signing key held by one writer. ``repr`` shows the writer and key id only."""

    writer: str
    _private: Ed25519PrivateKey = field(repr=False)
    directory: Path | None = None

    def __post_init__(self) -> None:
        check_writer(self.writer)
        if not isinstance(self._private, Ed25519PrivateKey):
            raise TypeError("an AuditKey holds an Ed25519 private key")

    @classmethod
    def generate(cls, writer: str) -> AuditKey:
        """A fresh key kept in memory only (tests, or a caller that stores it elsewhere)."""
        return cls(check_writer(writer), Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, directory: Path, writer: str) -> AuditKey:
        """The writer's key from ``directory``, created there (0600, directory 0700) if absent.

        Raises :class:`PrivacyError` when a key file is unreadable, not an Ed25519 key, or
        its public key file holds another key; :class:`ConfigError` for an invalid writer.
        """
        directory = Path(directory)
        path = private_key_path(directory, writer)
        if os.path.lexists(path):
            private = _read_private(path)
        else:
            _private_dir(directory)
            private = _create_private(path)
        key = cls(writer, private, directory)
        key._ensure_public_file()
        return key

    # -- public identity -----------------------------------------------------------------
    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private.public_key()

    @property
    def key_id(self) -> str:
        return public_key_id(self.public_key)

    def public_pem(self) -> str:
        """The public key as SubjectPublicKeyInfo PEM text."""
        return _public_pem(self.public_key)

    @property
    def private_path(self) -> Path | None:
        return None if self.directory is None else private_key_path(self.directory, self.writer)

    @property
    def public_path(self) -> Path | None:
        return None if self.directory is None else public_key_path(self.directory, self.writer)

    # -- signing -------------------------------------------------------------------------
    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(bytes(data))

    def __repr__(self) -> str:
        return f"AuditKey(writer={self.writer!r}, key_id=<{self.key_id}>)"

    __str__ = __repr__

    def _ensure_public_file(self) -> None:
        path = self.public_path
        if path is None:
            return
        pem = self.public_pem()
        if os.path.lexists(path):
            try:
                found = load_public_key(path)
            except PrivacyError as exc:
                raise PrivacyError(
                    f"{exc}; it should hold the public half of {self.private_path}: "
                    "delete it to have it written again"
                ) from None
            if public_key_id(found) != self.key_id:
                raise PrivacyError(
                    f"{path}: holds public key {public_key_id(found)}, but the private key "
                    f"{self.private_path} is key {self.key_id}; one of them was replaced. "
                    "Restore the original pair from backup (a new key cannot continue a log)"
                )
            return
        with atomic_file(path, mode=0o644) as tmp:
            tmp.write_text(pem, encoding="ascii")


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; :class:`PrivacyError` naming the file if not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PrivacyError(f"{path}: cannot read the audit public key ({exc.strerror})") from exc
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PrivacyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PrivacyError(f"{path}: not an Ed25519 public key")
    return key


def _read_private(path: Path) -> Ed25519PrivateKey:
    from fedcrm.privacy.keys import read_secret_file

    raw = read_secret_file(path, "audit signing key")
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message could quote key material: never pass it on.
        raise PrivacyError(
            f"{path}: the audit signing key is malformed (expected an unencrypted PKCS#8 PEM "
            "Ed25519 key). Restore it from backup: a new key cannot continue the log"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PrivacyError(f"{path}: the audit signing key is not an Ed25519 key")
    return key


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def _create_private(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, 0o600)
        try:
            os.link(name, path)  # atomic and never replaces: a racing creator's key wins
        except FileExistsError:
            return _read_private(path)
    finally:
        Path(name).unlink(missing_ok=True)
    logger.info("created audit signing key %s at %s", public_key_id(key.public_key()), path)
    return key
