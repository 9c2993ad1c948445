"""Where things live on disk: a store directory and a chain (data) directory.

A store directory::

    STORE/
      store.json             manifest: store_id, name, format, provenance (optional)
      customers.{parquet,csv}
      transactions.{parquet,csv}
      interactions.{parquet,csv}   optional
      consents.{parquet,csv}
      .fedcrm/               store-private state; never leaves the store
        keys/                pseudonym (and optional linkage) keys
        pseudonym_map.parquet  pseudonym -> store-local customer id, for local scoring

A chain (data) directory holds one sub-directory per store; sub-directories whose name
starts with ``_`` (such as ``_ground_truth``) or ``.`` are not stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcrm.data.contract import TABLES
from fedcrm.errors import DataError

__all__ = [
    "MANIFEST_NAME",
    "PRIVATE_DIR_NAME",
    "TABLE_SUFFIXES",
    "StoreLayout",
    "discover_stores",
    "is_store_dir",
]

MANIFEST_NAME = "store.json"
PRIVATE_DIR_NAME = ".fedcrm"
TABLE_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")


@dataclass(frozen=True)
class StoreLayout:
    """Paths inside one store directory."""

    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def private_dir(self) -> Path:
        return self.root / PRIVATE_DIR_NAME

    @property
    def keys_dir(self) -> Path:
        return self.private_dir / "keys"

    @property
    def pseudonym_map_path(self) -> Path:
        return self.private_dir / "pseudonym_map.parquet"

    def table_path(self, table: str) -> Path | None:
        """The file holding ``table``, or None when absent.

        Raises :class:`DataError` when the table exists in two formats (ambiguous).
        """
        if table not in TABLES:
            raise KeyError(f"unknown table {table!r}; valid: {', '.join(TABLES)}")
        found = [
            self.root / f"{table}{s}"
            for s in TABLE_SUFFIXES
            if (self.root / f"{table}{s}").is_file()
        ]
        if len(found) > 1:
            names = " and ".join(p.name for p in found)
            raise DataError(f"{self.root}: table '{table}' exists twice ({names}); keep one")
        return found[0] if found else None

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            return {}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.manifest_path}: not valid UTF-8 JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError(f"{self.manifest_path}: expected a JSON object")
        return data

    @property
    def store_id(self) -> str:
        """The manifest's store_id, or the directory name."""
        return str(self.read_manifest().get("store_id") or self.root.name)


def is_store_dir(path: Path) -> bool:
    """True when ``path`` holds a customers or transactions table."""
    return path.is_dir() and any(
        (path / f"{t}{s}").is_file() for t in ("customers", "transactions") for s in TABLE_SUFFIXES
    )


def discover_stores(path: Path) -> list[Path]:
    """Store directories at ``path``: itself if it is a store, else its store sub-directories.

    Raises :class:`DataError` when ``path`` is missing or holds no store.
    """
    if not path.exists():
        raise DataError(f"{path}: no such directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    if is_store_dir(path):
        return [path]
    stores = sorted(
        p for p in path.iterdir() if not p.name.startswith(("_", ".")) and is_store_dir(p)
    )
    if not stores:
        raise DataError(
            f"{path}: no store directories found (a store holds customers and transactions tables)"
        )
    return stores
