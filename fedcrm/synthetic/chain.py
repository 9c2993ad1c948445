"""Generate a synthetic retail chain: one store directory per store, ground truth apart.

Layout of ``OUT``::

    OUT/chain.json              parameters, seed, generator version, per-store summary
    OUT/<store_id>/             a store directory (see fedcrm.data.layout), one per store
    OUT/_ground_truth/          hidden parameters, for evaluation only (see .truth)

The same :class:`ChainParams` always give identical tables: every random draw comes from a
PCG64 generator keyed by the seed and, for store-level draws, the store's index.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np

from fedcrm import __version__
from fedcrm.data.atomic import atomic_directory
from fedcrm.data.store import TableFormat, write_store
from fedcrm.errors import ConfigError
from fedcrm.synthetic.calendar import SPRING_FESTIVAL, build_calendar
from fedcrm.synthetic.catalog import CATEGORIES, build_catalog
from fedcrm.synthetic.formats import plan_stores
from fedcrm.synthetic.population import build_population
from fedcrm.synthetic.sampling import stream
from fedcrm.synthetic.store_builder import build_store
from fedcrm.synthetic.truth import GROUND_TRUTH_DIR, write_ground_truth

__all__ = [
    "CHAIN_MANIFEST",
    "GENERATOR_VERSION",
    "ChainParams",
    "ChainSummary",
    "StoreSummary",
    "generate_chain",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
CHAIN_MANIFEST = "chain.json"
CHAIN_STREAM = 0  # first key of chain-level generators (store-level ones use 1)
_CATALOG, _POPULATION = 0, 1
MAX_STORES = 500
MAX_CUSTOMERS = 5_000_000  # over the whole chain
EARLIEST_START = date(2000, 1, 1)
LATEST_END = date(max(SPRING_FESTIVAL) + 1, 1, 1)
MIN_DAYS = 7
FORMATS: tuple[str, ...] = ("parquet", "csv")

ProgressCallback = Callable[[str, int, int], None]


def _whole(name: str, value: object, low: int, high: int) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not low <= value <= high
    ):
        raise ConfigError(f"{name} must be a whole number from {low:,} to {high:,} (got {value!r})")


def _day(name: str, value: object) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2023-01-01 (got {value!r})") from None


@dataclass(frozen=True)
class ChainParams:
    """What to generate; validated on construction (:class:`ConfigError` says what is wrong).

    ``customers_per_store`` is the chain average (formats scale it, see
    :mod:`.formats`); history covers ``[start, end)``: ``end`` itself is excluded.
    """

    stores: int = 8
    customers_per_store: int = 2000
    seed: int = 7
    start: str = "2023-01-01"
    end: str = "2026-01-01"
    fmt: TableFormat = "parquet"

    def __post_init__(self) -> None:
        _whole("stores", self.stores, 1, MAX_STORES)
        _whole("customers_per_store", self.customers_per_store, 1, MAX_CUSTOMERS)
        if self.stores * self.customers_per_store > MAX_CUSTOMERS:
            raise ConfigError(
                f"stores × customers_per_store = {self.stores * self.customers_per_store:,} "
                f"customers; the generator allows at most {MAX_CUSTOMERS:,}: lower either"
            )
        _whole("seed", self.seed, 0, 2**63 - 1)
        start, end = _day("start", self.start), _day("end", self.end)
        if start < EARLIEST_START or end > LATEST_END:
            raise ConfigError(
                f"history must lie within {EARLIEST_START} .. {LATEST_END} (the retail calendar "
                f"covers those years); got start={start}, end={end}"
            )
        if (end - start).days < MIN_DAYS:
            raise ConfigError(
                f"end must be at least {MIN_DAYS} days after start (got {start} .. {end})"
            )
        if self.fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {self.fmt!r})")
        object.__setattr__(self, "start", start.isoformat())
        object.__setattr__(self, "end", end.isoformat())


@dataclass(frozen=True)
class StoreSummary:
    store_id: str
    format: str
    customers: int
    transactions: int
    interactions: int
    consent_events: int

    @property
    def rows(self) -> int:
        return self.customers + self.transactions + self.interactions + self.consent_events


@dataclass(frozen=True)
class ChainSummary:
    stores: tuple[StoreSummary, ...]
    total_rows: int  # rows of every store table, ground truth excluded
    seconds: float
    path: Path

    @property
    def transactions(self) -> int:
        return sum(s.transactions for s in self.stores)


def _chain_manifest(params: ChainParams, stores: list[StoreSummary]) -> dict[str, object]:
    return {
        "generator": "fedcrm.synthetic",
        "generator_version": GENERATOR_VERSION,
        "fedcrm_version": __version__,
        "params": asdict(params),
        "seed": params.seed,
        "window": {"start": params.start, "end": params.end, "end_exclusive": True},
        "ground_truth": GROUND_TRUTH_DIR,
        # The chain's product taxonomy: master data every store knows, not personal data.
        # Stores build their shared category vocabulary and feature columns from it.
        "categories": sorted(c.name for c in CATEGORIES),
        "stores": [asdict(s) for s in stores],
        "total_rows": sum(s.rows for s in stores),
    }


def chain_categories(data_dir: Path) -> tuple[str, ...]:
    """The product taxonomy a chain directory's ``chain.json`` declares (empty if none)."""
    manifest = Path(data_dir) / CHAIN_MANIFEST
    if not manifest.is_file():
        return ()
    try:
        categories = json.loads(manifest.read_text(encoding="utf-8")).get("categories")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ConfigError(f"{manifest}: not a valid chain manifest ({exc})") from None
    return tuple(categories or ())


