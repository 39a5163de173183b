"""Replaying export files into Kafka: the ``file`` collector."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from connectors.kafka.publisher import Publisher
from shoal.formats import detect_format, read_file, readers
from shoal.model import Control, DeadLetter, RawPost

log = logging.getLogger("shoal.collect")

EMPTY_PROBE = 64 * 1024


def retrieval_time(post: RawPost, fallback: str) -> str:
    """The time the platform was asked, if the file says so (twarc does), else the fallback."""
    if post.retrieved_at:  # a raw-archive line says it for itself
        return post.retrieved_at
    meta = post.payload.get("__twarc")
    if isinstance(meta, dict) and isinstance(meta.get("retrieved_at"), str):
        return meta["retrieved_at"]
    value = post.payload.get("__retrieved_at")
    if isinstance(value, str):
        return value
    return fallback


def publish_records(
    records: Iterable[RawPost | DeadLetter | Control],
    publisher: Publisher,
    fallback_time: str,
    on_record: Callable[[], None] | None = None,
    publisher_for: Callable[[str], Publisher] | None = None,
) -> None:
    """Publish what a reader found. A post that names its own collectors (a raw-archive
    line) goes out once per collector through ``publisher_for(name)``, when given."""
    for rec in records:
        if isinstance(rec, RawPost):
            when = retrieval_time(rec, fallback_time)
            if rec.collectors and publisher_for is not None:
                for name in rec.collectors:
                    publisher_for(name).post(rec, when)
            else:
                publisher.post(rec, when)
        elif isinstance(rec, DeadLetter):
            publisher.dead(rec)
        else:
            publisher.counts.control[rec.kind] = publisher.counts.control.get(rec.kind, 0) + 1
        if on_record is not None:
            on_record()


def expand_sources(path: Path) -> list[Path]:
    """A file is itself; a directory is read as the files it holds (recursively, in name
    order, hidden ones left out)."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".")
                                             for part in p.relative_to(path).parts))


def is_empty(path: Path) -> bool:
    """Nothing but white space (an interrupted export, a query with no result)."""
    with open(path, "rb") as fh:
        head = fh.read(EMPTY_PROBE)
    return not head.strip(b"\xef\xbb\xbf \t\r\n") and len(head) < EMPTY_PROBE


def unreadable(path: Path, fmt: str | None = None) -> str | None:
    """Why ``path`` cannot be read as an export (missing, not ours, unknown format), or None."""
    try:
        if fmt is None:
            detect_format(path)
        elif fmt not in readers():
            return f"unknown format {fmt!r}; known: {', '.join(sorted(readers()))}"
    except (OSError, ValueError) as exc:  # UnknownFormat is a ValueError
        return str(exc) if str(path) in str(exc) else f"{path}: {exc}"
    return None


def collect_files(
    paths: Iterable[Path],
    publisher: Publisher,
    fmt: str | None = None,
    on_record: Callable[[], None] | None = None,
    publisher_for: Callable[[str], Publisher] | None = None,
) -> None:
    for path in paths:
        # Files without a retrieval time of their own get the file's modification time, so
        # that replaying the same file twice gives the same messages.
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
        publish_records(read_file(path, fmt), publisher, mtime.isoformat(), on_record,
                        publisher_for)
    publisher.flush()
