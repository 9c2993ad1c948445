"""From the chain-wide noisy totals to what headquarters sees: suppression, tables, files.

Post-processing only (it cannot weaken the stores' DP guarantee): cells whose noisy total is
below ``max(k, 3 × the noise std)`` are suppressed *after* noise (the floor keeps a cell that
is noise alone from being released as a count), derived values (shares, rates, lift, retention) come
from released cells only, and the files say how the numbers were made: ε and δ per store,
the noise per store and in the total, k, which cells were suppressed, and whether the totals
were summed under secure aggregation.

Files per query (``write_release``): ``<query>.csv`` (the table), ``<query>.json``
(:data:`RELEASE_FORMAT`, documented in ``docs/analytics.md``) and ``<query>.png`` (a chart).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.data.atomic import atomic_file

__all__ = [
    "NOISE_FLOOR_STDS",
    "RELEASE_FORMAT",
    "AnalyticsRelease",
    "refusal_document",
    "release",
    "suppression_threshold",
    "total_noise_std",
    "write_refusal",
    "write_release",
]

RELEASE_FORMAT = "fedcrm-analytics-release"
_VERSION = 1
#: A cell is released only if its noisy total is at least this many noise standard deviations
#: (as well as at least k): below it, a "count" may be noise alone (3σ: 0.13% of empty cells).
NOISE_FLOOR_STDS = 3.0


@dataclass(frozen=True)
class AnalyticsRelease:
    """One query's released answer and how it was made."""

    query: Any  # fedcrm.analytics.queries.Query
    totals: np.ndarray  # noisy chain-wide totals, one per cell
    released: np.ndarray  # bool: False = suppressed (noisy total < k)
    k: int
    epsilon: float  # per store
    stores: Mapping[str, Mapping[str, float]]  # store label -> delta, noise_scale, ...
    secure_aggregation: bool
    table: pd.DataFrame = field(repr=False)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise in each total: √(Σ σ_store²)."""
        return total_noise_std(self.stores)

    @property
    def threshold(self) -> float:
        """The suppression threshold applied: max(k, NOISE_FLOOR_STDS · noise std)."""
        return suppression_threshold(self.k, self.noise_std)

    @property
    def suppressed_cells(self) -> list[dict[str, str]]:
        dims = self.query.dimensions
        return [
            dict(zip(dims, cell, strict=True))
            for cell, ok in zip(self.query.cells, self.released, strict=True)
            if not ok
        ]

    def as_document(self) -> dict[str, Any]:
        q = self.query
        cells = []
        for cell, total, ok in zip(q.cells, self.totals, self.released, strict=True):
            cells.append(
                {
                    **dict(zip(q.dimensions, cell, strict=True)),
                    "count": round(float(total)) if ok else None,
                    "suppressed": not bool(ok),
                }
            )
        return {
            "format": RELEASE_FORMAT,
            "version": _VERSION,
            "status": "released",
            "created_at": self.created_at,
            "query": q.name,
            "title": q.title,
            "description": q.description,
            "dimensions": list(q.dimensions),
            "unit": q.unit,
            "mechanism": "discrete Gaussian noise added by each store (OpenDP), totals summed "
            + ("under SecAgg+ secure aggregation" if self.secure_aggregation else "in the clear"),
            "secure_aggregation": self.secure_aggregation,
            "l2_sensitivity": float(q.l2_sensitivity),
            "epsilon_per_store": self.epsilon,
            "k": self.k,
            "noise_floor_stds": NOISE_FLOOR_STDS,
            "threshold": self.threshold,
            "noise_std_total": self.noise_std,
            "stores": {name: dict(numbers) for name, numbers in self.stores.items()},
            "cells": cells,
            "suppressed_cells": self.suppressed_cells,
            "table": json.loads(self.table.to_json(orient="records")),
        }


def release(
    query: Any,
    totals: np.ndarray,
    *,
    k: int,
    epsilon: float,
    stores: Mapping[str, Mapping[str, float]],
    secure_aggregation: bool,
) -> AnalyticsRelease:
    """Suppress cells whose noisy total is below max(k, 3 noise stds); build the table."""
    values = np.asarray(totals, dtype=np.float64)
    if values.shape != (len(query.cells),):
        raise ValueError(f"{len(query.cells)} cells but {values.shape} totals")
    released = values >= suppression_threshold(k, total_noise_std(stores))
    table = query.table(values, released)
    return AnalyticsRelease(
        query, values, released, int(k), float(epsilon), dict(stores), secure_aggregation, table
    )


def total_noise_std(stores: Mapping[str, Mapping[str, float]]) -> float:
    """The noise std of a chain-wide total: √(Σ σ_store²) over the stores' noise scales."""
    return math.sqrt(sum(float(s["noise_scale"]) ** 2 for s in stores.values()))


def suppression_threshold(k: int, noise_std: float) -> float:
    """``max(k, NOISE_FLOOR_STDS · noise_std)``: public numbers only (post-processing)."""
    return max(float(k), NOISE_FLOOR_STDS * float(noise_std))


def refusal_document(
    query: Any, epsilon: float, refusals: Mapping[str, Mapping[str, float]], reason: str
) -> dict[str, Any]:
    """What is written when a query is refused: nothing released, and why (numbers)."""
    return {
        "format": RELEASE_FORMAT,
        "version": _VERSION,
        "status": "refused",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "query": query.name,
        "title": query.title,
        "epsilon_per_store": float(epsilon),
        "reason": reason,
        "stores": {name: dict(numbers) for name, numbers in refusals.items()},
        "cells": [],
    }


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_release(result: AnalyticsRelease, out_dir: Path) -> dict[str, Path]:
    """``<query>.csv``, ``<query>.json`` and ``<query>.png`` in ``out_dir`` (atomically each)."""
    from fedcrm.analytics.charts import draw_release

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = result.query.name
    paths = {
        "csv": out / f"{name}.csv",
        "json": out / f"{name}.json",
        "png": out / f"{name}.png",
    }
    _write_text(paths["csv"], result.table.to_csv(index=False))
    document = result.as_document()
    _write_text(paths["json"], json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    with atomic_file(paths["png"]) as tmp:
        draw_release(result, Path(tmp))
    return paths


def write_refusal(document: Mapping[str, Any], out_dir: Path) -> Path:
    """``<query>.json`` with ``status: refused`` (and no table or chart)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{document['query']}.json"
    _write_text(path, json.dumps(dict(document), indent=2, ensure_ascii=False) + "\n")
    return path
