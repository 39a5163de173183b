"""TikTok videos: web ``itemStruct`` (``tiktok-item``), tiktok-scraper records and Research
API videos (``tiktok-research``).

All describe the same object with different names; ids are TikTok's numeric video ids,
global on the platform, so they are used as they are.

A Research API video names its author only by ``username`` (the API has no author ids), so
the username is the author id; its only media is its web page, which the fetch step
resolves. The hashtag or user listing that found it is in the payload (``query``), which
``shoal.normalise.normalise`` makes the post's ``query`` column for every searching collector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.ids import id_problem, valid_id
from shoal.media.platforms import (
    tiktok_item_media,
    tiktok_research_media,
    tiktok_scraper_media,
)
from shoal.model import BadPost, MediaRef, Normalised
from shoal.normalise import _platform_rows as rows


def _post_id(payload: dict[str, Any]) -> str:
    value = payload.get("id")
    pid = valid_id(value)
    if pid is None:
        raise BadPost(f"TikTok item {id_problem(value)}")
    return pid


def _item_user(item: dict[str, Any], retrieved: str) -> dict[str, str]:
    author = item.get("author")
    stats = rows.obj(item.get("authorStats"))
    counts: dict[str, Any] = {
        "followers_count": stats.get("followerCount"),
        "following_count": stats.get("followingCount"),
        "tweet_count": stats.get("videoCount"),
    }
    if not isinstance(author, dict):  # older item lists: author is the handle, the id beside it
        return rows.user_row(retrieved, rows.text(item.get("authorId")), username=author, **counts)
    return rows.user_row(
        retrieved,
        rows.text(author.get("id")),
        username=author.get("uniqueId"),
        name=author.get("nickname"),
        description=author.get("signature"),
        verified=bool(author.get("verified")),
        protected=bool(author.get("privateAccount")),
        **counts,
    )


def _video(
    payload: dict[str, Any],
    retrieved_at: str,
    user_of: Callable[[dict[str, Any], str], dict[str, str]],
    media_of: Callable[[dict[str, Any], str], list[MediaRef]],
    body: Any,
    tags: list[Any],
    lang: Any = None,
) -> Normalised:
    """The row of a video, whichever of the two formats named its fields."""
    post_id = _post_id(payload)
    created = rows.to_datetime(payload.get("createTime"), "createTime")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    user = user_of(payload, retrieved)
    post = rows.post_row(post_id, user["id"], created, retrieved, user)
    post["conversation_id"] = post_id  # no threads on TikTok: each video is its own
    text = rows.text(body)
    post["text"] = text
    post["lang"] = rows.text(lang)
    post["hashtags"] = rows.join(rows.unique_lower(tags) or rows.hashtags_in(text))
    post["full_text"] = text
    stats = rows.obj(payload.get("stats"))  # the web item; tiktok-scraper has them at the top
    stats2 = rows.obj(payload.get("statsV2"))  # strings, when the numbers outgrew 32 bits
    counts = [
        stats2.get(k) or stats.get(k) if (stats or stats2) else payload.get(k)
        for k in ("shareCount", "commentCount", "diggCount", "playCount")
    ]
    rows.engagement(post, counts[0], counts[1], counts[2], None, counts[3])
    media = media_of(payload, post_id)
    rows.media_columns(post, media)
    return Normalised("tiktok", post_id, created, post, user if user["id"] else None, media)


@rows.guard("tiktok-item")
def normalise_item(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    body, lang = payload.get("desc"), payload.get("textLanguage")
    tags = [t.get("hashtagName") for t in rows.dicts(payload.get("textExtra"))]
    return _video(payload, retrieved_at, _item_user, tiktok_item_media, body, tags, lang)


def _scraper_user(item: dict[str, Any], retrieved: str) -> dict[str, str]:
    meta = rows.obj(item.get("authorMeta"))
    return rows.user_row(
        retrieved,
        rows.text(meta.get("id")),
        username=meta.get("name"),
        name=meta.get("nickName"),
        description=meta.get("signature"),
        verified=bool(meta.get("verified")),
        protected=rows.flag(meta, "private"),
        followers_count=meta.get("fans"),
        following_count=meta.get("following"),
        tweet_count=meta.get("video"),
    )


@rows.guard("tiktok-scraper")
def normalise_scraper(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    body = payload.get("text")
    tags = [t.get("name") for t in rows.dicts(payload.get("hashtags"))]
    return _video(payload, retrieved_at, _scraper_user, tiktok_scraper_media, body, tags)


RESEARCH = "tiktok-research"


def research_id(video: dict[str, Any]) -> str:
    """``id`` in the API's current answers, ``video_id`` in older ones (and in traktok's)."""
    value = video.get("id", video.get("video_id"))
    pid = valid_id(value)
    if pid is None:
        raise BadPost(f"TikTok Research API video {id_problem(value)}")
    return pid


def _research_user(video: dict[str, Any], retrieved: str) -> dict[str, str]:
    username = rows.text(video.get("username"))
    return rows.user_row(retrieved, username, username=username or None)


@rows.guard(RESEARCH)
def normalise_research(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    video = {**payload, "id": research_id(payload), "createTime": payload.get("create_time")}
    tags = payload.get("hashtag_names")
    return _video(video, retrieved_at, _research_user, tiktok_research_media,
                  payload.get("video_description"), tags if isinstance(tags, list) else [])


FORMATS = {"tiktok-item": normalise_item, "tiktok-scraper": normalise_scraper,
           RESEARCH: normalise_research}
