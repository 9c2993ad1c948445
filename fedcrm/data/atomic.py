"""All-or-nothing output: build a directory or file beside its target, then move it into place.

A command that fails half-way leaves nothing behind at the target path, and the temporary
sibling is removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedcrm.errors import OutputExistsError

__all__ = ["atomic_directory", "atomic_file"]


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` when the block succeeds.

    An existing non-empty ``target`` is refused unless ``overwrite``; an existing empty
    directory is replaced silently.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not overwrite:
            raise OutputExistsError(f"{target}: already exists; choose another path or use --force")
        if not _is_fedcrm_output(target):
            raise OutputExistsError(
                f"{target}: exists and was not written by fedcrm (no chain.json or store.json); "
                "refusing to replace it even with --force"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)


def _is_fedcrm_output(path: Path) -> bool:
    """A chain or store directory that fedcrm wrote (safe to replace with --force)."""
    if not path.is_dir():
        return False
    if (path / "chain.json").is_file() or (path / "store.json").is_file():
        return True
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    return bool(children) and all(p.is_dir() and (p / "store.json").is_file() for p in children)


@contextmanager
def atomic_file(target: Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s directory; it replaces ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
