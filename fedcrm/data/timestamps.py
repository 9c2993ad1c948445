"""Reading the timestamps of real exports: an explicit format, or one detected format.

With an explicit format (``--date-format``, Python ``strptime`` directives, or ``ISO8601``)
every value must match it exactly. Without one, each format of :data:`CANDIDATE_FORMATS` is
tried and the one that parses every non-empty value is used; when several do and they read
some value differently (``05/03/2024``: 5 March or 3 May?) the import refuses and asks for
``--date-format`` instead of guessing. Values with a UTC offset keep their wall-clock time and
drop the zone (``2024-05-01T07:00:00+08:00`` -> ``2024-05-01 07:00``), since the data contract
holds naive store-local time; they are not converted to UTC. Values are parsed once per distinct
value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedcrm.data.coercion import coerce_column
from fedcrm.data.contract import ColumnKind
from fedcrm.data.findings import Finding
from fedcrm.errors import ConfigError, DataValidationError

__all__ = [
    "CANDIDATE_FORMATS",
    "ISO8601",
    "NATIVE",
    "ParsedTimestamps",
    "parse_timestamp_column",
    "parse_timestamps",
]

#: The "format" of a column that already holds timestamps (Parquet).
NATIVE = "native timestamps"

#: pandas' ISO 8601 parser: dates with or without time, ``T`` or space, offsets, fractions.
ISO8601 = "ISO8601"

#: Formats tried, in order of preference, when no ``--date-format`` is given.
CANDIDATE_FORMATS: tuple[str, ...] = (
    ISO8601,
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y %I:%M:%S %p",
    "%d/%m/%Y %I:%M %p",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%m-%Y %H:%M:%S",
    "%d-%m-%Y %H:%M",
    "%d-%m-%Y",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日",
)

_SAMPLE = 2_000  # distinct values tried with every candidate before full parses
_SPLIT_FROM = 5_000  # distinct values from which dates and times are parsed apart
_TIME_DIRECTIVE = re.compile(r"%[HIMSfpz]")
_TIME_ONLY = re.compile(r"^(?:%[HIMSfp]|[:.\s])+$")


@dataclass(frozen=True)
class ParsedTimestamps:
    """Parsed values (``datetime64[ns]``, NaT where missing or unparsed) and the format used.

    ``missing`` marks empty values, ``invalid`` values present but not matching ``format``;
    ``detected`` tells whether the format was detected rather than given.
    """

    values: pd.Series
    missing: np.ndarray
    invalid: np.ndarray
    format: str | None
    detected: bool


def _parse(values: pd.Index, fmt: str) -> np.ndarray:
    """``values`` (distinct, non-empty) parsed with ``fmt`` as ``datetime64[ns]``; NaT where
    they do not match."""
    halves = _date_time_halves(fmt) if len(values) >= _SPLIT_FROM else None
    if halves is not None:
        return _parse_apart(values, *halves)
    return _parse_wall_clock(values, fmt, split=True)


#: The trailing UTC offset of a value (or what looks like one); groups values for parsing.
_OFFSET_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$")


def _parse_wall_clock(values: pd.Index, fmt: str, *, split: bool) -> np.ndarray:
    """``values`` parsed with ``fmt``; values with a UTC offset keep their wall-clock time
    (the zone is dropped, not converted). Mixed offsets are parsed one offset at a time."""
    try:
        parsed = pd.to_datetime(values, format=fmt, errors="coerce")
    except ValueError:  # mixed offsets, or naive and offset values mixed
        if len(values) <= 1:
            return np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
        out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
        if split:
            keys = values.str.extract(f"({_OFFSET_SUFFIX.pattern})", expand=False)
            codes, _ = pd.factorize(keys.fillna(""))
            groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
            if len(groups) == 1:  # grouping did not separate them: one value at a time
                groups = [np.array([i]) for i in range(len(values))]
        else:
            groups = [np.array([i]) for i in range(len(values))]
        for idx in groups:
            out[idx] = _parse_wall_clock(values[idx], fmt, split=False)
        return out
    if getattr(parsed, "tz", None) is not None:
        parsed = parsed.tz_localize(None)
    return np.asarray(parsed, dtype="datetime64[ns]")


def _date_time_halves(fmt: str) -> tuple[str, str] | None:
    """``("%d/%m/%Y", "%H:%M")`` for ``"%d/%m/%Y %H:%M"``: a date-only format, whitespace,
    then a time-only format; None for formats that cannot be parsed in halves."""
    if fmt == ISO8601 or "%%" in fmt:
        return None
    parts = fmt.split(None, 1)
    if len(parts) != 2 or _TIME_DIRECTIVE.search(parts[0]) or not _TIME_ONLY.match(parts[1]):
        return None
    return parts[0], parts[1]


def _parse_apart(values: pd.Index, date_fmt: str, time_fmt: str) -> np.ndarray:
    """Parse the date and time halves separately, each once per distinct half.

    Python's ``strptime`` (which pandas follows) is slow, and a million distinct timestamps
    hold only a few thousand distinct dates and times. Equivalent to parsing whole values:
    the halves share no directive, and whitespace in a format matches any run of whitespace.
    """
    lists = pc.utf8_split_whitespace(pa.array(values.array), max_splits=1)
    offsets = np.asarray(lists.offsets)
    two = np.diff(offsets) == 2
    starts = pa.array(offsets[:-1][two])
    flat = lists.flatten()
    dates = _parse_distinct(flat.take(starts).to_pandas(), date_fmt)
    times = _parse_distinct(flat.take(pc.add(starts, 1)).to_pandas(), time_fmt)
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[two] = dates + (times - np.datetime64("1900-01-01", "ns"))
    return out


def _parse_distinct(text: pd.Series, fmt: str) -> np.ndarray:
    codes, uniques = pd.factorize(text)
    return _parse(pd.Index(uniques, dtype="str"), fmt)[codes]


def parse_timestamps(
    text: pd.Series, *, date_format: str | None, file: str, field: str
) -> ParsedTimestamps:
    """Parse ``text`` (stripped strings, NaN for empty) with ``date_format`` or a detected one.

    Raises :class:`DataValidationError` (a file-level finding) when detection is ambiguous
    or no candidate parses any value, and :class:`ConfigError` for an unusable format.
    """
    text = text.reset_index(drop=True)
    codes, uniques = pd.factorize(text)
    uniques = pd.Index(uniques, dtype="str")
    if date_format is not None:
        try:
            parsed = _parse(uniques, date_format)
        except ValueError as exc:
            raise ConfigError(f"--date-format {date_format!r} is not usable: {exc}") from exc
        fmt, detected = date_format, False
    elif len(uniques) == 0:
        parsed, fmt, detected = np.empty(0, dtype="datetime64[ns]"), None, True
    else:
        fmt, parsed = _detect(uniques, codes, file, field)
        detected = True
    missing = codes < 0
    taken = np.full(len(codes), np.datetime64("NaT"), dtype="datetime64[ns]")
    taken[~missing] = parsed[codes[~missing]]
    values = pd.Series(taken, dtype="datetime64[ns]")
    return ParsedTimestamps(values, missing, ~missing & np.isnat(taken), fmt, detected)


def parse_timestamp_column(
    raw: pd.Series, *, date_format: str | None, file: str, field: str
) -> ParsedTimestamps:
    """Like :func:`parse_timestamps` for a raw column: text (stripped here) or timestamps."""
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        typed = coerce_column(raw, ColumnKind.TIMESTAMP)
        return ParsedTimestamps(typed.values, typed.missing, typed.invalid, NATIVE, False)
    text = coerce_column(raw, ColumnKind.TEXT).values
    return parse_timestamps(text, date_format=date_format, file=file, field=field)


def _detect(uniques: pd.Index, codes: np.ndarray, file: str, field: str) -> tuple[str, np.ndarray]:
    sample = uniques[:_SAMPLE]
    sample_failures = {fmt: int(np.isnat(_parse(sample, fmt)).sum()) for fmt in CANDIDATE_FORMATS}
    fewest = min(sample_failures.values())
    if fewest == len(sample):
        shown = ", ".join(CANDIDATE_FORMATS[:6])
        raise DataValidationError(
            [
                Finding(
                    file,
                    None,
                    field,
                    f"no known date format fits these values (tried {len(CANDIDATE_FORMATS)}, "
                    f"e.g. {shown}); pass --date-format with the file's strptime format",
                )
            ]
        )
    contenders = [f for f in CANDIDATE_FORMATS if sample_failures[f] == fewest]
    full = {fmt: _parse(uniques, fmt) for fmt in contenders}
    failures = {fmt: int(np.isnat(p).sum()) for fmt, p in full.items()}
    least = min(failures.values())
    best = [f for f in contenders if failures[f] == least]
    chosen = best[0]
    for other in best[1:]:
        a, b = full[chosen], full[other]
        differs = (a != b) & ~(np.isnat(a) & np.isnat(b))
        if differs.any():
            pos = int(np.flatnonzero(differs)[0])
            row = int(np.flatnonzero(codes == pos)[0]) + 1
            raise DataValidationError(
                [
                    Finding(
                        file,
                        None,
                        field,
                        f"ambiguous dates: both {chosen!r} and {other!r} read every value but "
                        f"disagree (e.g. on row {row}); pass --date-format with the right one",
                    )
                ]
            )
    return chosen, full[chosen]
