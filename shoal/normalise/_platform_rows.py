"""Helpers shared by the Bluesky, Mastodon, TikTok and Instagram normalisers.

They exist so that every platform writes the same CSV dialect: every column a string, dates
as ISO 8601 UTC to the second, booleans as ``true``/``false``, lists ``|``-joined. The Twitter
normalisers keep their own copies because their quirks (v1 date format, v2 includes) differ.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shoal.hours import parse_iso
from shoal.model import ENGAGEMENT_COLUMNS, POST_COLUMNS, USER_COLUMNS, BadPost, MediaRef
from shoal.names import hashtags_in_text

# The same vocabulary as the Twitter v2 ``referenced_tweets[].type`` the 2021 pipeline wrote,
# so that one filter (``reference_type == "retweeted"``) works across platforms.
REPLY = "replied_to"
QUOTE = "quoted"
REPOST = "retweeted"

_POST_KEYS: tuple[str, ...] = tuple(c for c in POST_COLUMNS if c != "collectors")
# The columns appended after the seed layout's (see POST_COLUMNS): empty unless a platform
# fills them.
EXTRA_KEYS: tuple[str, ...] = POST_COLUMNS[POST_COLUMNS.index("collectors") + 1 :]
EMPTY_EXTRA: dict[str, str] = dict.fromkeys(EXTRA_KEYS, "")

# Twitter was founded in 2006: anything earlier (or after 2100) is a parsing accident, not a
# post, and would create absurd hourly files.
_MIN = datetime(2006, 1, 1, tzinfo=UTC)
_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is an object, else an empty one: payloads put odd types anywhere."""
    return value if isinstance(value, dict) else {}


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list, skipping anything else; [] when ``value`` is not a list."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def guard(fmt: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn a type surprise deep in a payload into BadPost, the one error normalisers raise.

    The code checks the shapes it relies on; this is the backstop for shapes nobody foresaw,
    so that one odd post costs one row, never the dataflow.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def guarded(payload: Any, retrieved_at: str) -> Any:
            if not isinstance(payload, dict):
                raise BadPost(f"{fmt} payload is {type(payload).__name__}, not an object")
            try:
                return fn(payload, retrieved_at)
            except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
                if isinstance(exc, BadPost):
                    raise
                raise BadPost(f"malformed {fmt} payload: {exc!r}") from None

        return guarded

    return wrap


def empty_post() -> dict[str, str]:
    """A row with every column present, so CSV writers never meet a missing key."""
    return dict.fromkeys(_POST_KEYS, "")


def empty_user() -> dict[str, str]:
    return dict.fromkeys(USER_COLUMNS, "")


def post_row(
    post_id: str,
    author_id: str,
    created: datetime,
    retrieved: str,
    user: dict[str, str] | None = None,
) -> dict[str, str]:
    """A post row with what every platform knows the same way: identity, times, author.

    The platform fills in what its payload says differently (text, references, media).
    """
    post = empty_post()
    post["id"] = post_id
    post["author_id"] = author_id
    post["created_at"] = iso(created)
    post["retrieved_at"] = retrieved
    if user is not None:
        author_columns(post, user)
    return post


def user_row(
    retrieved: str,
    id: str,
    *,
    username: Any = None,
    name: Any = None,
    created_at: str = "",
    description: Any = None,
    verified: Any = None,
    protected: Any = None,
    followers_count: Any = None,
    following_count: Any = None,
    tweet_count: Any = None,
) -> dict[str, str]:
    """A users-file row from the profile fields a platform has; the others stay blank.

    Values are taken from the payload as they are and made column text here. ``id`` is taken
    as the caller built it, because it is also the post's ``author_id`` and must be the same
    value.
    """
    user = empty_user()
    user["id"] = id
    user["username"] = text(username)
    user["name"] = text(name)
    user["created_at"] = created_at
    user["description"] = text(description)
    user["verified"] = text(verified)
    user["protected"] = text(protected)
    user["followers_count"] = count(followers_count)
    user["following_count"] = count(following_count)
    user["tweet_count"] = count(tweet_count)
    user["retrieved_at"] = retrieved
    return user


def flag(obj: dict[str, Any], key: str) -> bool | None:
    """A yes/no field, or None (a blank cell) when the payload does not say."""
    return bool(obj[key]) if key in obj else None


