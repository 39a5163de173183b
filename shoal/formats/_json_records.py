"""Split a JSON file into its records, whatever its layout, without ever raising on content.

Collectors write the same objects as a JSON array, one object per line, or a single
(pretty-printed) object, and a crash or a full disk leaves a truncated last line: every
layout is accepted here and each unparseable line becomes a :class:`DeadLetter` so that the
rest of the file is still read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from shoal.formats._array import Element, prefer_walk, salvage_values
from shoal.formats._open import open_input, read_head, read_input
from shoal.model import Control, DeadLetter, RawPost

_BLANK = b"\xef\xbb\xbf \t\r\n"


class Record(NamedTuple):
    source: str  # "path:line" for lines, "path[index]" for array elements
    value: Any
    raw: bytes | None  # the line as read; None for array elements (dump them on demand)


def guarded(
    fn: Callable[[Record], RawPost | DeadLetter | Control], record: Record, fmt: str
) -> RawPost | DeadLetter | Control:
    """Run a per-record reader; a bug it hits on odd input quarantines the record, not the file."""
    try:
        return fn(record)
    except Exception as exc:
        reason = f"unreadable record: {type(exc).__name__}: {exc}"
        return DeadLetter(reason, record.source, raw_bytes(record), fmt)


def read_records(
    path: Path, fmt: str, fn: Callable[[Record], RawPost | DeadLetter | Control]
) -> Iterator[RawPost | DeadLetter | Control]:
    """A reader for formats whose every JSON record stands alone: ``fn`` reads one, guarded."""
    for record in iter_records(path, fmt):
        if isinstance(record, DeadLetter):
            yield record
        else:
            yield guarded(fn, record, fmt)


LATIN1_HINT = "a latin-1 or cp1252 file? iconv -f CP1252 -t UTF-8 converts it"


def bad_json_reason(line: bytes, exc: Exception, what: str = "line") -> str:
    """Why ``line`` is no JSON: bytes that are not UTF-8 (named, with the conversion that
    likely fixes a whole file of them), or the parser's own words."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8: {err.reason} at byte {err.start} ({LATIN1_HINT})"
    return f"invalid JSON {what}: {exc}" if what else f"invalid JSON: {exc}"


def raw_bytes(record: Record) -> bytes:
    """The bytes to keep in a dead letter for this record."""
    if record.raw is not None:
        return record.raw
    try:
        return orjson.dumps(record.value)
    except TypeError:  # pragma: no cover - parsed JSON always dumps
        return repr(record.value).encode()


def iter_records(path: Path, fmt: str) -> Iterator[Record | DeadLetter]:
    # read_head and read_input give what a compressed file cut short holds before its cut
    # (a plain read() of it loses its last blocks with the error).
    if read_head(path, 4096).lstrip(_BLANK).startswith(b"["):
        yield from _array(read_input(path), path, fmt)
        return
    with open_input(path) as fh:
        yield from _lines(fh, path, fmt)


def _array(data: bytes, path: Path, fmt: str) -> Iterator[Record | DeadLetter]:
    try:
        values = orjson.loads(data.lstrip(b"\xef\xbb\xbf"))
    except orjson.JSONDecodeError:
        # Cut short, or several arrays one after the other: the whole elements are posts.
        yield from _salvaged(list(salvage_values(data)), path, fmt)
        return
    for index, value in enumerate(values):
        yield Record(f"{path}[{index}]", value, None)


def _salvaged(parts: list[Element], path: Path, fmt: str) -> Iterator[Record | DeadLetter]:
    for part in parts:
        where = part.source(path)
        if part.reason:
            yield DeadLetter(part.reason, where, part.raw, fmt)
        else:
            yield Record(where, part.value, part.raw)


def _lines(fh: Any, path: Path, fmt: str) -> Iterator[Record | DeadLetter]:
    first = True
    lineno = 0
    while True:
        line = fh.readline()
        if not line:
            return
        lineno += 1
        stripped = line.strip(_BLANK) if first else line.strip()
        if not stripped:
            continue
        try:
            value = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            if first:
                # Maybe one pretty-printed value spanning lines: try the whole file.
                data = read_input(path)
                try:
                    whole = orjson.loads(data.lstrip(b"\xef\xbb\xbf"))
                except orjson.JSONDecodeError:
                    # Pretty-printed values one after another (``jq .``), or cut short.
                    parts = list(salvage_values(data))
                    if prefer_walk(parts, data):
                        yield from _salvaged(parts, path, fmt)
                        return
                else:
                    if isinstance(whole, list):
                        for index, item in enumerate(whole):
                            yield Record(f"{path}[{index}]", item, None)
                    else:
                        yield Record(f"{path}:{lineno}", whole, None)
                    return
            first = False
            raw = line.rstrip(b"\r\n")
            yield DeadLetter(bad_json_reason(raw, exc), f"{path}:{lineno}", raw, fmt)
            continue
        first = False
        yield Record(f"{path}:{lineno}", value, stripped)
