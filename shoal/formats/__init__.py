"""Readers for input files: detect the format, split the file into self-contained posts.

Each reader module exposes ``NAME`` (the file format), ``sniff(first: object) -> bool``
(given the first parsed JSON value or CSV header of a file) and
``read(path: Path) -> Iterator[RawPost | DeadLetter | Control]``. Readers never raise on bad
content: a line that cannot become a post becomes a :class:`~shoal.model.DeadLetter`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

from shoal.formats._open import TRUNCATED, read_head
from shoal.model import Control, DeadLetter, RawPost


class UnknownFormat(ValueError):
    """The file's content matches no reader; the message says what was seen."""


@cache
def readers() -> dict[str, ModuleType]:
    """File format -> reader module. Order matters: the first whose sniff() accepts the head
    of a file wins."""
    from shoal.formats import (
        bluesky,
        mastodon,
        minet_csv,
        shoal_archive,
        tiktok_scraper,
        twitter_v1,
        twitter_v2,
        zeeschuimer,
    )

    mods = (shoal_archive, minet_csv, zeeschuimer, twitter_v2, twitter_v1, bluesky, mastodon,
            tiktok_scraper)
    return {mod.NAME: mod for mod in mods}


def detect_format(path: Path) -> str:
    from shoal.formats._sniff import first_value

    first = first_value(path)
    for name, mod in readers().items():
        if mod.sniff(first):
            return name
    encoding = _wide_encoding(path)
    if encoding:
        raise UnknownFormat(f"{path}: the file is {encoding} encoded; shoal reads UTF-8 "
                            f"(convert it: iconv -f {encoding} -t UTF-8)")
    if _json_cut_short(path):
        raise UnknownFormat(f"{path}: JSON cut short before its first record ends (an "
                            f"interrupted download or copy?): nothing in it can be read")
    raise UnknownFormat(f"{path}: no reader recognises this file ({type(first).__name__} at start)")


def _json_cut_short(path: Path) -> bool:
    """Whether ``path`` is JSON that ends inside its first value: said so, not "unknown"."""
    from shoal.formats._array import TRUNCATED_JSON, salvage_values
    from shoal.formats._open import read_input

    try:
        data = read_input(path)
    except TRUNCATED:
        return False
    if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
        return False
    parts = list(salvage_values(data))
    return bool(parts) and parts[0].reason.startswith(TRUNCATED_JSON)


def _wide_encoding(path: Path) -> str:
    """``UTF-16``/``UTF-32`` when the start of ``path`` says so (a byte-order mark, or a NUL
    beside every ASCII character), else "": such a file is no reader's, and said why."""
    try:
        head = read_head(path, 4096)
    except OSError:
        return ""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    pairs = head[: len(head) // 2 * 2]
    if len(pairs) >= 8 and pairs[1::2].count(0) > len(pairs) * 0.4:
        return "UTF-16LE"  # "a\0": the low byte first
    if len(pairs) >= 8 and pairs[0::2].count(0) > len(pairs) * 0.4:
        return "UTF-16BE"
    return ""


def read_file(path: Path, fmt: str | None = None) -> Iterator[RawPost | DeadLetter | Control]:
    all_readers = readers()
    name = fmt or detect_format(path)
    if name not in all_readers:
        raise UnknownFormat(f"unknown format {name!r}; known: {', '.join(sorted(all_readers))}")
    records = 0
    try:
        for rec in all_readers[name].read(path):
            records += 1
            yield rec
    except TRUNCATED as exc:
        # A compressed file cut short (or a disk that failed under it): what was read stands,
        # the rest is one dead letter saying where it stopped, and the other files go on.
        yield DeadLetter(f"file unreadable after {records} records: {exc}", str(path), b"",
                         name)
