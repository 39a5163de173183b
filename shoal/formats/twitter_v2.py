"""Twitter API v2: twarc2 pages, single API responses and twarc2-flattened tweets.

A page holds tweets in ``data`` and what they point to in ``includes``; a post published
alone must not need its page, so each tweet is made self-contained the way ``twarc2 flatten``
does it (``author``, ``attachments.media``, ``referenced_tweets[]`` with the referenced
tweet's own author and media, ``in_reply_to_user``, ``geo`` place, ``poll``, mention users,
``__twarc`` and ``matching_rules``). Missing includes become ``{}`` exactly as in twarc, so a
payload from this reader and a line of a ``twarc2 flatten`` file look alike to the normaliser.

Unlike twarc's recursive ``expand_payload`` this only visits the keys that can hold
expansions, and expands each included tweet once per page: pages of 100 tweets retweeting the
same original would otherwise redo that work a hundred times. Payloads of one page share the
included objects (users, media, referenced tweets); they are read-only from here on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from shoal.formats._array import prefer_walk, salvage_values
from shoal.formats._json_records import bad_json_reason
from shoal.formats._open import TRUNCATED, open_input, read_input
from shoal.formats._sniff import JsonHead
from shoal.ids import id_problem, valid_id
from shoal.model import Control, DeadLetter, RawPost

NAME = "twitter-v2"

_PAGE_KEYS = frozenset({"data", "includes", "errors", "meta", "__twarc", "matching_rules"})
# Keys of collection envelopes that wrap a ``data`` member but are not API pages.
_ENVELOPE_KEYS = ("source_platform", "nav_index", "item_id", "timestamp_collected")

MAX_LINE_BYTES = 64 << 20  # one search page of 500 tweets with includes is ~4 MB
MAX_DOCUMENT_BYTES = 256 << 20  # above this a file is only read line by line
_RAW_KEEP = 64 << 10  # bytes of an oversized line kept in its dead letter


# --- reading JSON files (shared with the v1.1 reader) --------------------------------------


def read_values(
    path: Path, fmt: str, fn: Callable[[Any, str], Iterator[RawPost | DeadLetter | Control]]
) -> Iterator[RawPost | DeadLetter | Control]:
    """A reader over :func:`iter_json`: ``fn(value, source)`` reads what one JSON value holds."""
    for item in iter_json(path, fmt):
        if isinstance(item, DeadLetter):
            yield item
        else:
            yield from fn(*item)


def _bad_json(line: bytes, exc: Exception, source: str, fmt: str) -> DeadLetter:
    return DeadLetter(reason=bad_json_reason(line, exc, ""), source=source, raw=line,
                      format=fmt)


def iter_json(path: Path, fmt: str) -> Iterator[tuple[Any, str] | DeadLetter]:
    """Each JSON value of a file with its ``path:line`` source, or a DeadLetter.

    A file whose first value fits on its first line is JSON Lines (streamed, constant
    memory); otherwise it is one (pretty-printed) document parsed whole, unless that fails
    too, in which case it is JSON Lines with a broken first line.
    """
    with open_input(path) as fh:
        first_no = 0
        first = b""
        try:
            for first_no, first in enumerate(fh, 1):  # noqa: B007 - kept after the loop
                if first.strip():
                    break
            else:
                return
        except TRUNCATED:  # a compressed file cut inside its first line: what it holds
            first_no, first = 1, read_input(path)
        head = first.lstrip(b"\xef\xbb\xbf").rstrip(b"\r\n")
        try:
            value = orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            if path.stat().st_size <= MAX_DOCUMENT_BYTES:
                data = read_input(path)
                try:
                    whole = orjson.loads(data.lstrip(b"\xef\xbb\xbf"))
                except orjson.JSONDecodeError:
                    # Cut short, or values one after another (``jq .``, ``cat a b``): the
                    # whole values are read; broken in the middle, it is read line by line.
                    parts = list(salvage_values(data))
                    if prefer_walk(parts, data):
                        for part in parts:
                            where = part.source(path)
                            yield (DeadLetter(part.reason, where, part.raw, fmt) if part.reason
                                   else (part.value, where))
                        return
                else:
                    yield whole, f"{path}:{first_no}"
                    return
            yield _bad_json(head, exc, f"{path}:{first_no}", fmt)
        else:
            yield value, f"{path}:{first_no}"
        for lineno, line in enumerate(fh, first_no + 1):
            if len(line) > MAX_LINE_BYTES:
                yield DeadLetter(
                    reason=f"line too large: {len(line)} bytes > {MAX_LINE_BYTES}",
                    source=f"{path}:{lineno}",
                    raw=line[:_RAW_KEEP],
                    format=fmt,
                )
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if line.strip():
                    yield _bad_json(line.rstrip(b"\r\n"), exc, f"{path}:{lineno}", fmt)
                continue
            yield value, f"{path}:{lineno}"


def raw_bytes(value: Any) -> bytes:
    """A parsed value back as bytes for a dead letter (best effort, never raises)."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value).encode("utf-8", "backslashreplace")


