"""Look at the start of a file to tell readers apart without reading it all."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shoal.formats._array import prefer_walk, salvage_values
from shoal.formats._open import TRUNCATED, open_input, read_head, read_input

HEAD_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class JsonHead:
    """The first JSON value of a file: ``layout`` is ``lines``, ``array`` or ``object``."""

    layout: str
    first: Any  # the first line's value (lines), the first element (array) or the object


@dataclass(frozen=True, slots=True)
class CsvHead:
    header: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextHead:
    text: str


SCAN_LINES = 200  # how far a broken start is looked past for the first good JSON line


def first_json_line(path: Path, limit: int = SCAN_LINES) -> dict[str, Any] | None:
    """The first line of ``path`` (within ``limit`` lines) that is a JSON object.

    A JSON-lines export whose first lines are broken (truncated, a stray ``null``, a line of
    several megabytes) is still JSON lines: its bad lines become dead letters, the others
    posts. Lines are read one by one, so a huge line does not hide the ones after it.
    """
    with open_input(path) as fh:
        for n, line in enumerate(fh):
            if n >= limit:
                break
            line = line.strip().lstrip(b"\xef\xbb\xbf")
            if not line.startswith(b"{"):
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _json_ish(line: bytes) -> bool:
    """A first line that is no CSV header: a JSON value of its own, or not even text."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def first_value(path: Path) -> JsonHead | CsvHead | TextHead:
    try:
        head = read_head(path, HEAD_BYTES)  # compressed or not (shoal.formats._open)
    except TRUNCATED as exc:
        return TextHead(f"not a readable compressed file: {exc}")
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped.startswith((b"{", b"[")) and _json_ish(stripped.split(b"\n", 1)[0]):
        later = first_json_line(path)
        if later is not None:  # JSON lines behind a broken first line (``null``, binary)
            return JsonHead("lines", later)
    if stripped.startswith((b"{", b"[")):
        first_line = stripped.split(b"\n", 1)[0]
        try:
            value = orjson.loads(first_line)
        except orjson.JSONDecodeError:
            value = None
        one_per_line = b"\n" in stripped.rstrip() or stripped.startswith(b"{")
        if one_per_line and isinstance(value, dict):
            # One object per line, or one object in the whole file.
            rest = stripped[len(first_line) :].strip()
            return JsonHead("lines" if rest else "object", value)
        if (one_per_line and isinstance(value, list) and value and isinstance(value[0], dict)
                and stripped[len(first_line) :].strip()):
            # An array per line (an API page per line): JSON lines, which the readers
            # take apart; parsed whole, the file was no JSON at all and refused.
            return JsonHead("lines", value[0])
        if stripped.startswith(b"["):
            data = read_input(path)
            try:
                whole = orjson.loads(data.lstrip(b"\xef\xbb\xbf"))
            except orjson.JSONDecodeError:
                # A truncated array is still an array: its first whole element tells.
                good = next((p for p in salvage_values(data) if not p.reason), None)
                if good is None:
                    return TextHead(head.decode("utf-8", "replace"))
                return JsonHead("array", good.value)
            return JsonHead("array", whole[0] if whole else None)
        data = read_input(path).lstrip(b"\xef\xbb\xbf")
        try:
            return JsonHead("object", orjson.loads(data))
        except orjson.JSONDecodeError:
            # A JSON-lines file whose first line is broken: look at the first good line.
            later = first_json_line(path)
            if later is not None:
                return JsonHead("lines", later)
            # Pretty-printed values one after another (``jq .``), or one cut short.
            parts = list(salvage_values(data))
            good = next((p for p in parts if not p.reason), None)
            if good is not None and prefer_walk(parts, data):
                return JsonHead("lines", good.value)
            return TextHead(head.decode("utf-8", "replace"))
    text = head.decode("utf-8", "replace")
    if text.lstrip().lower().startswith(("<", "<!doctype")):
        return TextHead(text)
    try:
        # The header is the first line that is not blank (an export may start with some).
        header_line = next((line for line in text.splitlines() if line.strip()), "")
        header = next(csv.reader(io.StringIO(header_line)))
    except (StopIteration, csv.Error):
        return TextHead(text)
    return CsvHead(tuple(header))
