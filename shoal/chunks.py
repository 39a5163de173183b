"""The chunk-line format: how the rows of an open hour are written down, and read back.

The stage step (``flows.stage``) and the media step (``flows.media``) write JSON lines to
immutable chunk files (``connectors.store.chunks``); the sealer reads them back into an
:class:`shoal.merge.HourState`. One line per record, ``k`` saying which kind:

- ``{"k": "p", "c": collector, "r": post row, "u": author row, "m": [media rows], "l": 1}``:
  a post's first copy in this partition and hour, with its author and media rows on the same
  line (the sealer decodes one JSON document per post instead of three); ``l`` marks a copy
  that arrived after its hour's lateness had passed; ``u``, ``m`` and ``l`` are optional.
- ``{"k": "s", "id": post id, "c": collector}``: another collector delivered the same post.
- ``{"k": "u", "r": user row}`` and ``{"k": "m", "r": media row}``: a row on its own (fetched
  media rows come back this way).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from shoal.merge import HourState

POST, SEEN, USER, MEDIA = "p", "s", "u", "m"


def encode(record: Mapping[str, Any]) -> bytes:
    """One line. NUL bytes become U+FFFD: they break CSV readers downstream."""
    data = orjson.dumps(record)
    if b"\\u0000" in data:
        data = data.replace(b"\\u0000", b"\\ufffd")
    return data + b"\n"


def post_line(collector: str, post: Mapping[str, Any], *, late: bool = False,
              user: Mapping[str, Any] | None = None,
              media: Sequence[Mapping[str, Any]] = ()) -> bytes:
    rec: dict[str, Any] = {"k": POST, "c": collector, "r": post}
    if late:
        rec["l"] = 1
    if user:
        rec["u"] = user
    if media:
        rec["m"] = media
    return encode(rec)


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
        if not line.strip():
            continue
        rec = orjson.loads(line)
        kind = rec["k"]
        if kind == POST:
            is_new = state.add_post(rec["r"], (rec["c"],))
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
