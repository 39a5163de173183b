"""Twitter API v2 tweets (self-contained, as ``twarc2 flatten`` writes them) -> rows.

The helpers at the top are shared with the v1.1 and minet CSV normalisers so the three
Twitter sources write the same dialect: dates ``YYYY-MM-DDTHH:MM:SS+00:00``, booleans
``true``/``false``, absent values ``""``, lists ``|``-joined in the post's order.
Malformed payloads (wrong JSON types anywhere) raise BadPost, never TypeError, because the
dataflow only sets aside BadPost.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shoal import hours
from shoal.ids import id_problem, valid_id
from shoal.media.extract import v2_media_and_missing
from shoal.model import USER_COLUMNS, BadPost, MediaRef, Normalised
from shoal.normalise._platform_rows import (
    EMPTY_EXTRA,
    count,
    dicts,
    engagement,
    link_columns,
    obj,
    once,
    text,
)

# Twitter opened in 2006; dates outside 2006-2099 are parsing accidents that would open
# absurd hourly files.
MIN_YEAR, MAX_YEAR = 2006, 2100
# Long posts (note tweets) stop at 25,000 characters; far beyond that is not a post but an
# attack on whatever stores the row.
MAX_TEXT_CHARS = 100_000


# One rule for column values on every platform.
s = text


Normaliser = Callable[[dict[str, Any], str], Normalised]


def malformed_is_bad_post(what: str) -> Callable[[Normaliser], Normaliser]:
    """Turn a wrong JSON type met anywhere in a payload into BadPost, reason ``malformed {what}``.

    The dataflow only sets aside BadPost; any other error would stop it. A decorator rather
    than a ``with`` block, so that the hot path pays no more than the one call it paid before.
    """

    def wrap(fn: Normaliser) -> Normaliser:
        @functools.wraps(fn)
        def guarded(payload: dict[str, Any], retrieved_at: str) -> Normalised:
            try:
                return fn(payload, retrieved_at)
            except BadPost:
                raise
            except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
                raise BadPost(f"malformed {what}: {exc!r}") from None

        return guarded

    return wrap


def checked(dt: datetime, raw: Any, what: str = "created_at") -> datetime:
    if not MIN_YEAR <= dt.year < MAX_YEAR:
        raise BadPost(f"absurd {what} {raw!r} (outside {MIN_YEAR}-{MAX_YEAR - 1})")
    return dt


def parse_iso(value: Any, what: str = "created_at") -> datetime:
    """ISO 8601 (v2's ``2021-05-11T21:36:01.000Z``) -> aware UTC datetime, whole seconds."""
    if not isinstance(value, str) or not value:
        raise BadPost(f"missing {what}" if value in (None, "") else f"{what} is not a string")
    try:
        dt = hours.parse_iso(value)
    except ValueError as exc:
        raise BadPost(f"unparseable {what} {value!r}: {exc}") from None
    return checked(dt.replace(microsecond=0), value, what)


def parse_epoch(value: Any, what: str = "created_at") -> datetime:
    """Seconds since the epoch (twitwi's ``timestamp_utc``, maybe ``"1610005273.0"``)."""
    if value in (None, ""):
        raise BadPost(f"missing {what}")
    try:
        dt = datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise BadPost(f"unparseable {what} {value!r}") from None
    return checked(dt.replace(microsecond=0), value, what)


def secondary(parse: Any, value: Any) -> str:
    """A date that is not the post's (account creation): a bad one blanks the cell."""
    if value in (None, ""):
        return ""
    try:
        return parse(value, "date").isoformat()
    except BadPost:
        return ""


def stored_retrieved_at(payload: dict[str, Any], fallback: str) -> str:
    """The retrieval time recorded with the post beats the dataflow's clock."""
    meta = payload.get("__twarc")
    if isinstance(meta, dict):
        when = meta.get("retrieved_at")
        if isinstance(when, str) and when:
            return when
    when = payload.get("__retrieved_at")
    return when if isinstance(when, str) and when else fallback


def post_id(value: Any) -> str:
    tid = valid_id(value)
    if tid is None:
        raise BadPost("missing id" if value in (None, "") else f"post {id_problem(value)}")
    return tid


def checked_text(value: Any) -> str:
    text = s(value)
    if len(text) > MAX_TEXT_CHARS:
        raise BadPost(f"text too long: {len(text)} characters > {MAX_TEXT_CHARS}")
    return text


_NO_USER: dict[str, str] = {}


def make_post(
    tid: str,
    conversation_id: str,
    author_id: str,
    created: datetime,
    retrieved: str,
    source: str,
    lang: str,
    text: Any,
    reference: tuple[str, str],
    user: dict[str, str] | None,
    hashtags: str,
    media: list[MediaRef],
) -> dict[str, str]:
    """The post row, keys in POST_COLUMNS order; media columns position for position.

    The columns after the seed layout's start empty: :func:`twitter_columns` fills them.
    """
    u = user or _NO_USER
    return {
        "id": tid,
        "conversation_id": conversation_id,
        "author_id": author_id,
        "created_at": created.isoformat(),
        "retrieved_at": retrieved,
        "source": source,
        "lang": lang,
        "text": checked_text(text),
        "reference_type": reference[0],
        "referenced_tweet_id": reference[1],
        "author.created_at": u.get("created_at", ""),
        "author.location": u.get("location", ""),
        "author.name": u.get("name", ""),
        "author.username": u.get("username", ""),
        "author.verified": u.get("verified", ""),
        "author.protected": u.get("protected", ""),
        "author.public_metrics.followers_count": u.get("followers_count", ""),
        "author.public_metrics.following_count": u.get("following_count", ""),
        "author.public_metrics.tweet_count": u.get("tweet_count", ""),
        "author.public_metrics.listed_count": u.get("listed_count", ""),
        "hashtags": hashtags,
        "media_keys": "|".join(m.media_key for m in media) if media else "",
        "media_types": "|".join(m.type for m in media) if media else "",
        "media_urls": "|".join(m.url for m in media) if media else "",
        **EMPTY_EXTRA,
    }


def coordinate(value: Any) -> str:
    """A latitude or longitude as the payload wrote it; "" for anything but a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    return repr(value)


def twitter_columns(
    post: dict[str, str],
    metrics: dict[str, Any],
    mentions: list[Any],
    urls: list[Any],
    place: dict[str, Any],
    point: Any,
    full_text: str,
) -> None:
    """Fill the columns appended after the seed layout's (v2 and v1.1 alike).

    ``point`` is a GeoJSON ``Point`` (``coordinates: [lng, lat]``), the tweet's exact location.
    """
    engagement(
        post,
        metrics.get("retweet_count"),
        metrics.get("reply_count"),
        metrics.get("like_count"),
        metrics.get("quote_count"),
        metrics.get("impression_count"),
    )
    post["mentions"] = "|".join(once(mentions))
    link_columns(post, urls)
    post["place.id"] = s(place.get("id") or place.get("place_id"))
    post["place.full_name"] = s(place.get("full_name"))
    post["place.country_code"] = s(place.get("country_code"))
    post["place.type"] = s(place.get("place_type"))
    lnglat = obj(point).get("coordinates")
    if isinstance(lnglat, list) and len(lnglat) == 2:
        post["geo.lng"], post["geo.lat"] = coordinate(lnglat[0]), coordinate(lnglat[1])
    post["full_text"] = full_text


def _v2_text(tweet: dict[str, Any]) -> tuple[Any, Any]:
    """A v2 tweet's whole text and the entities that go with it (a long post's note)."""
    note = tweet.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str):
        return note["text"], note.get("entities") or tweet.get("entities")
    return tweet.get("text"), tweet.get("entities")


def readable(body: Any, entities: Any) -> str:
    """The text as a reader sees it, as twitwi writes it: ``t.co`` links replaced by the URLs
    they stand for, the API's HTML escapes (``&amp;``, ``&lt;``, ``&gt;``) decoded."""
    body = s(body)
    ents = obj(entities)
    for link in dicts(ents.get("urls")) + dicts(ents.get("media")):
        short, long = link.get("url"), link.get("expanded_url")
        if isinstance(short, str) and short and isinstance(long, str) and long:
            body = body.replace(short, long)
    return html.unescape(body) if "&" in body else body


