"""The chunk-line format: how the rows of an open hour are written down, and read back.

The stage step (``flows.stage``) and the media step (``flows.media``) write JSON lines to
immutable chunk files (``connectors.store.chunks``); the sealer reads them back into an
:class:`shoal.merge.HourState`. One line per record, ``k`` saying which kind:

- ``{"k": "p", "c": collector, "r": post row, "u": author row, "m": [media rows], "l": 1,
  "f": post format, "t": retrieved_at, "j": raw}``: a post's first copy in this partition and
  hour, with its author and media rows on the same line (the sealer decodes one JSON document
  per post instead of three); ``l`` marks a copy that arrived after its hour's lateness had
  passed; ``u``, ``m`` and ``l`` are optional. ``j`` (with ``f`` and ``t``, the format header
  and the retrieval time the row was made with) is the Kafka message value, for the hour's
  raw archive: always the last key, and embedded *verbatim* (the bytes spliced in, never
  decoded and re-encoded, so the archive keeps them exactly as they came and the stage step
  pays no second encoding); a value with a line break in it (JSON whitespace may hold one)
  is embedded as a JSON string instead, which keeps one record per line. Readers must split
  ``j`` off (:func:`split_raw`, :func:`apply_buffer`) rather than parse it: parsing would lose
  the exact bytes.
- ``{"k": "s", "id": post id, "c": collector}``: another collector delivered the same post.
- ``{"k": "u", "r": user row}`` and ``{"k": "m", "r": media row}``: a row on its own (fetched
  media rows come back this way).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from shoal.merge import HourState

POST, SEEN, USER, MEDIA = "p", "s", "u", "m"


# The escape of a NUL, not preceded by a backslash escaping the backslash itself: text that
# reads "\u0000" (six characters) is encoded "\\u0000" and must stay what it says.
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def encode(record: Mapping[str, Any]) -> bytes:
    """One line. NUL characters become U+FFFD: they break CSV readers downstream."""
    data = orjson.dumps(record)
    if b"\\u0000" in data:
        data = _NUL_ESCAPE.sub(rb"\1\\ufffd", data)
    return data + b"\n"


RAW_KEY = b',"j":'


def post_body(post: Mapping[str, Any], *, user: Mapping[str, Any] | None = None,
              media: Sequence[Mapping[str, Any]] = (), fmt: str = "",
              retrieved: str = "") -> bytes:
    """What a post line says of the post itself (row, author, media, format, retrieval
    time), encoded once as a JSON object: the stage digests these bytes to tell copies apart
    and splices the same bytes into the line (:func:`line_of_body`), so a post is encoded
    once on its way to the chunk."""
    rec: dict[str, Any] = {"r": post}
    if user:
        rec["u"] = user
    if media:
        rec["m"] = media
    rec["f"] = fmt
    rec["t"] = retrieved
    return encode(rec)[:-1]


def line_of_body(collector: str, body: bytes, *, late: bool = False,
                 raw: bytes | None = None) -> bytes:
    """The post line of a :func:`post_body`: its kind, collector and late mark put before
    it, the raw payload spliced in after it (never touched by the NUL rewrite)."""
    # One join, not a chain of ``+``: a line is a few kilobytes, and each ``+`` copies it.
    # ``body`` without its braces is spliced by a memoryview, which copies nothing.
    parts = [_head(collector), b',"l":1,' if late else b",", memoryview(body)[1:-1]]
    if raw is not None:
        parts += (RAW_KEY, embed_raw(raw))
    parts.append(b"}\n")
    return b"".join(parts)


@functools.lru_cache(maxsize=1024)
def _head(collector: str) -> bytes:
    """A post line's opening, up to its collector: a stream has a handful of collectors."""
    return encode({"k": POST, "c": collector})[:-2]


def post_line(collector: str, post: Mapping[str, Any], *, late: bool = False,
              user: Mapping[str, Any] | None = None,
              media: Sequence[Mapping[str, Any]] = (),
              raw: bytes | None = None, fmt: str = "", retrieved: str = "") -> bytes:
    body = post_body(post, user=user, media=media, fmt=fmt, retrieved=retrieved)
    return line_of_body(collector, body, late=late, raw=raw)


