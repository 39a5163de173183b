"""The JSON values of a file that does not parse whole: a truncated export keeps its posts.

Two layouts need this walk; readers try their fast path first (``orjson.loads`` of the whole
file, or of each line) and come here only when it fails:

- an array cut short: a collector killed while writing ``[{...}, {...}, {...`` (or a copy
  interrupted) leaves a file no JSON parser accepts, yet every element before the cut is
  whole;
- values one after another: ``cat a.json b.json``, or ``jq . tweets.jsonl`` (pretty-printed
  objects, one after the other), which is neither one document nor one value per line.

Each top-level value is taken in turn, and a top-level array gives its elements:

- a value that parses is an :class:`Element` (``reason`` empty);
- a value whose span is well formed but which orjson refuses (a lone surrogate, ``NaN``) is
  an :class:`Element` with its ``reason``, so that it alone becomes a dead letter;
- where the structure itself breaks (the cut, a missing comma, bytes that are not UTF-8),
  the rest of the file is one last :class:`Element` with ``value`` None and the reason:
  nothing after the break is guessed at, and nothing is dropped.

Spans are found with the standard library's decoder (``raw_decode`` reports where a value
ends); each span is then parsed again with orjson, so that a salvaged element is exactly
what the fast path would have given.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

import orjson

_SPACE = " \t\r\n"
TRUNCATED_JSON = "truncated JSON"  # how the reason for a cut starts
_DECODER = json.JSONDecoder()


class Element(NamedTuple):
    position: int  # the element's index among the file's values (array elements included)
    value: Any  # None when ``reason`` is set
    raw: bytes  # the element's bytes as written (the rest of the file, for the break)
    reason: str  # "" for a good element
    line: int = 1  # the line the element starts on
    in_array: bool = True  # an element of a top-level array, not a top-level value

    def source(self, path: object) -> str:
        """Where the element is: ``path[i]`` in an array, ``path:line`` for a value."""
        return f"{path}[{self.position}]" if self.in_array else f"{path}:{self.line}"


class _Text:
    """The decoded text with the line count of a position, found once per position."""

    __slots__ = ("data", "line", "scanned", "text")

    def __init__(self, data: bytes, text: str) -> None:
        self.data, self.text = data, text
        self.line, self.scanned = 1, 0

    def line_at(self, at: int) -> int:
        self.line += self.text.count("\n", self.scanned, at)
        self.scanned = at
        return self.line

    def rest(self, at: int) -> bytes:
        """The bytes of the file from character ``at`` on."""
        return self.data[len(self.text[:at].encode("utf-8", "surrogatepass")):]


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def salvage_values(data: bytes) -> Iterator[Element]:
    """Each JSON value of ``data``, the elements of its arrays in place of the arrays, up to
    the point where it stops being JSON (then the rest, with the reason)."""
    data = data.lstrip(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
        bad_at = -1
    except UnicodeDecodeError as err:  # read up to the first byte that is not UTF-8
        text = data[: err.start].decode("utf-8")
        bad_at = err.start
    src = _Text(data, text)
    position = 0
    at = _skip(text, 0)
    while at < len(text):
        if text[at] == "[":
            at, position, broken = yield from _elements(src, at, position, bad_at)
            if broken:
                return
        else:
            try:
                _, end = _DECODER.raw_decode(text, at)
            except json.JSONDecodeError as err:
                yield Element(position, None, src.rest(at), _break(err, text, bad_at),
                              src.line_at(at), False)
                return
            yield _parsed(position, text[at:end], src.line_at(at), False)
            position += 1
            at = end
        at = _skip(text, at)
    if bad_at >= 0:
        yield Element(position, None, src.rest(at), _not_utf8(bad_at), src.line_at(at), False)


def _elements(src: _Text, at: int, position: int, bad_at: int
              ) -> Generator[Element, None, tuple[int, int, bool]]:
    """The elements of the array opening at ``at``; returns where the walk goes on, the next
    position, and whether the array broke (then its rest was the last element given)."""
    text = src.text
    at = _skip(text, at + 1)
    if text.startswith("]", at):
        return at + 1, position, False
    while True:
        try:
            _, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError as err:
            yield Element(position, None, src.rest(at), _break(err, text, bad_at),
                          src.line_at(at))
            return at, position, True
        yield _parsed(position, text[at:end], src.line_at(at), True)
        position += 1
        at = _skip(text, end)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
            continue
        if text.startswith("]", at):
            return at + 1, position, False
        reason = (_not_utf8(bad_at) if bad_at >= 0 and at >= len(text) else
                  f"{TRUNCATED_JSON} array: the file ends before its closing ']'"
                  if at >= len(text) else
                  "invalid JSON array from here: expected ',' or ']' after an element")
        yield Element(position, None, src.rest(at), reason, src.line_at(at))
        return at, position, True


def prefer_walk(parts: list[Element], data: bytes) -> bool:
    """Whether the walk's ``parts`` are the better reading of ``data``: it read the file to
    its end (every value whole or bad on its own, at most a cut at the very end), or, broken
    somewhere, it still found more whole values than reading ``data`` line by line would
    (a pretty-printed page followed by junk). JSON lines whose first line is broken are
    read better line by line."""
    good = sum(1 for p in parts if not p.reason)
    if not good:
        return False
    if all(not p.reason or p.reason.startswith(("invalid JSON element", TRUNCATED_JSON))
           for p in parts):
        return True
    lines = 0
    for line in data.splitlines():
        line = line.strip()
        if line[:1] in (b"{", b"["):
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            lines += 1
    return good > lines


def _parsed(position: int, span: str, line: int, in_array: bool) -> Element:
    raw = span.encode("utf-8", "surrogatepass")
    try:
        return Element(position, orjson.loads(raw), raw, "", line, in_array)
    except orjson.JSONDecodeError as err:
        return Element(position, None, raw, f"invalid JSON element: {err}", line, in_array)


def _not_utf8(bad_at: int) -> str:
    return f"invalid UTF-8 at byte {bad_at}: the file is unreadable from there"


def _break(err: json.JSONDecodeError, text: str, bad_at: int) -> str:
    """Why the walk stops at a value that does not parse: the file ends inside it (a cut, or
    the first byte that is not UTF-8), or it is no JSON."""
    cut = err.pos >= len(text) or err.msg.startswith("Unterminated string")
    if cut and bad_at >= 0:
        return _not_utf8(bad_at)
    if cut:
        return f"{TRUNCATED_JSON}: the file ends inside this value"
    return f"invalid JSON from here: {err.msg}"
