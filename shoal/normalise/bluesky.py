"""Bluesky posts: AppView post views (``bluesky-post``) and raw repo records (``bluesky-record``).

A post's id is its ``at://`` URI: the record key alone is only unique per account, and the
URI is what replies, quotes and likes point at, so references join without a lookup.
Raw records (Jetstream, Tap) carry no profile, so they yield no user row: a row of blanks
would overwrite a better one in the hour's users file.
"""

from __future__ import annotations

import re
from typing import Any

from shoal.media.platforms import GIF_HOSTS, bluesky_record_media, bluesky_view_media
from shoal.model import BadPost, Normalised
from shoal.normalise import _platform_rows as rows

POST_COLLECTION = "app.bsky.feed.post"


def record_event_parts(event: dict[str, Any]) -> tuple[str, str, str, str, Any]:
    """``(did, collection, rkey, operation, record)`` of a Jetstream or a Tap event.

    Jetstream puts the repo operation under ``commit`` and the DID beside it; Tap nests
    everything, DID included, under ``record``.
    """
    commit = event.get("commit")
    if isinstance(commit, dict):
        did = event.get("did")
    else:
        commit = event.get("record")
        if not isinstance(commit, dict):
            return "", "", "", "", None
        did = commit.get("did") or event.get("did")
    operation = commit.get("operation") or commit.get("action") or ""
    return (
        did if isinstance(did, str) else "",
        rows.text(commit.get("collection")),
        rows.text(commit.get("rkey")),
        rows.text(operation),
        commit.get("record"),
    )


def post_uri(did: str, rkey: str, collection: str = POST_COLLECTION) -> str:
    return f"at://{did}/{collection}/{rkey}"


def _quoted_uri(embed: Any) -> str:
    """The quoted post's URI: ``embed.record.uri`` or, with media, ``embed.record.record.uri``."""
    if not isinstance(embed, dict):
        return ""
    ref = embed.get("record")
    if isinstance(ref, dict) and isinstance(ref.get("record"), dict):
        ref = ref["record"]
    uri = ref.get("uri") if isinstance(ref, dict) else None
    # Quoting a feed, list or starter pack is not quoting a post.
    return uri if isinstance(uri, str) and f"/{POST_COLLECTION}/" in uri else ""


def _record_columns(post: dict[str, str], record: dict[str, Any], uri: str) -> None:
    """Columns that only depend on the record, shared by views and raw records."""
    post["text"] = rows.text(record.get("text"))
    langs = record.get("langs")
    post["lang"] = rows.text(langs[0]) if isinstance(langs, list) and langs else ""
    via = record.get("via")  # set by a few third-party clients
    post["source"] = via if isinstance(via, str) else ""
    reply = rows.obj(record.get("reply"))
    root = rows.text(rows.obj(reply.get("root")).get("uri"))
    parent = rows.text(rows.obj(reply.get("parent")).get("uri"))
    post["conversation_id"] = root or (uri if not parent else "")
    quoted = _quoted_uri(record.get("embed"))
    if quoted:
        post["reference_type"], post["referenced_tweet_id"] = rows.QUOTE, quoted
    elif parent:
        post["reference_type"], post["referenced_tweet_id"] = rows.REPLY, parent
    tags, mentions, links = [], [], []
    body = record.get("text")
    encoded = body.encode() if isinstance(body, str) else b""
    for facet in rows.dicts(record.get("facets")):
        for feature in rows.dicts(facet.get("features")):
            kind = str(feature.get("$type", ""))
            if kind.endswith("#tag"):
                tags.append(feature.get("tag"))
            elif kind.endswith("#link"):
                links.append(feature.get("uri"))
            elif kind.endswith("#mention"):
                mentions.append(_typed(encoded, rows.obj(facet.get("index"))))
    external = rows.obj(rows.obj(record.get("embed")).get("external")).get("uri")
    if isinstance(external, str) and rows.domain(external) not in GIF_HOSTS:
        links.append(external)  # a link card: often the post's only link; a GIF is media
    post["hashtags"] = rows.join(rows.unique_lower(tags))
    post["mentions"] = rows.join(rows.once(mentions))
    rows.link_columns(post, links)
    post["full_text"] = post["text"]


