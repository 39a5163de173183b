"""Media URLs of one post, as :class:`~shoal.model.MediaRef` lists, from its payload alone.

Pure functions over already-parsed payloads; the normalisers call them once per post, so they
avoid copies and never raise on odd shapes (a media object that is not a dict is skipped).

Attribution follows medialab/twitwi, whose normalised files are our oracle: a retweet shows
the original's media and a quote shows its own media followed by the quoted post's, each
:class:`MediaRef` naming in ``source_post_id`` the post that really carries the file, so
downloads can be shared between the retweets of one original.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from shoal.model import MediaRef

# Twitter's own words for media types -> the MediaRef vocabulary.
_TWITTER_TYPES: dict[str, str] = {"photo": "photo", "video": "video", "animated_gif": "gif"}
# v1.1 payloads have no media_key; the v2 key is "<kind>_<media id>" where the kind is visible
# in the CDN path. Deriving it lets a v1 and a v2 capture of one tweet share media rows.
_KEY_KINDS: tuple[tuple[str, str], ...] = (
    ("/amplify_video", "13"),
    ("/ext_tw_video", "7"),
    ("/tweet_video", "16"),
    ("/media/", "3"),
)
_TYPE_KINDS: dict[str, str] = {"photo": "3", "video": "7", "animated_gif": "16"}
# Retweet of a quote of a retweet...: deeper nesting does not exist on Twitter, and a bound
# keeps a hostile self-referencing payload from recursing.
_MAX_DEPTH = 3

_Found = tuple[str, str, tuple[str, ...], str, str]  # type, url, alternatives, key, source id


def mime_to_type(mimetype: str) -> str:
    """MediaRef type for a MIME type (Bluesky exports, data URLs); ``video/gif`` is a gif."""
    mime = mimetype.split(";", 1)[0].strip().lower()
    if mime == "video/gif":
        return "gif"
    major = mime.split("/", 1)[0]
    return {"image": "photo", "video": "video", "audio": "audio"}.get(major, "unknown")


def best_variant(variants: Any, rate_key: str) -> tuple[str, tuple[str, ...]]:
    """The highest-bitrate mp4 and the rest as fallbacks: HLS first, lower mp4s, then others.

    The mp4 is a single file a fetcher can store as is; HLS is the next best because it always
    exists for videos. ``rate_key`` is ``bit_rate`` in v2 and ``bitrate`` in v1.1.
    """
    mp4: list[tuple[float, str]] = []
    hls: list[str] = []
    other: list[str] = []
    for var in variants if isinstance(variants, list) else ():
        if not isinstance(var, dict):
            continue
        url = var.get("url")
        if not isinstance(url, str) or not url:
            continue
        ctype = var.get("content_type")
        ctype = ctype.lower() if isinstance(ctype, str) else ""
        if ctype == "video/mp4":
            rate = var.get(rate_key)
            mp4.append((rate if isinstance(rate, int | float) else 0, url))
        elif "mpegurl" in ctype:
            hls.append(url)
        else:
            other.append(url)
    if mp4:
        mp4.sort(key=lambda item: -item[0])  # stable: ties keep the payload's order
        return mp4[0][1], (*hls, *(u for _, u in mp4[1:]), *other)
    ranked = hls + other
    return (ranked[0], tuple(ranked[1:])) if ranked else ("", ())


def _refs(post_id: str, platform: str, found: list[_Found]) -> list[MediaRef]:
    return [
        MediaRef(post_id, platform, pos, typ, url, alts, key, src)
        for pos, (typ, url, alts, key, src) in enumerate(found)
    ]


# --- Twitter API v2 (flattened: attachments.media inlined) ---------------------------------


def _v2_object(obj: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """Type, url, alternatives of one v2 media object; url "" when it has none.

    A video or gif without ``variants`` (most 2021 captures) only has ``preview_image_url``:
    that thumbnail becomes the url and the type stays video/gif, so the row still says a
    video existed and the thumbnail is at least kept.
    """
    raw_type = obj.get("type")
    typ = _TWITTER_TYPES.get(raw_type, "unknown") if isinstance(raw_type, str) else "unknown"
    if typ in ("video", "gif") and obj.get("variants"):
        url, alts = best_variant(obj["variants"], "bit_rate")
        if url:
            return typ, url, alts
    found: Any = obj.get("url") if typ == "photo" else None
    if not isinstance(found, str) or not found:
        found = obj.get("preview_image_url") or obj.get("url")
    return typ, found if isinstance(found, str) else "", ()


def _v2_own(
    tweet: dict[str, Any],
    source: str,
    found: list[_Found],
    seen: set[str],
    missing: list[str],
    lent: dict[str, str],
) -> None:
    att = tweet.get("attachments")
    if not isinstance(att, dict):
        return
    objects = att.get("media")
    by_key: dict[str, dict[str, Any]] = {}
    if isinstance(objects, list):
        for obj in objects:
            if isinstance(obj, dict):
                key = obj.get("media_key")
                if isinstance(key, str):
                    by_key[key] = obj
    keys = att.get("media_keys")
    if not isinstance(keys, list):
        keys = list(by_key)
    for key in keys:
        if not isinstance(key, str) or key in seen:
            continue
        obj = by_key.get(key)
        typ, url, alts = _v2_object(obj) if obj is not None else ("", "", ())
        if not url:
            if key not in missing:
                missing.append(key)
            continue
        seen.add(key)
        found.append((typ, url, alts, key, lent.get(key, source)))


def _v2_walk(
    tweet: dict[str, Any],
    source: str,
    found: list[_Found],
    seen: set[str],
    missing: list[str],
    depth: int,
) -> None:
    retweeted = quoted = None
    refs = tweet.get("referenced_tweets")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict):
            kind = ref.get("type")
            if kind == "retweeted":
                retweeted = ref
            elif kind == "quoted":
                quoted = ref
    own_source = source
    if retweeted is not None:
        # A retweet has no media of its own: its attachments are the original's.
        rid = retweeted.get("id")
        own_source = rid if isinstance(rid, str) and rid else source
        if depth < _MAX_DEPTH:
            _v2_walk(retweeted, own_source, found, seen, missing, depth + 1)
    lent: dict[str, str] = {}
    qid = quoted.get("id") if quoted is not None else None
    if isinstance(qid, str) and retweeted is None:
        # A quote may attach the quoted tweet's own media: those stay the quoted tweet's.
        att = quoted.get("attachments") if quoted is not None else None
        keys = att.get("media_keys") if isinstance(att, dict) else None
        if isinstance(keys, list):
            lent = {k: qid for k in keys if isinstance(k, str)}
    _v2_own(tweet, own_source, found, seen, missing, lent)
    if quoted is not None and depth < _MAX_DEPTH:
        _v2_walk(quoted, qid if isinstance(qid, str) else "", found, seen, missing, depth + 1)


def v2_media_and_missing(
    tweet: dict[str, Any], post_id: str
) -> tuple[list[MediaRef], tuple[str, ...]]:
    """Media of a flattened v2 tweet, and the media keys that resolve to no usable object.

    Unresolved keys (withheld or deleted media, or originals whose media the API left out of
    ``includes``) are reported, not fatal: the post is still worth keeping.
    """
    found: list[_Found] = []
    missing: list[str] = []
    seen: set[str] = set()
    _v2_walk(tweet, post_id, found, seen, missing, 0)
    # A key the original could not resolve may still resolve on the retweet itself.
    return _refs(post_id, "twitter", found), tuple(k for k in missing if k not in seen)


def v2_media(tweet: dict[str, Any], post_id: str) -> list[MediaRef]:
    return v2_media_and_missing(tweet, post_id)[0]


# --- Twitter API v1.1 (and the web GraphQL ``legacy`` tweets) ------------------------------


def _v1_key(entity: dict[str, Any], raw_type: Any, urls: Iterable[str]) -> str:
    key = entity.get("media_key")
    if isinstance(key, str) and key:
        return key
    mid = entity.get("id_str")
    if not isinstance(mid, str) or not mid:
        return ""
    for url in urls:
        for marker, kind in _KEY_KINDS:
            if marker in url:
                return f"{kind}_{mid}"
    by_type = _TYPE_KINDS.get(raw_type) if isinstance(raw_type, str) else None
    return f"{by_type}_{mid}" if by_type else ""


def _v1_entity(entity: dict[str, Any]) -> tuple[str, str, tuple[str, ...], str]:
    raw_type = entity.get("type")
    typ = _TWITTER_TYPES.get(raw_type, "unknown") if isinstance(raw_type, str) else "unknown"
    thumb = entity.get("media_url_https") or entity.get("media_url")
    thumb = thumb if isinstance(thumb, str) else ""
    url, alts = "", cast(tuple[str, ...], ())
    info = entity.get("video_info")
    if isinstance(info, dict):
        url, alts = best_variant(info.get("variants"), "bitrate")
    if not url:
        # Photos live at media_url_https; a video without variants keeps its thumbnail,
        # the same choice as for v2 preview-only videos.
        url = thumb
    return typ, url, alts, _v1_key(entity, raw_type, (url, thumb))


def _v1_entities(tweet: dict[str, Any]) -> list[Any]:
    """The media list twitwi would read: extended_tweet wins over the truncated top level."""
    ext = tweet.get("extended_tweet")
    for holder, name in (
        (ext, "extended_entities"),
        (tweet, "extended_entities"),
        (ext, "entities"),
        (tweet, "entities"),
    ):
        if isinstance(holder, dict):
            ents = holder.get(name)
            if isinstance(ents, dict):
                media = ents.get("media")
                if isinstance(media, list) and media:
                    return media
    return []


def _v1_owner(entity: dict[str, Any], default: str) -> str:
    """The status a media entity was first posted with.

    A tweet can attach media of another one (a quote re-using the quoted video): v1.1 then
    says so in ``source_status_id_str`` or in the ``/status/<id>/`` of ``expanded_url``.
    """
    owner = entity.get("source_status_id_str")
    if isinstance(owner, str) and owner:
        return owner
    link = entity.get("expanded_url")
    if isinstance(link, str):
        start = link.find("/status/") + 8
        if start > 7:
            end = link.find("/", start)
            owner = link[start:end] if end > 0 else link[start:]
            if owner.isascii() and owner.isdigit():
                return owner
    return default


def _v1_walk(
    tweet: dict[str, Any], source: str, found: list[_Found], seen: set[str], depth: int
) -> None:
    own_source = source
    retweeted = tweet.get("retweeted_status")
    if isinstance(retweeted, dict):
        rid = retweeted.get("id_str") or retweeted.get("id")
        own_source = str(rid) if rid else source
        if depth < _MAX_DEPTH:
            _v1_walk(retweeted, own_source, found, seen, depth + 1)
    for entity in _v1_entities(tweet):
        if not isinstance(entity, dict):
            continue
        typ, url, alts, key = _v1_entity(entity)
        mark = key or url
        if not url or mark in seen:
            continue
        seen.add(mark)
        found.append((typ, url, alts, key, _v1_owner(entity, own_source)))
    quoted = tweet.get("quoted_status")
    if isinstance(quoted, dict) and depth < _MAX_DEPTH:
        qid = quoted.get("id_str") or quoted.get("id")
        _v1_walk(quoted, str(qid) if qid else "", found, seen, depth + 1)


def v1_media(tweet: dict[str, Any], post_id: str) -> list[MediaRef]:
    """Media of a v1.1 tweet, nested retweeted/quoted statuses included (see module doc)."""
    found: list[_Found] = []
    _v1_walk(tweet, post_id, found, set(), 0)
    return _refs(post_id, "twitter", found)


# --- twitwi / minet CSV rows -----------------------------------------------------------------


# Where the declared type says nothing useful (Bluesky blobs declared as
# application/octet-stream, */*, text/plain ...), the CDN path or extension still does.
_URL_HINTS: tuple[tuple[str, str], ...] = (
    ("cdn.bsky.app/img/", "photo"),
    ("video.bsky.app/", "video"),
    ("pbs.twimg.com/media/", "photo"),
    (".m3u8", "video"),
    (".mp4", "video"),
    (".jpg", "photo"),
    (".jpeg", "photo"),
    (".png", "photo"),
    (".webp", "photo"),
)


def _csv_type(raw: str, url: str) -> str:
    if url[:5].lower() == "data:":
        return mime_to_type(url[5:].split(",", 1)[0])
    raw = raw.strip()
    typ = mime_to_type(raw) if "/" in raw else _TWITTER_TYPES.get(raw, "unknown")
    if typ == "unknown":
        low = url.lower()
        for hint, guess in _URL_HINTS:
            if hint in low:
                return guess
    return typ


def csv_media(
    post_id: str,
    platform: str,
    urls: str,
    types: str = "",
    files: str = "",
    thumbnails: str = "",
) -> list[MediaRef]:
    """Media of a twitwi CSV row: ``|``-separated columns read position for position.

    ``media_files`` names are ``<source post id>_<file>``, which is how twitwi records that a
    retweet's media belong to the original; a Bluesky image's thumbnail is a smaller copy of
    the same picture, so it is kept as the fallback URL.
    """
    if not urls:
        return []
    type_list = types.split("|") if types else []
    file_list = files.split("|") if files else []
    thumb_list = thumbnails.split("|") if thumbnails else []
    found: list[_Found] = []
    for pos, url in enumerate(urls.split("|")):
        if not url:
            continue
        typ = _csv_type(type_list[pos] if pos < len(type_list) else "", url)
        source = post_id
        if pos < len(file_list):
            head = file_list[pos].split("_", 1)[0]
            if head.isascii() and head.isdigit():
                source = head
        thumb = thumb_list[pos] if pos < len(thumb_list) and typ == "photo" else ""
        found.append((typ, url, (thumb,) if thumb and thumb != url else (), "", source))
    return _refs(post_id, platform, found)
