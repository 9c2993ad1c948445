"""Key custody at the store: the pseudonym key, the optional linkage key, the pseudonym map.

Files (all under ``STORE/.fedcrm/``, which never leaves the store)::

    keys/pseudonym.key       32 random bytes (os.urandom), mode 0600, created on first use
    pseudonym_map.parquet    pseudonym → customer_id (+ basis), mode 0600, for local scoring

The **pseudonym key** is created once, atomically and without ever replacing an existing key
(two processes racing to create it end up with the same key). Losing or deleting it changes every
pseudonym of the store; back it up like any other secret. The **linkage key** is issued by the
federation and read from the path it gives; it is never created here, so linkage cannot be
switched on by accident. Key files hold 32 raw bytes or 64 hexadecimal characters.

Keys never appear in ``repr``, ``str`` or logs: :class:`StoreKeys` shows only a fingerprint
(the first 16 hex characters of a domain-separated SHA-256 of the key), which is safe to record
in audit reports to show which key was used.

Holding the key and the map, the store can re-identify every pseudonym: the data it releases is
de-identified, not anonymised (PIPL Art. 73; GDPR recital 26).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import StoreLayout
from fedcrm.errors import PrivacyError, PrivacyWarning
from fedcrm.privacy.pseudonyms import PseudonymMap

__all__ = [
    "KEY_BYTES",
    "PSEUDONYM_KEY_NAME",
    "StoreKeys",
    "key_fingerprint",
    "load_pseudonym_map",
    "read_secret_file",
    "write_pseudonym_map",
]

logger = logging.getLogger(__name__)

KEY_BYTES = 32
PSEUDONYM_KEY_NAME = "pseudonym.key"


def key_fingerprint(key: bytes) -> str:
    """A public identifier of a key (16 hex characters); it does not reveal the key."""
    return hashlib.sha256(b"fedcrm.key-fingerprint.v1\x00" + key).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class StoreKeys:
    """A store's secret keys. ``repr`` shows fingerprints only."""

    pseudonym_key: bytes = field(repr=False)
    linkage_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.pseudonym_key, bytes) or len(self.pseudonym_key) != KEY_BYTES:
            raise ValueError(f"pseudonym_key must be {KEY_BYTES} bytes")
        if self.linkage_key is not None:
            if not isinstance(self.linkage_key, bytes) or len(self.linkage_key) != KEY_BYTES:
                raise ValueError(f"linkage_key must be {KEY_BYTES} bytes")
            if self.linkage_key == self.pseudonym_key:
                raise PrivacyError(
                    "the linkage key equals the store's pseudonym key; the store key must stay "
                    "private to the store: use the key file the federation issued"
                )

    @property
    def pseudonym_key_id(self) -> str:
        return key_fingerprint(self.pseudonym_key)

    @property
    def linkage_key_id(self) -> str | None:
        return None if self.linkage_key is None else key_fingerprint(self.linkage_key)

    def __repr__(self) -> str:
        link = "off" if self.linkage_key_id is None else f"<{self.linkage_key_id}>"
        return f"StoreKeys(pseudonym_key=<{self.pseudonym_key_id}>, linkage_key={link})"

    __str__ = __repr__

    @classmethod
    def load_or_create(cls, layout: StoreLayout, linkage_key_path: Path | None = None) -> StoreKeys:
        """The store's keys, creating the pseudonym key on first use.

        Raises :class:`PrivacyError` when a key file is unreadable or malformed, or when
        ``linkage_key_path`` is given but missing (the linkage key is never created).
        """
        path = layout.keys_dir / PSEUDONYM_KEY_NAME
        if path.exists():
            key = _read_key(path, "pseudonym key")
        else:
            _private_dirs(layout, layout.keys_dir)
            key = _create_key(path)
        linkage = None
        if linkage_key_path is not None:
            linkage_path = Path(linkage_key_path)
            if not linkage_path.is_file():
                raise PrivacyError(
                    f"{linkage_path}: no linkage key there; the federation issues it "
                    "(fedcrm never creates one); omit it to keep linkage off"
                )
            linkage = _read_key(linkage_path, "linkage key")
        return cls(key, linkage)


def read_secret_file(path: Path, what: str) -> bytes:
    """The bytes of a secret file (fail closed: PrivacyError naming the file); a
    :class:`PrivacyWarning` when other users can access it."""
    try:
        raw = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise PrivacyError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{path}: the {what} is accessible to other users (mode {oct(mode & 0o777)}); "
            f"run: chmod 600 {path}",
            PrivacyWarning,
            stacklevel=4,
        )
    return raw


def _read_key(path: Path, what: str) -> bytes:
    raw = read_secret_file(path, what)
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise PrivacyError(
        f"{path}: the {what} is malformed ({len(raw)} bytes; expected {KEY_BYTES} raw bytes or "
        f"{2 * KEY_BYTES} hex characters). Restore it from backup: a new key changes every "
        "pseudonym"
    )


def _private_dirs(layout: StoreLayout, *extra: Path) -> None:
    for d in (layout.private_dir, *extra):
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)


def _create_key(path: Path) -> bytes:
    key = os.urandom(KEY_BYTES)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, 0o600)
        try:
            os.link(name, path)  # atomic and never replaces: a racing creator's key wins
        except FileExistsError:
            return _read_key(path, "pseudonym key")
    finally:
        Path(name).unlink(missing_ok=True)
    logger.info("created pseudonym key %s at %s", key_fingerprint(key), path)
    return key


def write_pseudonym_map(layout: StoreLayout, mapping: PseudonymMap | pd.DataFrame) -> Path:
    """Persist the pseudonym map atomically (mode 0600) inside the store; returns its path."""
    pmap = mapping if isinstance(mapping, PseudonymMap) else PseudonymMap(mapping)
    _private_dirs(layout)
    target = layout.pseudonym_map_path
    with atomic_file(target, mode=0o600) as tmp:
        pmap.frame.to_parquet(tmp, index=False)
    logger.info("wrote pseudonym map (%d pseudonyms) to %s", len(pmap), target)
    return target


def load_pseudonym_map(layout: StoreLayout) -> PseudonymMap:
    """The store's persisted pseudonym map; :class:`PrivacyError` when there is none."""
    path = layout.pseudonym_map_path
    if not path.is_file():
        raise PrivacyError(f"{path}: no pseudonym map; de-identify the store and write it first")
    frame = pd.read_parquet(path)
    return PseudonymMap(frame.astype({c: "str" for c in frame.columns}))
