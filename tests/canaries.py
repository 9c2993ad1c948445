"""Canary values, their encodings, and a binary-safe search, for tests/test_canaries_e2e.py.

A :class:`Canary` is one distinctive string planted in a store's raw data (a name, a phone
number, a customer id, ...). :meth:`Canary.forms` lists the byte strings under which it could
show up anywhere: UTF-8/16/32 (numpy stores ``str`` arrays as UTF-32), JSON ``\\u`` escapes,
HTML character references, URL encoding, hex, base64 at each of the three alignments, the
unkeyed digests a careless pipeline might use as a "pseudonym" (MD5, SHA-1, SHA-256: a
dictionary attack reverses them), case variants, and any extra spelling given (e.g. a phone
number without spaces or country code).

:func:`views` turns a file or a message into every byte string worth searching: the raw
bytes, each member of a zip archive (``.npz``, torch's ``.pt``), gzip content, the text
chunks of a PNG (``tEXt``, ``zTXt``, ``iTXt``; pixel data cannot hold text), the base64
``data:`` URIs of an HTML page (recursively: a chart inside the report) and the cells of a
parquet file as CSV (snappy-compressed pages hide their strings).

Two limits, said out loud: a value turned into numbers (float arrays) or drawn as pixels is
not found; and canaries must differ from one another from their first characters on, or a
compressed file holding one of them may spell another by chance (a literal prefix followed
by a tag byte that happens to be the other's last character).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import html
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

__all__ = ["Canary", "Hit", "find", "scan_blobs", "scan_tree", "views"]

_PNG = b"\x89PNG\r\n\x1a\n"
_DATA_URI = re.compile(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)")
_MIN_FORM = 8  # shorter byte strings could occur by chance in binary data


@dataclass(frozen=True)
class Canary:
    """One planted value: ``kind`` says what it stands for (a column, a pseudonym...)."""

    kind: str
    value: str
    extra: tuple[str, ...] = field(default=(), compare=False)  # other spellings

    def forms(self) -> dict[str, bytes]:
        """Every encoding searched for, by name (at least 8 bytes each)."""
        return dict(_forms(self.value, self.extra))


@functools.lru_cache(maxsize=4096)
def _forms(value: str, extra: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    out: dict[str, bytes] = {}
    for i, spelling in enumerate((value, *extra)):
        tag = "" if i == 0 else f"[{spelling}]"
        for name, form in _encodings(spelling).items():
            out.setdefault(f"{name}{tag}", form)
    return tuple((k, v) for k, v in out.items() if len(v) >= _MIN_FORM)


def _encodings(value: str) -> dict[str, bytes]:
    raw = value.encode("utf-8")
    forms = {
        "utf-8": raw,
        "utf-16-le": value.encode("utf-16-le"),
        "utf-16-be": value.encode("utf-16-be"),
        "utf-32-le": value.encode("utf-32-le"),  # numpy '<U' arrays
        "json": json.dumps(value)[1:-1].encode("ascii"),
        "json-upper": re.sub(
            r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), json.dumps(value)[1:-1]
        ).encode("ascii"),
        "html": html.escape(value).encode("utf-8"),
        "html-charref": value.encode("ascii", "xmlcharrefreplace"),
        "html-hexref": "".join(c if ord(c) < 128 else f"&#x{ord(c):x};" for c in value).encode(),
        "url": quote(value, safe="").encode("ascii"),
        "url-plus": quote_plus(value).encode("ascii"),
        "hex": raw.hex().encode("ascii"),
        "HEX": raw.hex().upper().encode("ascii"),
        "md5": hashlib.md5(raw).hexdigest().encode("ascii"),
        "sha1": hashlib.sha1(raw).hexdigest().encode("ascii"),
        "sha256": hashlib.sha256(raw).hexdigest().encode("ascii"),
    }
    for shift in range(3):  # base64 of a value inside a longer stream: each byte alignment
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = encode(b"\0" * shift + raw)
            head = (shift * 8 + 5) // 6  # characters that mix in the preceding bytes
            tail = (len(raw) + shift) % 3  # a partial last group depends on what follows
            stop = len(encoded) - (tail and 4)
            core = encoded[head:stop] if stop > head else b""
            forms[f"{name}+{shift}"] = core
    if value.isascii():
        forms["lower"] = value.lower().encode("ascii")
        forms["upper"] = value.upper().encode("ascii")
    return forms


@dataclass(frozen=True)
class Hit:
    """A canary found: where, which canary, under which encoding."""

    where: str
    kind: str
    value: str
    form: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value!r} as {self.form} in {self.where}"


def find(blob: bytes, canaries: Iterable[Canary], where: str) -> list[Hit]:
    """Every (canary, encoding) present in ``blob`` itself (no views)."""
    hits = []
    for canary in canaries:
        for name, form in canary.forms().items():
            if form in blob:
                hits.append(Hit(where, canary.kind, canary.value, name))
    return hits


def scan_blobs(blobs: Mapping[str, bytes], canaries: Iterable[Canary]) -> list[Hit]:
    """:func:`find` over every view (:func:`views`) of each named blob."""
    canaries = list(canaries)
    hits: list[Hit] = []
    for where, blob in blobs.items():
        for part, data in views(blob, where):
            hits += find(data, canaries, part)
    return hits


def scan_tree(root: Path, canaries: Iterable[Canary], skip: Iterable[Path] = ()) -> list[Hit]:
    """:func:`scan_blobs` over every file under ``root`` (recursively), except ``skip``."""
    skipped = {Path(p).resolve() for p in skip}
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or any(
            path.resolve() == s or s in path.resolve().parents for s in skipped
        ):
            continue
        files[str(path)] = path.read_bytes()
    return scan_blobs(files, canaries)


def views(blob: bytes, where: str, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """The raw bytes, then what is inside them (archives, PNG text, data URIs, parquet)."""
    yield where, blob
    if depth > 3:
        return
    inner: list[tuple[str, bytes]] = []
    if blob[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                inner += [(f"{where}!{n}", archive.read(n)) for n in archive.namelist()]
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
    elif blob[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError):
            inner.append((f"{where}!gunzip", gzip.decompress(blob)))
    elif blob[:8] == _PNG:
        inner += [(f"{where}!{name}", text) for name, text in _png_text(blob)]
    elif blob[:4] == b"PAR1":
        inner += _parquet_text(blob, where)
    for i, match in enumerate(_DATA_URI.finditer(blob)):
        with contextlib.suppress(ValueError):
            inner.append((f"{where}!data-uri{i}", base64.b64decode(match.group(1))))
    for name, data in inner:
        yield from views(data, name, depth + 1)


def _png_text(blob: bytes) -> list[tuple[str, bytes]]:
    """The text chunks of a PNG (compressed ones inflated)."""
    out, pos = [], 8
    while pos + 8 <= len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        data = blob[pos + 8 : pos + 8 + length]
        pos += 12 + length
        try:
            if kind == b"tEXt":
                out.append(("tEXt", data))
            elif kind == b"zTXt":
                keyword, _, rest = data.partition(b"\0")
                out.append(("zTXt", keyword + b"\0" + zlib.decompress(rest[1:])))
            elif kind == b"iTXt":
                keyword, _, rest = data.partition(b"\0")
                compressed, text = rest[0], rest[2:]
                out.append(("iTXt", keyword + b"\0" + (zlib.decompress(
                    text.split(b"\0", 2)[2]) if compressed else text)))  # fmt: skip
        except (zlib.error, IndexError):
            out.append((kind.decode("latin-1"), data))
    return out


def _parquet_text(blob: bytes, where: str) -> list[tuple[str, bytes]]:
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(io.BytesIO(blob)).to_pandas()
    except Exception:  # not a readable parquet file: its raw bytes are still searched
        return []
    return [(f"{where}!parquet-as-csv", frame.to_csv(index=False).encode("utf-8"))]