# --- recognising v2 --------------------------------------------------------------------------


def _is_page(obj: dict[str, Any]) -> bool:
    if any(k in obj for k in _ENVELOPE_KEYS):
        return False
    data = obj.get("data")
    if data is None:
        # An errors-only page (twarc writes them to the same file as the tweets).
        errors = obj.get("errors")
        return (
            isinstance(errors, list)
            and obj.keys() <= _PAGE_KEYS
            and ("__twarc" in obj or any(isinstance(e, dict) and "title" in e for e in errors))
        )
    if not (obj.keys() <= _PAGE_KEYS or "includes" in obj or "__twarc" in obj):
        return False
    sample = data[0] if isinstance(data, list) and data else data
    if isinstance(data, list) and not data:
        return True
    return isinstance(sample, dict) and "text" in sample


def _is_flat_tweet(obj: dict[str, Any]) -> bool:
    if "data" in obj or "id_str" in obj or "user" in obj or "account" in obj:
        return False
    if "id" not in obj or "text" not in obj:
        return False
    author = obj.get("author")
    return (
        "author_id" in obj
        or "conversation_id" in obj
        or "edit_history_tweet_ids" in obj
        or (isinstance(author, dict) and "username" in author)
    )


def sniff(head: object) -> bool:
    if not isinstance(head, JsonHead) or not isinstance(head.first, dict):
        return False
    return _is_page(head.first) or _is_flat_tweet(head.first)


# --- expansion -----------------------------------------------------------------------------


