"""twitwi/minet CSV exports: one post per row, tweets or Bluesky posts.

The payload is the row as a dict of strings (header -> cell), which the ``minet-csv``
normaliser reads by column name. Tweet rows are keyed by ``id``. Bluesky rows (twitwi's
Bluesky format has ``uri``/``cid``/``user_did`` and no ``id``) are keyed by the post's
``at://`` URI: the CID changes when a post is edited while the URI names the post for good,
and it is what the Bluesky readers use, so the same post read from an export and from the
API gets one key.

Rows are read with the csv module over lines decoded one by one, so a row with bad bytes is
dead-lettered on its own (reason ``invalid UTF-8``, raw = the row's original bytes) while
quoted multi-line fields and a BOM are handled as usual.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from shoal.formats._json_records import LATIN1_HINT
from shoal.formats._open import open_input
from shoal.formats._sniff import CsvHead
from shoal.ids import id_problem, valid_id
from shoal.model import DeadLetter, RawPost

NAME = "minet-csv"

_TWEET_HINTS = frozenset(
    {"timestamp_utc", "local_time", "user_screen_name", "media_urls", "retweeted_id", "quoted_id"}
)
_BLUESKY_COLUMNS = frozenset({"uri", "cid", "user_did"})


def _platform(header: tuple[str, ...] | list[str]) -> str | None:
    cols = {h.lstrip("\ufeff").strip() for h in header}
    if cols >= _BLUESKY_COLUMNS and "id" not in cols:
        return "bluesky"
    if "id" in cols and len(cols & _TWEET_HINTS) >= 2:
        return "twitter"
    return None


def sniff(head: object) -> bool:
    return isinstance(head, CsvHead) and _platform(head.header) is not None


# A twitwi row is a few kB; beyond this it is a broken quote swallowing the file or an attack.
# Checked here because csv.field_size_limit is process-wide (the hourly-file writer raises it).
MAX_ROW_BYTES = 1 << 20
_RAW_KEEP = 64 << 10  # bytes of an oversized row kept in its dead letter


class _Lines:
    """Feeds decoded lines to csv.reader and keeps the bytes of the row being parsed."""

    __slots__ = ("bad", "buf", "fh", "lineno", "size")

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.buf: list[bytes] = []
        self.bad = ""
        self.lineno = 0
        self.size = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.fh.readline()
        if not line:
            raise StopIteration
        self.lineno += 1
        if self.lineno == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        self.size += len(line)
        if self.size <= MAX_ROW_BYTES:
            self.buf.append(line)
        elif not self.bad.startswith("row too large"):
            self.bad = f"row too large: over {MAX_ROW_BYTES} bytes"
            self.buf = [b"".join(self.buf)[:_RAW_KEEP]]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.bad = self.bad or f"invalid UTF-8: {LATIN1_HINT}"
            return line.decode("utf-8", "surrogateescape")
        if "\x00" in text:
            self.bad = self.bad or "NUL byte in row"
        return text

    def take(self) -> tuple[bytes, str]:
        raw, bad = b"".join(self.buf), self.bad
        self.buf.clear()
        self.bad = ""
        self.size = 0
        return raw, bad


def read(path: Path) -> Iterator[RawPost | DeadLetter]:
    with open_input(path) as fh:
        lines = _Lines(fh)
        reader = csv.reader(lines)
        try:
            first = next(reader)
            while not any(cell.strip() for cell in first) and not lines.bad:
                lines.take()  # blank lines before the header: skipped, as pandas does
                first = next(reader)
            header = [h.strip() for h in first]
        except StopIteration:
            return
        except csv.Error as exc:
            yield DeadLetter(f"invalid CSV header: {exc}", f"{path}:{lines.lineno}",
                             lines.take()[0], NAME)
            return
        raw, bad = lines.take()
        platform = _platform(header)
        if bad or platform is None:
            yield DeadLetter(bad or "not a twitwi/minet header", f"{path}:{lines.lineno}", raw,
                             NAME)
            return
        id_column = "uri" if platform == "bluesky" else "id"
        width = len(header)
        while True:
            start = lines.lineno + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield DeadLetter(f"invalid CSV: {exc}", f"{path}:{start}", lines.take()[0], NAME)
                continue
            raw, bad = lines.take()
            source = f"{path}:{start}"
            if not row:
                continue
            if bad:
                yield DeadLetter(bad, source, raw, NAME)
            elif len(row) != width:
                yield DeadLetter(
                    f"row has {len(row)} fields, header has {width}", source, raw, NAME
                )
            else:
                payload = dict(zip(header, row, strict=True))
                key = payload[id_column]
                if platform == "twitter":
                    pid = valid_id(key)
                else:
                    pid = key if key.startswith("at://") else None
                if pid is None:
                    reason = (f"row without {id_column}" if not key else
                              f"row {id_problem(key)}" if platform == "twitter" else
                              f"invalid {id_column}")
                    yield DeadLetter(reason, source, raw, NAME)
                else:
                    yield RawPost(platform, pid, NAME, payload, source)