def embed_raw(raw: bytes) -> bytes:
    """``raw`` (a JSON document) as a JSON value on one line: itself, or as a JSON string if
    it holds a line break."""
    if b"\n" in raw or b"\r" in raw:
        return orjson.dumps(raw.decode("utf-8"))
    return raw


def unembed_raw(value: bytes) -> bytes:
    """The inverse of :func:`embed_raw` (a raw payload is an object, never a string)."""
    if value[:1] == b'"':
        text: str = orjson.loads(value)
        return text.encode("utf-8")
    return value


def split_raw(line: bytes) -> tuple[bytes, bytes | None]:
    """A chunk line without its ``j`` (still a JSON object), and the raw payload, exact.

    The first ``,"j":`` is the key: the keys before it are ours and never ``j``, and a
    string value cannot hold an unescaped quote.
    """
    at = line.find(RAW_KEY)
    if at < 0:
        return line, None
    return line[:at] + b"}", unembed_raw(line[at + len(RAW_KEY):].rstrip(b"\n")[:-1])


def seen_line(post_id: str, collector: str) -> bytes:
    return encode({"k": SEEN, "id": post_id, "c": collector})


def user_line(row: Mapping[str, Any]) -> bytes:
    return encode({"k": USER, "r": row})


def media_line(row: Mapping[str, Any]) -> bytes:
    return encode({"k": MEDIA, "r": row})


def apply_lines(state: HourState, lines: Iterable[bytes], seen_by: list[tuple[str, str]]) -> None:
    """Merge chunk lines into ``state``; "seen by" marks are collected into ``seen_by``, to be
    applied once every row is in (the row a mark refers to may sit in any chunk)."""
    for line in lines:
        if not line or line.isspace():  # isspace stops at the first other byte; strip copies
            continue
        line, raw = split_raw(line)
        _apply(state, orjson.loads(line), raw, seen_by)


_OPEN, _CLOSE = ord("{"), ord("}")


def apply_buffer(state: HourState, buf: bytearray, seen_by: list[tuple[str, str]]) -> None:
    """:func:`apply_lines` over a whole chunk's bytes, without copying its lines out.

    A chunk is mostly raw payloads. Split into lines, and each line then cut before its
    ``j``, every byte of it was copied twice before a line was parsed. Here each line is
    parsed where it lies: the comma before ``"j":`` is overwritten with the ``}`` that
    closes what comes before it, and orjson reads that through a memoryview. Only the raw
    payload is copied out, since the state keeps it. ``buf`` is changed.
    """
    view = memoryview(buf)
    size = len(buf)
    pos = 0
    try:
        while pos < size:
            end = buf.find(b"\n", pos)
            if end < 0:
                end = size
            line = view[pos:end]
            start, pos = pos, end + 1
            if start == end or (buf[start] != _OPEN and bytes(line).isspace()):
                continue
            at = buf.find(RAW_KEY, start, end)
            if at < 0:
                _apply(state, orjson.loads(line), None, seen_by)
                continue
            raw = unembed_raw(bytes(view[at + len(RAW_KEY):end - 1]))  # without the last "}"
            buf[at] = _CLOSE
            _apply(state, orjson.loads(view[start:at + 1]), raw, seen_by)
    finally:
        view.release()


def _apply(state: HourState, rec: dict[str, Any], raw: bytes | None,
           seen_by: list[tuple[str, str]]) -> None:
    """One chunk record into ``state`` (see :func:`apply_lines`)."""
    kind = rec["k"]
    if kind == POST:
        copy = None if raw is None else (rec.get("t", ""), rec.get("f", ""), raw)
        is_new = state.add_post(rec["r"], (rec["c"],), copy)
        pid = rec["r"]["id"]
        if not rec.get("l"):
            state.on_time.add(pid)
        elif is_new or pid in state.late_ids:
            state.late_copies.add(pid)
        if "u" in rec:
            state.add_user(rec["u"])
        for row in rec.get("m", ()):
            state.add_media(row)
    elif kind == SEEN:
        seen_by.append((rec["id"], rec["c"]))
    elif kind == USER:
        state.add_user(rec["r"])
    elif kind == MEDIA:
        state.add_media(rec["r"])