def _index(items: Any, key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            value = item.get(key)
            if isinstance(value, str):
                out[value] = item
    return out


class _Includes:
    """One page's ``includes``, indexed; included tweets are expanded lazily and once."""

    __slots__ = ("_base", "_by_name", "_full", "media", "places", "polls", "tweets", "users")

    def __init__(self, includes: Any) -> None:
        inc = includes if isinstance(includes, dict) else {}
        self.users = _index(inc.get("users"), "id")
        self.media = _index(inc.get("media"), "media_key")
        self.places = _index(inc.get("places"), "id")
        self.polls = _index(inc.get("polls"), "id")
        self.tweets = _index(inc.get("tweets"), "id")
        self._by_name: dict[str, dict[str, Any]] | None = None
        self._base: dict[str, dict[str, Any]] = {}
        self._full: dict[str, dict[str, Any]] = {}

    def by_name(self, name: Any) -> dict[str, Any]:
        if self._by_name is None:
            self._by_name = _index(list(self.users.values()), "username")
        return self._by_name.get(name, {}) if isinstance(name, str) else {}

    def base(self, tid: str) -> dict[str, Any]:
        """An included tweet with its own expansions but its references left as ids."""
        done = self._base.get(tid)
        if done is None:
            raw = self.tweets.get(tid)
            done = self._base[tid] = expand(dict(raw), self, None) if raw is not None else {}
        return done

    def full(self, tid: str) -> dict[str, Any]:
        """An included tweet whose own references are inlined too (a retweeted quote)."""
        done = self._full.get(tid)
        if done is None:
            base = self.base(tid)
            refs = base.get("referenced_tweets")
            if base and isinstance(refs, list) and refs:
                done = {**base, "referenced_tweets": _refs(refs, self.base)}
            else:
                done = base
            self._full[tid] = done
        return done


def _refs(refs: list[Any], lookup: Any) -> list[Any]:
    return [
        {**ref, **lookup(ref["id"])}
        if isinstance(ref, dict) and isinstance(ref.get("id"), str)
        else ref
        for ref in refs
    ]


def expand(tweet: dict[str, Any], inc: _Includes, refs_with: Any) -> dict[str, Any]:
    """Inline what ``tweet`` points to (in place); ``refs_with`` looks referenced tweets up."""
    users = inc.users
    aid = tweet.get("author_id")
    if isinstance(aid, str):
        tweet["author"] = users.get(aid, {})
    rid = tweet.get("in_reply_to_user_id")
    if isinstance(rid, str):
        tweet["in_reply_to_user"] = users.get(rid, {})
    att = tweet.get("attachments")
    if isinstance(att, dict):
        att = tweet["attachments"] = dict(att)
        keys = att.get("media_keys")
        if isinstance(keys, list):
            media = inc.media
            att["media"] = [media.get(k, {}) if isinstance(k, str) else {} for k in keys]
        polls = att.get("poll_ids")
        if isinstance(polls, list) and polls and isinstance(polls[-1], str):
            att["poll"] = inc.polls.get(polls[-1], {})
    geo = tweet.get("geo")
    if isinstance(geo, dict) and isinstance(geo.get("place_id"), str):
        tweet["geo"] = {**geo, **inc.places.get(geo["place_id"], {})}
    ents = tweet.get("entities")
    if isinstance(ents, dict) and isinstance(ents.get("mentions"), list):
        tweet["entities"] = {
            **ents,
            "mentions": [
                {**m, **inc.by_name(m.get("username"))} if isinstance(m, dict) else m
                for m in ents["mentions"]
            ],
        }
    refs = tweet.get("referenced_tweets")
    if refs_with is not None and isinstance(refs, list) and refs:
        tweet["referenced_tweets"] = _refs(refs, refs_with)
    return tweet


# --- reading ---------------------------------------------------------------------------------


def _tweet(tweet: Any, source: str) -> RawPost | DeadLetter:
    if not isinstance(tweet, dict):
        return DeadLetter(
            f"not a tweet object: {type(tweet).__name__}", source, raw_bytes(tweet), NAME
        )
    tid = valid_id(tweet.get("id"))
    if tid is None:
        return DeadLetter(f"tweet {id_problem(tweet.get('id'))}", source, raw_bytes(tweet), NAME)
    if "text" not in tweet:
        return DeadLetter("not a tweet: no text (a user object?)", source, raw_bytes(tweet), NAME)
    return RawPost("twitter", tid, NAME, tweet, source)


def _page(page: dict[str, Any], source: str) -> Iterator[RawPost | DeadLetter | Control]:
    data = page.get("data")
    tweets = [data] if isinstance(data, dict) else data
    if tweets is not None and not isinstance(tweets, list):
        yield DeadLetter("page data is neither a list nor an object", source, raw_bytes(page), NAME)
        return
    if tweets:
        inc = _Includes(page.get("includes"))
        meta: dict[str, Any] = {k: page[k] for k in ("__twarc", "matching_rules") if k in page}
        for tweet in tweets:
            found = _tweet(tweet, source)
            if isinstance(found, RawPost):
                try:
                    expand(found.payload, inc, inc.full)
                except Exception as exc:  # hostile includes: keep the line, not the crash
                    found = DeadLetter(
                        f"cannot expand tweet: {exc!r}", source, raw_bytes(tweet), NAME
                    )
                else:
                    found.payload.update(meta)
            yield found
    errors = page.get("errors")
    for _ in errors if isinstance(errors, list) else ():
        yield Control("error", source)
    if not tweets and not errors:
        yield Control("empty", source)


def _value(
    value: Any, source: str, nested: bool = False
) -> Iterator[RawPost | DeadLetter | Control]:
    if isinstance(value, dict):
        if "data" in value or ("errors" in value and "id" not in value):
            yield from _page(value, source)
        elif "id" in value or "text" in value:
            yield _tweet(value, source)
        else:
            yield DeadLetter("not a Twitter v2 page or tweet", source, raw_bytes(value), NAME)
    elif isinstance(value, list) and not nested:
        for item in value:
            yield from _value(item, source, nested=True)
    else:
        yield DeadLetter(
            f"not a Twitter v2 page or tweet: {type(value).__name__}",
            source,
            raw_bytes(value),
            NAME,
        )


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    """One RawPost per tweet of ``data`` (never ``includes.tweets``), Controls for errors."""
    return read_values(path, NAME, _value)
