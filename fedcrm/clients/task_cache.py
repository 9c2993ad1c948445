"""A task's prepared arrays, kept on the store's own disk for the rest of a run.

On Flower's deployment engine every message starts a fresh ClientApp process, so without this
each message of a round (training, evaluation, the end-of-task report) would load the store's
tables, filter consent, de-identify and build features again, and record its preparation in
the audit log and the participation log each time. The first message of a task prepares and
writes the result here; later messages of the same run read it back.

What is kept, and where: the task's de-identified model inputs and labels (numeric arrays
only) in ``STORE/.fedcrm/cache/run-<run id>/<plan digest>.npz``, mode 0600 in a 0700
directory — the store's private directory, beside its keys and pseudonym map; nothing of it
leaves the store. Read back with ``allow_pickle=False`` (no code runs on load). A task's file
is removed when the task reports at its end, and any other run's directory when a new one is
written.

Limits: within one run the arrays are the data as prepared at the task's first message — a
consent withdrawal or erasure request arriving mid-run takes effect at the next run (as with
the simulation's in-memory reuse). A crashed run's directory stays until the store's next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedcrm.data.layout import StoreLayout

__all__ = ["discard_arrays", "load_arrays", "save_arrays"]

logger = logging.getLogger(__name__)

CACHE_DIR_NAME = "cache"
_RUN_DIR = re.compile(r"run-\d+")
_DIGEST = re.compile(r"[0-9a-f]{8,64}")


def _run_dir(layout: StoreLayout, run_id: int) -> Path:
    return layout.private_dir / CACHE_DIR_NAME / f"run-{int(run_id)}"


def _path(layout: StoreLayout, run_id: int, digest: str) -> Path:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a plan digest: {digest!r}")
    return _run_dir(layout, run_id) / f"{digest[:32]}.npz"


def load_arrays(layout: StoreLayout, run_id: int, digest: str) -> dict[str, np.ndarray] | None:
    """The arrays saved for (run, plan), or None when there are none (or they are unreadable:
    the caller prepares again)."""
    path = _path(layout, run_id, digest)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        logger.warning("task cache %s is unreadable (%s); preparing again", path.name, exc)
        return None


def save_arrays(
    layout: StoreLayout, run_id: int, digest: str, arrays: Mapping[str, np.ndarray]
) -> None:
    """Write the arrays for (run, plan) atomically (0600) and drop other runs' caches."""
    path = _path(layout, run_id, digest)
    root = path.parent.parent
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in root.iterdir():
        if stale != path.parent and _RUN_DIR.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".partial-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def discard_arrays(layout: StoreLayout, run_id: int, digest: str) -> None:
    """Remove the arrays of (run, plan) — the task has ended — and the run's directory once
    it is empty."""
    path = _path(layout, run_id, digest)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # other tasks' files, or already gone
        path.parent.rmdir()
