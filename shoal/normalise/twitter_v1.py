"""Twitter API v1.1 statuses, and X web GraphQL tweets through their v1.1-shaped ``legacy``.

The columns are those of the v2 rows (see :mod:`shoal.normalise.twitter_v2`), so an hour's
CSV does not depend on which API a collector used: v1.1 reference kinds are mapped to v2's
``retweeted``/``quoted``/``replied_to``, counts to the v2 names, and ``source`` to the client
name v2 gives (v1.1 wraps it in an ``<a>`` tag).
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from shoal.hours import utc_offset
from shoal.media.extract import v1_media
from shoal.model import BadPost, Normalised
from shoal.normalise._platform_rows import count, dicts, obj
from shoal.normalise.twitter_v2 import (
    checked,
    make_post,
    malformed_is_bad_post,
    parse_iso,
    post_id,
    readable,
    s,
    secondary,
    stored_retrieved_at,
    twitter_columns,
)

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def parse_twitter_date(value: Any, what: str = "created_at") -> datetime:
    """``Wed Oct 10 20:19:24 +0000 2018`` -> aware UTC datetime (strptime is 10x slower)."""
    if not isinstance(value, str) or not value:
        raise BadPost(f"missing {what}" if value in (None, "") else f"{what} is not a string")
    parts = value.split()
    try:
        if len(parts) != 6:
            return parse_iso(value, what)  # some exporters rewrite dates as ISO
        _, month, day, hms, offset, year = parts
        hour, minute, second = hms.split(":")
        dt = datetime(
            int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
        if offset != "+0000":
            if len(offset) != 5:
                raise ValueError(f"malformed UTC offset {offset!r}")
            dt -= utc_offset(offset)
    except (KeyError, ValueError, OverflowError) as exc:
        raise BadPost(f"unparseable {what} {value!r}: {exc}") from None
    return checked(dt, value, what)


def client_name(source: Any) -> str:
    """``<a href="..." rel="nofollow">Twitter Web App</a>`` -> ``Twitter Web App``."""
    if not isinstance(source, str):
        return ""
    if source.startswith("<a"):
        start = source.find(">") + 1
        end = source.find("</a>", start)
        return source[start:end] if start and end > 0 else source
    return source


def _user(user: Any, retrieved: str) -> dict[str, str] | None:
    if not isinstance(user, dict):
        return None
    uid = user.get("id_str") or user.get("id")
    if not uid:
        return None
    return {
        "id": s(uid),
        "username": s(user.get("screen_name")),
        "name": s(user.get("name")),
        "created_at": secondary(parse_twitter_date, user.get("created_at")),
        "location": s(user.get("location")),
        "description": s(user.get("description")),
        "verified": s(user.get("verified")),
        "protected": s(user.get("protected")),
        "followers_count": count(user.get("followers_count")),
        "following_count": count(user.get("friends_count")),
        "tweet_count": count(user.get("statuses_count")),
        "listed_count": count(user.get("listed_count")),
        "retrieved_at": retrieved,
    }


def _reference(tweet: dict[str, Any]) -> tuple[str, str]:
    retweeted = tweet.get("retweeted_status")
    if isinstance(retweeted, dict):
        return "retweeted", s(retweeted.get("id_str") or retweeted.get("id"))
    quoted = tweet.get("quoted_status")
    qid = tweet.get("quoted_status_id_str") or (
        quoted.get("id_str") if isinstance(quoted, dict) else None
    )
    if qid:
        return "quoted", s(qid)
    reply = tweet.get("in_reply_to_status_id_str") or tweet.get("in_reply_to_status_id")
    return ("replied_to", s(reply)) if reply else ("", "")


def _v1_text(tweet: dict[str, Any]) -> tuple[Any, Any]:
    """A status's whole text and its entities: extended (280 characters, long posts) first."""
    ext = tweet.get("extended_tweet")
    if not isinstance(ext, dict):
        ext = {}
    body = ext.get("full_text") or tweet.get("full_text") or tweet.get("text")
    return body, ext.get("entities") or tweet.get("entities")


def _v1_full_text(body: Any, entities: Any, tweet: dict[str, Any]) -> str:
    """The readable text; a retweet's as ``RT @user: `` and the whole retweeted text (v1.1
    truncates ``text``)."""
    original = tweet.get("retweeted_status")
    if isinstance(original, dict):
        whole, its_entities = _v1_text(original)
        name = obj(original.get("user")).get("screen_name")
        if isinstance(whole, str) and whole and isinstance(name, str) and name:
            return f"RT @{name}: {readable(whole, its_entities)}"
    return readable(body, entities)


def _v1_metrics(tweet: dict[str, Any]) -> dict[str, Any]:
    """v1.1 counts under their v2 names (reply and quote counts only in premium payloads)."""
    return {
        "retweet_count": tweet.get("retweet_count"),
        "reply_count": tweet.get("reply_count"),
        "like_count": tweet.get("favorite_count"),
        "quote_count": tweet.get("quote_count"),
        "impression_count": obj(tweet.get("views")).get("count"),  # GraphQL's view count
    }


