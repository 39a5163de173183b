"""Mastodon API responses: Status arrays (timelines), single Statuses, MediaAttachments.

A MediaAttachment on its own (``POST /api/v2/media``, ``GET /api/v1/media/:id``) belongs to
a status not yet seen; it is counted as ``Control("media-attachment")`` rather than made into
a post. Ids come from :func:`shoal.normalise.mastodon.status_id` so that the Kafka key and
the normalised id can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.formats._json_records import Record, raw_bytes, read_records
from shoal.formats._sniff import JsonHead
from shoal.model import Control, DeadLetter, RawPost
from shoal.normalise.mastodon import status_id

NAME = "mastodon"


def _is_status(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("account"), dict)
        and "content" in value
        and "created_at" in value
    )


def _is_attachment(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and "account" not in value
        and "preview_url" in value
        and "url" in value
        and "type" in value
        and ("remote_url" in value or "blurhash" in value or "text_url" in value)
    )


def sniff(first: object) -> bool:
    if not isinstance(first, JsonHead):
        return False
    return _is_status(first.first) or _is_attachment(first.first)


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    return read_records(path, NAME, _one)


def _one(record: Record) -> RawPost | DeadLetter | Control:
    value = record.value
    if _is_status(value):
        post_id = status_id(value)
        if post_id:
            return RawPost("mastodon", post_id, "mastodon-status", value, record.source)
        reason = "Mastodon status without uri or url to identify it"
    elif _is_attachment(value):
        return Control("media-attachment", record.source)
    else:
        reason = "not a Mastodon Status or MediaAttachment"
    return DeadLetter(reason, record.source, raw_bytes(record), NAME)