def generate_chain(
    out_dir: Path,
    params: ChainParams,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> ChainSummary:
    """Write the chain described by ``params`` to ``out_dir``, all or nothing.

    Raises :class:`fedcrm.errors.OutputExistsError` when ``out_dir`` exists, is not empty
    and ``overwrite`` is false. ``progress(stage, done, total)`` is called as stores finish.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    if np.datetime64(params.end, "D") > np.datetime64(date.today(), "D") + 1:
        # Store data must never hold future timestamps: the validator would refuse it.
        raise ConfigError(
            f"--end {params.end} lies in the future; history must end by tomorrow "
            f"({np.datetime64(date.today(), 'D') + 1})"
        )
    report = progress or (lambda stage, done, total: None)
    calendar = build_calendar(params.start, params.end)
    catalog = build_catalog(stream(params.seed, CHAIN_STREAM, _CATALOG))
    specs = plan_stores(params.stores, params.customers_per_store)
    population = build_population(specs, params.end, stream(params.seed, CHAIN_STREAM, _POPULATION))
    summaries: list[StoreSummary] = []
    truths = []
    with atomic_directory(out_dir, overwrite=overwrite) as staging:
        report("stores", 0, len(specs))
        for spec in specs:
            built = build_store(spec, population, calendar, catalog, params.seed)
            manifest = {
                "name": spec.name,
                "format": spec.format.name,
                "city": spec.city.name,
                "source": "fedcrm generate",
                "generator_version": GENERATOR_VERSION,
                "seed": params.seed,
                "store_index": spec.index,
                "window": {"start": params.start, "end": params.end},
            }
            write_store(built.data, staging / spec.store_id, fmt=params.fmt, manifest=manifest)
            data = built.data
            summary = StoreSummary(
                spec.store_id, spec.format.name, len(data.customers), len(data.transactions),
                len(data.interactions), len(data.consents),
            )  # fmt: skip
            summaries.append(summary)
            truths.append(built.truth)
            logger.info("generated %s: %d customers, %d transactions", spec.store_id,
                        summary.customers, summary.transactions)  # fmt: skip
            report("stores", len(summaries), len(specs))
        write_ground_truth(staging / GROUND_TRUTH_DIR, truths, catalog, calendar)
        manifest_text = json.dumps(_chain_manifest(params, summaries), indent=2, ensure_ascii=False)
        (staging / CHAIN_MANIFEST).write_text(manifest_text + "\n", encoding="utf-8")
    return ChainSummary(
        stores=tuple(summaries),
        total_rows=sum(s.rows for s in summaries),
        seconds=time.perf_counter() - began,
        path=out_dir,
    )
