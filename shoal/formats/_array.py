"""The elements of a JSON array that does not parse whole: a truncated export keeps its posts.

A collector killed while writing ``[{...}, {...}, {...`` (or a copy cut short) leaves a
file that no JSON parser accepts, yet every element before the cut is whole. Readers try
the fast path first (``orjson.loads`` of the whole file); only when it fails do they walk
the array here, element by element:

- an element that parses is an :class:`Element` (``reason`` empty);
- an element whose span is well formed but which orjson refuses (a lone surrogate, ``NaN``)
  is an :class:`Element` with its ``reason``, so that it alone becomes a dead letter;
- where the structure itself breaks (the cut, a missing comma, bytes that are not UTF-8),
  the rest of the file is one last :class:`Element` with ``value`` None and the reason:
  nothing after the break is guessed at, and nothing is dropped.

Spans are found with the standard library's decoder (``raw_decode`` reports where a value
ends); each span is then parsed again with orjson, so a salvaged element is exactly what
the fast path would have given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

_SPACE = " \t\r\n"
TRUNCATED_ARRAY = "truncated JSON array"  # how the reason for a cut starts
_DECODER = json.JSONDecoder()


class Element(NamedTuple):
    position: int  # the element's index in the array (for the broken rest: the next index)
    value: Any  # None when ``reason`` is set
    raw: bytes  # the element's bytes as written (the rest of the file, for the break)
    reason: str  # "" for a good element


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def salvage_array(data: bytes) -> Iterator[Element]:
    """Each element of the JSON array ``data`` up to the point where it stops being one.

    ``data`` starts with ``[`` (after a BOM and blanks). A well-formed array gives its
    elements and nothing else; a broken one gives the elements before the break, then one
    element holding the rest with the reason it could not be read.
    """
    data = data.lstrip(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
        bad_at = -1
    except UnicodeDecodeError as err:  # read up to the first byte that is not UTF-8
        text = data[: err.start].decode("utf-8")
        bad_at = err.start
    at = _skip(text, 0)
    if not text.startswith("[", at):
        yield Element(0, None, data, "not a JSON array")
        return
    at = _skip(text, at + 1)
    index = 0
    if text.startswith("]", at):
        at = _skip(text, at + 1)
        if at < len(text) or bad_at >= 0:
            yield Element(0, None, _rest(text, at, data, bad_at),
                          _why(text, at, bad_at, "data after the array's end"))
        return
    while True:
        try:
            _, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError as err:
            cut = err.pos >= len(text) or err.msg.startswith("Unterminated string")
            reason = (f"invalid UTF-8 at byte {bad_at}: the array is unreadable from there"
                      if cut and bad_at >= 0 else
                      f"{TRUNCATED_ARRAY}: the file ends inside this element" if cut else
                      f"invalid JSON array from here: {err.msg}")
            yield Element(index, None, _rest(text, at, data, bad_at), reason)
            return
        raw = text[at:end].encode("utf-8", "surrogatepass")
        try:
            yield Element(index, orjson.loads(raw), raw, "")
        except orjson.JSONDecodeError as err:
            yield Element(index, None, raw, f"invalid JSON element: {err}")
        index += 1
        at = _skip(text, end)
        if text.startswith(",", at):
            at = _skip(text, at + 1)
            continue
        if text.startswith("]", at):
            at = _skip(text, at + 1)
            if at < len(text) or bad_at >= 0:
                yield Element(index, None, _rest(text, at, data, bad_at),
                              _why(text, at, bad_at, "data after the array's end"))
            return
        yield Element(index, None, _rest(text, at, data, bad_at),
                      _why(text, at, bad_at, "expected ',' or ']' after an element"))
        return


def _rest(text: str, at: int, data: bytes, bad_at: int) -> bytes:
    """The bytes of ``data`` from character ``at`` of its decoded prefix ``text`` on."""
    start = len(text[:at].encode("utf-8", "surrogatepass"))
    return data[start:]


def _why(text: str, at: int, bad_at: int, structural: str) -> str:
    """The reason for the rest: a byte that is not UTF-8, the file's end (a cut), or what the
    structure lacked there."""
    if bad_at >= 0 and _skip(text, at) >= len(text):
        return f"invalid UTF-8 at byte {bad_at}: the array is unreadable from there"
    if _skip(text, at) >= len(text):
        return f"{TRUNCATED_ARRAY}: the file ends before its closing ']'"
    return f"invalid JSON array from here: {structural}"
