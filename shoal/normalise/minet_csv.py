"""twitwi/minet CSV rows (tweets and Bluesky posts) -> rows.

twitwi already flattened these posts, so this is mostly renaming columns. Dates come from
``timestamp_utc`` (epoch seconds): ``local_time`` and ``collection_time`` are naive local
times of the collecting machine, so the retrieval time is the dataflow's. Bluesky rows are
keyed by their ``at://`` URI like the Bluesky normaliser does, so a post read from an export
and from the API is one post.
"""

from __future__ import annotations

from typing import Any

from shoal.media.extract import csv_media
from shoal.model import BadPost, Normalised
from shoal.normalise._platform_rows import count, engagement
from shoal.normalise.twitter_v2 import (
    make_post,
    malformed_is_bad_post,
    parse_epoch,
    post_id,
    secondary,
    stored_retrieved_at,
)

# twitwi's own columns -> the appended post columns they fill as they are (``|``-joined
# already); the counts are set with ``engagement`` so that a non-number stays empty.
_TWEET_EXTRAS = (
    ("mentioned_names", "mentions"),
    ("links", "urls"),
    ("domains", "domains"),
    ("place_name", "place.full_name"),
    ("place_country_code", "place.country_code"),
    ("place_type", "place.type"),
    ("lat", "geo.lat"),
    ("lng", "geo.lng"),
)
_BLUESKY_EXTRAS = (
    ("mentioned_user_handles", "mentions"),
    ("links", "urls"),
    ("domains", "domains"),
)


def _extras(post: dict[str, str], row: dict[str, str], names: tuple[tuple[str, str], ...],
            reposts: str) -> None:
    g = row.get
    engagement(post, g(reposts), g("reply_count"), g("like_count"), g("quote_count"),
               g("impression_count"))
    for theirs, ours in names:
        post[ours] = g(theirs) or ""
    post["full_text"] = post["text"]  # twitwi's text is whole already (RT @user: ... too)

_TRUE = frozenset({"1", "true", "True", "TRUE"})
_FALSE = frozenset({"0", "false", "False", "FALSE"})


def _bool(cell: str) -> str:
    return "true" if cell in _TRUE else "false" if cell in _FALSE else ""


def _reference(row: dict[str, str], *pairs: tuple[str, str]) -> tuple[str, str]:
    for kind, column in pairs:
        if row.get(column):
            return kind, row[column]
    return "", ""


def _tweet(row: dict[str, str], retrieved: str) -> Normalised:
    tid = post_id(row.get("id"))
    created = parse_epoch(row.get("timestamp_utc"))
    g = row.get
    user = None
    if g("user_id"):
        user = {
            "id": row["user_id"],
            "username": g("user_screen_name", ""),
            "name": g("user_name", ""),
            "created_at": secondary(parse_epoch, g("user_timestamp_utc")),
            "location": g("user_location", ""),
            "description": g("user_description", ""),
            "verified": _bool(g("user_verified", "")),
            "protected": "",
            "followers_count": count(g("user_followers", "")),
            "following_count": count(g("user_friends", "")),
            "tweet_count": count(g("user_tweets", "")),
            "listed_count": count(g("user_lists", "")),
            "retrieved_at": retrieved,
        }
    media = csv_media(
        tid, "twitter", g("media_urls", ""), g("media_types", ""), g("media_files", "")
    )
    reference = _reference(
        row, ("retweeted", "retweeted_id"), ("quoted", "quoted_id"), ("replied_to", "to_tweetid")
    )
    post = make_post(
        tid,
        "",
        g("user_id", ""),
        created,
        retrieved,
        g("source_name", ""),
        g("lang", ""),
        g("text", ""),
        reference,
        user,
        g("hashtags", ""),
        media,
    )
    _extras(post, row, _TWEET_EXTRAS, "retweet_count")
    return Normalised("twitter", tid, created, post, user, media)


def _bluesky(row: dict[str, str], retrieved: str) -> Normalised:
    uri = row.get("uri", "")
    if not uri.startswith("at://"):
        raise BadPost("missing id" if not uri else f"invalid uri {uri!r}")
    created = parse_epoch(row.get("timestamp_utc"))
    g = row.get
    did = g("user_did") or uri[5:].split("/", 1)[0]
    user = {
        "id": did,
        "username": g("user_handle", ""),
        "name": g("user_display_name", ""),
        "created_at": secondary(parse_epoch, g("user_timestamp_utc")),
        "location": "",
        "description": "",
        "verified": "",
        "protected": "false",  # Bluesky has no private accounts
        "followers_count": "",
        "following_count": "",
        "tweet_count": "",
        "listed_count": "",
        "retrieved_at": retrieved,
    }
    parent = g("to_post_uri", "")
    # Same rule as the Bluesky normaliser: a root post is its own conversation.
    conversation = g("to_root_post_uri") or (uri if not parent else "")
    text = g("original_text", "") if "original_text" in row else g("text", "")
    media = csv_media(
        uri,
        "bluesky",
        g("media_urls", ""),
        g("media_types", ""),
        thumbnails=g("media_thumbnails", ""),
    )
    reference = _reference(row, ("quoted", "quoted_uri"), ("replied_to", "to_post_uri"))
    post = make_post(
        uri,
        conversation,
        did,
        created,
        retrieved,
        "",
        g("user_langs", "").split("|", 1)[0],
        text,
        reference,
        user,
        g("hashtags", ""),
        media,
    )
    _extras(post, row, _BLUESKY_EXTRAS, "repost_count")
    return Normalised("bluesky", uri, created, post, user, media)


@malformed_is_bad_post("twitwi CSV row")
def _row(payload: dict[str, Any], retrieved: str) -> Normalised:
    if "id" not in payload and "uri" in payload:
        return _bluesky(payload, retrieved)
    return _tweet(payload, retrieved)


def normalise_row(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """One CSV row (header -> cell) -> its row, author and media; Bluesky if it has a uri."""
    return _row(payload, stored_retrieved_at(payload, retrieved_at))


FORMATS = {"minet-csv": normalise_row}