def text(value: Any) -> str:
    """A column value: None is empty, booleans are lower-case words, the rest ``str()``."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


def to_datetime(value: Any, what: str = "created_at") -> datetime:
    """Parse an ISO string or an epoch number (s, ms or µs) into an aware UTC datetime.

    Raises BadPost for missing, unparseable or absurd values, because an undated post cannot
    be put in an hourly file.
    """
    if value is None or value == "":
        raise BadPost(f"missing {what}")
    try:
        if isinstance(value, bool):
            raise TypeError("boolean")
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            num = float(value)
            if num > 1e14:  # microseconds (Jetstream time_us)
                num /= 1e6
            elif num > 1e11:  # milliseconds (Zeeschuimer)
                num /= 1e3
            dt = datetime.fromtimestamp(num, UTC)
        elif isinstance(value, str):
            dt = parse_iso(value.strip())
        else:
            raise TypeError(type(value).__name__)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise BadPost(f"unparseable {what} {value!r}: {exc}") from None
    if not _MIN <= dt < _MAX:
        raise BadPost(f"absurd {what} {value!r} (outside 2006-2100)")
    return dt


def iso(dt: datetime) -> str:
    """ISO 8601 UTC without microseconds: the form of the 2021 files' date columns."""
    return dt.astimezone(UTC).replace(microsecond=0).isoformat()


def iso_or_empty(value: Any) -> str:
    """For secondary dates (account creation): a bad one blanks the cell, not the post."""
    if value is None or value == "":
        return ""
    try:
        return iso(to_datetime(value))
    except BadPost:
        return ""


def retrieved_at(payload: dict[str, Any], fallback: str) -> str:
    """The collection time a reader stored in the payload wins over the dataflow's clock."""
    stored = payload.get("__retrieved_at")
    if isinstance(stored, str) and stored:
        return stored
    return fallback


def join(values: Iterable[str]) -> str:
    return "|".join(values)


def unique_lower(tags: Iterable[Any]) -> list[str]:
    """Hashtags lower-cased, without '#', in the order written, each once."""
    seen: dict[str, None] = {}
    for tag in tags:
        if isinstance(tag, str):
            tag = tag.strip().lstrip("#").lower()
            if tag:
                seen.setdefault(tag, None)
    return list(seen)


def hashtags_in(body: str) -> list[str]:
    """Hashtags as typed in the text, for platforms whose payload has no tag entities:
    letters, digits, underscore and marks, what Instagram and TikTok accept in tags
    (:func:`shoal.names.hashtags_in_text`)."""
    return unique_lower(hashtags_in_text(body)) if "#" in body else []


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_PARA = re.compile(r"</p>\s*<p[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def html_to_text(markup: str) -> str:
    """Mastodon's HTML ``content`` as the plain text a reader sees.

    Link text keeps Mastodon's ``invisible`` spans, which hold the parts of a URL the web UI
    hides, so stripping tags restores the full URL.
    """
    if "<" not in markup and "&" not in markup:
        return markup
    markup = _PARA.sub("\n\n", _BREAK.sub("\n", markup))
    return html.unescape(_TAG.sub("", markup)).strip()


def media_columns(post: dict[str, str], media: list[MediaRef]) -> None:
    """Fill media_keys/media_types/media_urls from the extracted media, position for position."""
    post["media_keys"] = join(m.media_key for m in media)
    post["media_types"] = join(m.type for m in media)
    post["media_urls"] = join(m.url for m in media)


def author_columns(post: dict[str, str], user: dict[str, str]) -> None:
    """Copy the author's profile into the post row's ``author.*`` columns."""
    post["author.created_at"] = user["created_at"]
    post["author.location"] = user["location"]
    post["author.name"] = user["name"]
    post["author.username"] = user["username"]
    post["author.verified"] = user["verified"]
    post["author.protected"] = user["protected"]
    post["author.public_metrics.followers_count"] = user["followers_count"]
    post["author.public_metrics.following_count"] = user["following_count"]
    post["author.public_metrics.tweet_count"] = user["tweet_count"]
    post["author.public_metrics.listed_count"] = user["listed_count"]


def count(value: Any) -> str:
    """An engagement count as a column: a whole number, else empty (never a guess).

    Payloads give counts as numbers or numeric strings (TikTok's ``statsV2``); anything else
    (a missing field, ``null``, a boolean, a negative number, digits of another script) is
    unknown, which an empty cell says, as the CSV readers already did with ``"-7"``.
    """
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value) if value >= 0 else ""
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return str(int(value))
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    return ""


def engagement(
    post: dict[str, str],
    retweets: Any = None,
    replies: Any = None,
    likes: Any = None,
    quotes: Any = None,
    impressions: Any = None,
) -> None:
    """Fill the ``public_metrics.*`` columns, in ENGAGEMENT_COLUMNS order."""
    for column, value in zip(
        ENGAGEMENT_COLUMNS, (retweets, replies, likes, quotes, impressions), strict=True
    ):
        post[column] = count(value)


def domain(url: str) -> str:
    """The host of a URL, lower-case, without ``www.`` (minet's ``domains``); "" if none."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def once(values: Iterable[Any]) -> list[str]:
    """Non-empty strings, each once, in the order met."""
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def link_columns(post: dict[str, str], urls: Iterable[Any]) -> None:
    """``urls`` and their ``domains``, each once, in the post's order."""
    links = once(urls)
    post["urls"] = join(links)
    post["domains"] = join(once(domain(u) for u in links))
