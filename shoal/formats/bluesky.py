"""Bluesky files: AppView post views and feed items, Jetstream events and Tap events.

* AppView (``getPosts``, ``searchPosts``, feeds): post views or feed items ``{post, reply?,
  reason?}``, as a JSON array, JSON lines, or a ``{"posts"|"feed": [...]}`` response ->
  ``bluesky-post``. Referenced posts embedded in a feed item (reply parent/root) stay in the
  payload and are not emitted on their own: they were not collected, only shown.
* Jetstream (JSON lines) and Tap (arrays or lines) events: creates of
  ``app.bsky.feed.post`` -> ``bluesky-record``; everything else (likes, reposts, follows,
  deletes, identity and account events) is a :class:`Control` counted by kind.
* Profile views (``bluesky-profiles.json``) are recognised so that such a file is accounted
  for instead of failing detection, but profiles are not posts: each is ``Control("profile")``.

The post id is the ``at://`` URI, the only identifier unique across the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.formats._json_records import Record, guarded, iter_records, raw_bytes
from shoal.formats._sniff import JsonHead
from shoal.model import Control, DeadLetter, RawPost
from shoal.normalise.bluesky import POST_COLLECTION, post_uri, record_event_parts

NAME = "bluesky"

_JETSTREAM_KINDS = frozenset({"commit", "identity", "account"})
_TAP_TYPES = frozenset({"record", "identity", "account"})
_WRAPPERS = ("posts", "feed")


def _classify(value: Any) -> str:
    """What a Bluesky JSON value is: view, feed, missing, jetstream, tap, profile or ""."""
    if not isinstance(value, dict):
        return ""
    post = value.get("post")
    if isinstance(post, dict):
        value = post
        kind = "feed"
    else:
        kind = "view"
    uri = value.get("uri")
    if isinstance(uri, str) and uri.startswith("at://"):
        if isinstance(value.get("record"), dict):
            return kind
        if value.get("notFound") or value.get("blocked"):
            return "missing"
        return ""
    did = value.get("did")
    kind_field, type_field = value.get("kind"), value.get("type")
    # Hostile input may put lists or objects where names belong: test types before lookups.
    is_did = isinstance(did, str) and did.startswith("did:")
    if isinstance(kind_field, str) and kind_field in _JETSTREAM_KINDS and is_did:
        return "jetstream"
    if (isinstance(type_field, str) and type_field in _TAP_TYPES
            and isinstance(value.get(type_field), dict)):
        return "tap"
    if isinstance(did, str) and did.startswith("did:") and "handle" in value:
        return "profile"
    return ""


def sniff(first: object) -> bool:
    if not isinstance(first, JsonHead):
        return False
    value = first.first
    if isinstance(value, dict) and not _classify(value):
        for key in _WRAPPERS:
            inner = value.get(key)
            if isinstance(inner, list) and inner:
                value = inner[0]
                break
    return bool(_classify(value))


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    for record in iter_records(path, NAME):
        if isinstance(record, DeadLetter):
            yield record
            continue
        value = record.value
        if isinstance(value, dict) and not _classify(value):
            wrapped = next((value[k] for k in _WRAPPERS if isinstance(value.get(k), list)), None)
            if wrapped is not None:
                for index, item in enumerate(wrapped):
                    yield guarded(_one, Record(f"{record.source}[{index}]", item, None), NAME)
                continue
        yield guarded(_one, record, NAME)


def _one(record: Record) -> RawPost | DeadLetter | Control:
    value = record.value
    kind = _classify(value)
    if kind in ("view", "feed"):
        view = value["post"] if kind == "feed" else value
        return RawPost("bluesky", view["uri"], "bluesky-post", value, record.source)
    if kind in ("jetstream", "tap"):
        return _event(value, record)
    if kind == "missing":
        view = value.get("post") if isinstance(value.get("post"), dict) else value
        return Control("blocked-post" if view.get("blocked") else "not-found-post", record.source)
    if kind == "profile":
        return Control("profile", record.source)
    return DeadLetter(
        "not a Bluesky post view, feed item, Jetstream or Tap event",
        record.source,
        raw_bytes(record),
        NAME,
    )


def _event(event: dict[str, Any], record: Record) -> RawPost | DeadLetter | Control:
    did, collection, rkey, operation, body = record_event_parts(event)
    if not collection:  # identity / account events
        return Control(str(event.get("kind") or event.get("type")), record.source)
    if operation == "delete":
        return Control("delete", record.source)
    if collection != POST_COLLECTION:
        return Control(collection, record.source)
    if operation not in ("create", "update"):
        return Control(f"post-{operation or 'unknown'}", record.source)
    if not did or not rkey or not isinstance(body, dict):
        reason = "post event without did, rkey or record"
        return DeadLetter(reason, record.source, raw_bytes(record), NAME)
    event["did"] = did  # Tap keeps it under record; normalisers and keys want it on top
    return RawPost("bluesky", post_uri(did, rkey), "bluesky-record", event, record.source)