def _v2_full_text(body: Any, entities: Any, refs: Any) -> str:
    """The readable text; a retweet's with the retweeted post's whole text (the API cuts it)."""
    for ref in dicts(refs):
        if ref.get("type") != "retweeted":
            continue
        original, its_entities = _v2_text(ref)
        username = obj(ref.get("author")).get("username")
        if isinstance(original, str) and original and isinstance(username, str) and username:
            return f"RT @{username}: {readable(original, its_entities)}"
    return readable(body, entities)


# --- v2 --------------------------------------------------------------------------------------

# An account's creation date, as the API gives it -> as the files keep it. Authors post again
# and again, and parsing the same date for each of their tweets was a tenth of the cost.
_ACCOUNT_CREATED: dict[str, str] = {}


def _account_created(value: Any) -> str:
    if not isinstance(value, str):
        return secondary(parse_iso, value)
    known = _ACCOUNT_CREATED.get(value)
    if known is None:
        if len(_ACCOUNT_CREATED) >= 100_000:
            _ACCOUNT_CREATED.clear()
        known = _ACCOUNT_CREATED[value] = secondary(parse_iso, value)
    return known


def _user(author: Any, retrieved: str, author_id: Any) -> dict[str, str] | None:
    if not isinstance(author, dict) or not author.get("id"):
        # twarc inlines {} for an author missing from includes (withheld, suspended). The
        # users file still gets a row for the id, with an empty retrieved_at so that it
        # never wins over a real profile ("newest retrieved_at wins" in the hourly writer).
        if not author_id:
            return None
        return {**dict.fromkeys(USER_COLUMNS, ""), "id": s(author_id)}
    pm = author.get("public_metrics")
    if not isinstance(pm, dict):
        pm = {}
    return {
        "id": s(author["id"]),
        "username": s(author.get("username")),
        "name": s(author.get("name")),
        "created_at": _account_created(author.get("created_at")),
        "location": s(author.get("location")),
        "description": s(author.get("description")),
        "verified": s(author.get("verified")),
        "protected": s(author.get("protected")),
        "followers_count": count(pm.get("followers_count")),
        "following_count": count(pm.get("following_count")),
        "tweet_count": count(pm.get("tweet_count")),
        "listed_count": count(pm.get("listed_count")),
        "retrieved_at": retrieved,
    }