def _normalise_v1(tweet: dict[str, Any], retrieved_at: str) -> Normalised:
    """One v1.1 status -> its row, its author's row and its media (type errors escape)."""
    tid = post_id(tweet.get("id_str") or tweet.get("id"))
    created = parse_twitter_date(tweet.get("created_at"))
    retrieved = stored_retrieved_at(tweet, retrieved_at)
    text, entities = _v1_text(tweet)
    tags = entities.get("hashtags") if isinstance(entities, dict) else None
    hashtags = (
        "|".join(s(t["text"]) for t in tags if isinstance(t, dict) and "text" in t) if tags else ""
    )
    user = _user(tweet.get("user"), retrieved)
    media = v1_media(tweet, tid)
    post = make_post(
        tid,
        s(tweet.get("conversation_id_str")),
        user["id"] if user else "",
        created,
        retrieved,
        client_name(tweet.get("source")),
        s(tweet.get("lang")),
        text,
        _reference(tweet),
        user,
        hashtags,
        media,
    )
    ents = obj(entities)
    twitter_columns(
        post,
        _v1_metrics(tweet),
        [m.get("screen_name") for m in dicts(ents.get("user_mentions"))],
        [u.get("expanded_url") or u.get("url") for u in dicts(ents.get("urls"))],
        obj(tweet.get("place")),
        tweet.get("coordinates"),
        _v1_full_text(text, entities, tweet),
    )
    return Normalised("twitter", tid, created, post, user, media)


# GraphQL tweets go through _normalise_v1 too, under their own malformed_is_bad_post.
normalise_v1 = malformed_is_bad_post("v1.1 tweet")(_normalise_v1)


# --- X web GraphQL (Zeeschuimer) ---------------------------------------------------------------


def _unwrap(result: Any) -> dict[str, Any]:
    """The Tweet object inside visibility wrappers (``TweetWithVisibilityResults``)."""
    for _ in range(4):
        if not isinstance(result, dict) or "legacy" in result:
            break
        result = result.get("tweet") or result.get("result") or result.get("tweet_results")
    if not isinstance(result, dict) or not isinstance(result.get("legacy"), dict):
        kind = result.get("__typename") if isinstance(result, dict) else None
        raise BadPost(f"GraphQL result without a legacy tweet ({kind or 'unknown shape'})")
    return result


def graphql_to_v1(result: Any, depth: int = 0) -> dict[str, Any]:
    """A GraphQL tweet result as the v1.1 status its ``legacy`` nearly is.

    ``legacy`` lacks the user (``core.user_results``), the client, the long-post text
    (``note_tweet``) and the quoted tweet (``quoted_status_result``); they are put back where
    v1.1 has them. Only the top level is copied: the nested objects are shared, not cloned.
    """
    tweet = _unwrap(result)
    legacy = tweet["legacy"]
    out = dict(legacy)
    out["id_str"] = s(tweet.get("rest_id") or legacy.get("id_str"))
    core = tweet.get("core")
    user_result = _unwrap_user(core.get("user_results") if isinstance(core, dict) else None)
    if user_result is not None:
        out["user"] = user_result
    if "source" in tweet:
        out["source"] = tweet["source"]
    if isinstance(tweet.get("views"), dict):  # {"count": "1234", "state": ...}, not in legacy
        out["views"] = tweet["views"]
    note = tweet.get("note_tweet")
    note = note.get("note_tweet_results", {}).get("result") if isinstance(note, dict) else None
    if isinstance(note, dict) and isinstance(note.get("text"), str):
        out["extended_tweet"] = {"full_text": note["text"], "entities": note.get("entity_set")}
    if depth < 2:
        for holder, key, target in (
            (tweet, "quoted_status_result", "quoted_status"),
            (legacy, "retweeted_status_result", "retweeted_status"),
        ):
            nested = holder.get(key)
            if isinstance(nested, dict):
                # A tombstoned quote does not make the quoting post bad.
                with suppress(BadPost):
                    out[target] = graphql_to_v1(nested.get("result"), depth + 1)
    return out


def _unwrap_user(results: Any) -> dict[str, Any] | None:
    result = results.get("result") if isinstance(results, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("legacy"), dict):
        return None
    user = dict(result["legacy"])
    user["id_str"] = s(result.get("rest_id") or user.get("id_str"))
    # Since 2024 X moved some profile fields out of ``legacy``.
    moved = result.get("core")
    if isinstance(moved, dict):
        for key in ("screen_name", "name", "created_at"):
            if key in moved:
                user[key] = moved[key]
    location = result.get("location")
    if isinstance(location, dict) and "location" in location:
        user["location"] = location["location"]
    return user


def _zeeschuimer_time(ms: Any) -> str:
    if isinstance(ms, int | float) and not isinstance(ms, bool) and ms > 0:
        try:
            return datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=0).isoformat()
        except (OverflowError, OSError, ValueError):
            return ""
    return ""


@malformed_is_bad_post("GraphQL tweet")
def normalise_graphql(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """A GraphQL tweet result, bare or still in its Zeeschuimer envelope."""
    retrieved = stored_retrieved_at(payload, retrieved_at)
    result: Any = payload
    if "legacy" not in payload and isinstance(payload.get("data"), dict):
        result = payload["data"]  # the envelope: its collection time is the retrieval
        retrieved = _zeeschuimer_time(payload.get("timestamp_collected")) or retrieved
    return _normalise_v1(graphql_to_v1(result), retrieved)


FORMATS = {"twitter-v1": normalise_v1, "twitter-graphql": normalise_graphql}
