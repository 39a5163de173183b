"""Replaying export files into Kafka: the ``file`` collector."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from connectors.kafka.publisher import Publisher
from shoal.formats import read_file
from shoal.model import Control, DeadLetter, RawPost

log = logging.getLogger("shoal.collect")


def retrieval_time(post: RawPost, fallback: str) -> str:
    """The time the platform was asked, if the file says so (twarc does), else the fallback."""
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
) -> None:
    for rec in records:
        if isinstance(rec, RawPost):
            publisher.post(rec, retrieval_time(rec, fallback_time))
        elif isinstance(rec, DeadLetter):
            publisher.dead(rec)
        else:
            publisher.counts.control[rec.kind] = publisher.counts.control.get(rec.kind, 0) + 1
        if on_record is not None:
            on_record()


def collect_files(
    paths: Iterable[Path],
    publisher: Publisher,
    fmt: str | None = None,
    on_record: Callable[[], None] | None = None,
) -> None:
    for path in paths:
        # Files without a retrieval time of their own get the file's modification time, so
        # that replaying the same file twice gives the same messages.
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
        publish_records(read_file(path, fmt), publisher, mtime.isoformat(), on_record)
    publisher.flush()