@malformed_is_bad_post("v2 tweet")
def normalise_v2(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    """One flattened v2 tweet -> its row, its author's row and its media."""
    tid = post_id(payload.get("id"))
    created = parse_iso(payload.get("created_at"))
    retrieved = stored_retrieved_at(payload, retrieved_at)
    text, entities = _v2_text(payload)
    reference = ("", "")
    refs = payload.get("referenced_tweets")
    if isinstance(refs, list) and refs and isinstance(refs[0], dict):
        reference = (s(refs[0].get("type")), s(refs[0].get("id")))
    tags = entities.get("hashtags") if isinstance(entities, dict) else None
    hashtags = (
        "|".join(s(t["tag"]) for t in tags if isinstance(t, dict) and "tag" in t) if tags else ""
    )
    user = _user(payload.get("author"), retrieved, payload.get("author_id"))
    media, missing = v2_media_and_missing(payload, tid)
    post = make_post(
        tid,
        s(payload.get("conversation_id")),
        s(payload.get("author_id") or (user and user["id"])),
        created,
        retrieved,
        s(payload.get("source")),
        s(payload.get("lang")),
        text,
        reference,
        user,
        hashtags,
        media,
    )
    ents = obj(entities)
    twitter_columns(
        post,
        obj(payload.get("public_metrics")),
        [m.get("username") for m in dicts(ents.get("mentions"))],
        [u.get("expanded_url") or u.get("url") for u in dicts(ents.get("urls"))],
        obj(payload.get("geo")),
        obj(payload.get("geo")).get("coordinates"),
        _v2_full_text(text, entities, refs),
    )
    return Normalised("twitter", tid, created, post, user, media, missing)


FORMATS = {"twitter-v2": normalise_v2}
