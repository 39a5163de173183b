"""Twitter API v1.1: arrays of statuses, streaming archives, search and premium responses.

A v1.1 status is already self-contained (user, retweeted/quoted statuses and media are
nested in it), so the payload is the status exactly as read. Streaming archives interleave
statuses with control messages (``delete``, ``limit``, ``friends`` ...): those are counted as
:class:`Control`, never published as posts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.formats._sniff import JsonHead
from shoal.formats.twitter_v2 import raw_bytes, read_values
from shoal.ids import id_problem, valid_id
from shoal.model import Control, DeadLetter, RawPost

NAME = "twitter-v1"

# Top-level keys of the streaming API's non-status messages (public, user and site streams).
CONTROL_KINDS: dict[str, str] = {
    "delete": "delete",
    "scrub_geo": "scrub_geo",
    "limit": "limit",
    "status_withheld": "status_withheld",
    "user_withheld": "user_withheld",
    "disconnect": "disconnect",
    "warning": "warning",
    "friends": "friends",
    "friends_str": "friends",
    "event": "event",
    "direct_message": "direct_message",
    "for_user": "for_user",
    "control": "control",
}
# Envelopes whose list member holds the statuses (search/tweets, premium/full-archive search).
_WRAPPERS = ("statuses", "results")


def is_status(obj: Any) -> bool:
    """A v1.1 status: an id, a user and a text. v2 tweets have ``author_id``, no ``user``."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("user"), dict)
        and ("id_str" in obj or "id" in obj)
        and ("text" in obj or "full_text" in obj)
        and "data" not in obj
    )


def _control_kind(obj: dict[str, Any]) -> str | None:
    if "id_str" in obj:
        return None
    for key in obj:
        kind = CONTROL_KINDS.get(key)
        if kind is not None:
            return kind
    return None


def _wrapped(obj: dict[str, Any]) -> list[Any] | None:
    for key in _WRAPPERS:
        items = obj.get(key)
        if isinstance(items, list) and (not items or is_status(items[0])):
            return items
    return None


def sniff(head: object) -> bool:
    if not isinstance(head, JsonHead) or not isinstance(head.first, dict):
        return False
    first = head.first
    if is_status(first) or _wrapped(first) is not None:
        return True
    # A stream archive may well start with a control message (user streams: ``friends``).
    return head.layout in ("lines", "array") and _control_kind(first) is not None


def _status(obj: dict[str, Any], source: str) -> RawPost | DeadLetter:
    value = obj.get("id_str", obj.get("id"))
    tid = valid_id(value)
    if tid is None:
        return DeadLetter(f"tweet {id_problem(value)}", source, raw_bytes(obj), NAME)
    return RawPost("twitter", tid, NAME, obj, source)


def _value(
    value: Any, source: str, nested: bool = False
) -> Iterator[RawPost | DeadLetter | Control]:
    if isinstance(value, list) and not nested:
        for item in value:
            yield from _value(item, source, nested=True)
        return
    if not isinstance(value, dict):
        yield DeadLetter(
            f"not a v1.1 status: {type(value).__name__}", source, raw_bytes(value), NAME
        )
        return
    if is_status(value):
        yield _status(value, source)
        return
    items = _wrapped(value)  # an envelope, also as an element of an array of pages
    if items is not None:
        for item in items:
            yield from _value(item, source, nested=True)
        return
    kind = _control_kind(value)
    if kind is not None:
        yield Control(kind, source)
    elif "id_str" in value or "id" in value:
        yield DeadLetter("status without user or text", source, raw_bytes(value), NAME)
    elif "user" in value and ("text" in value or "full_text" in value):
        yield DeadLetter("tweet without id", source, raw_bytes(value), NAME)
    else:
        yield DeadLetter("not a v1.1 status or stream message", source, raw_bytes(value), NAME)


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    return read_values(path, NAME, _value)