_HANDLE = re.compile(rb"@([A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])")


def _typed(text: bytes, index: dict[str, Any]) -> str:
    """The ``@handle`` a mention facet covers (its index counts UTF-8 bytes).

    Some clients count ``\r\n`` or emoji wrongly and the index drifts: then the handle
    nearest the index is taken, and none when there is none (never a piece of the text).
    """
    start, end = index.get("byteStart"), index.get("byteEnd")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end:
        return ""
    found = _HANDLE.fullmatch(text, start, end) or _HANDLE.search(
        text, max(0, start - 16), end + 16)
    return found[1].decode("utf-8", "replace") if found else ""


def _user(author: dict[str, Any], did: str, retrieved: str) -> dict[str, str]:
    verification = author.get("verification")
    status = verification.get("verifiedStatus") if isinstance(verification, dict) else None
    return rows.user_row(
        retrieved,
        did,
        username=author.get("handle"),
        name=author.get("displayName"),
        created_at=rows.iso_or_empty(author.get("createdAt")),
        description=author.get("description"),
        verified=status == "valid",
        protected=False,  # Bluesky has no private accounts
        followers_count=author.get("followersCount"),
        following_count=author.get("followsCount"),
        tweet_count=author.get("postsCount"),
    )


@rows.guard("bluesky-post")
def normalise_view(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """A post view, or a feed item (``{post, reply?, reason?}``) whose ``post`` is one.

    A repost ``reason`` does not change the row: the post is still its author's post.
    """
    inner = payload.get("post")
    view: dict[str, Any] = inner if isinstance(inner, dict) else payload
    uri = view.get("uri")
    if not isinstance(uri, str) or not uri.startswith("at://"):
        raise BadPost("Bluesky post view without an at:// uri")
    record = view.get("record")
    if not isinstance(record, dict):
        raise BadPost(f"Bluesky post view {uri} has no record")
    created = rows.to_datetime(record.get("createdAt"), "record.createdAt")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    author = rows.obj(view.get("author"))
    did = author.get("did") or uri[5:].split("/", 1)[0]
    user = _user(author, did, retrieved)

    post = rows.post_row(uri, did, created, retrieved, user)
    _record_columns(post, record, uri)
    rows.engagement(post, view.get("repostCount"), view.get("replyCount"),
                    view.get("likeCount"), view.get("quoteCount"))
    media = bluesky_view_media(view, uri)
    rows.media_columns(post, media)
    return Normalised("bluesky", uri, created, post, user, media)


@rows.guard("bluesky-record")
def normalise_record(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """A Jetstream or Tap ``app.bsky.feed.post`` create event."""
    did, collection, rkey, _, record = record_event_parts(payload)
    if not did or not rkey:
        raise BadPost("Bluesky record event without did or rkey")
    if collection != POST_COLLECTION or not isinstance(record, dict):
        raise BadPost(f"Bluesky event is not a post record ({collection or 'no collection'})")
    uri = post_uri(did, rkey)
    created = rows.to_datetime(record.get("createdAt"), "record.createdAt")
    # Jetstream's time_us (when it emitted the event) is the only clock a replayed archive has.
    retrieved = (
        rows.retrieved_at(payload, "") or rows.iso_or_empty(payload.get("time_us")) or retrieved_at
    )

    post = rows.post_row(uri, did, created, retrieved)
    _record_columns(post, record, uri)
    media = bluesky_record_media(record, did, uri)
    rows.media_columns(post, media)
    return Normalised("bluesky", uri, created, post, None, media)


FORMATS = {"bluesky-post": normalise_view, "bluesky-record": normalise_record}
