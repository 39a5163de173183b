"""TikTok videos: web ``itemStruct`` (``tiktok-item``) and tiktok-scraper records.

Both describe the same object with different names; ids are TikTok's numeric video ids,
global on the platform, so they are used as they are.
"""

from __future__ import annotations

from typing import Any

from shoal.media.platforms import tiktok_item_media, tiktok_scraper_media
from shoal.model import BadPost, Normalised
from shoal.normalise import _platform_rows as rows


def _post_id(payload: dict[str, Any]) -> str:
    value = payload.get("id")
    if value is None or value == "" or isinstance(value, dict | list | bool):
        raise BadPost("TikTok item without id")
    return str(value)


def _fill(
    post: dict[str, str], post_id: str, user: dict[str, str], created: str, retrieved: str
) -> None:
    post["id"] = post_id
    post["conversation_id"] = post_id
    post["author_id"] = user["id"]
    post["created_at"] = created
    post["retrieved_at"] = retrieved
    rows.author_columns(post, user)


def _item_user(item: dict[str, Any], retrieved: str) -> dict[str, str]:
    author = item.get("author")
    stats = rows.obj(item.get("authorStats"))
    user = rows.empty_user()
    if isinstance(author, dict):
        user["id"] = rows.text(author.get("id"))
        user["username"] = rows.text(author.get("uniqueId"))
        user["name"] = rows.text(author.get("nickname"))
        user["description"] = rows.text(author.get("signature"))
        user["verified"] = rows.text(bool(author.get("verified")))
        user["protected"] = rows.text(bool(author.get("privateAccount")))
    else:  # older item lists: author is the handle, the id sits beside it
        user["id"] = rows.text(item.get("authorId"))
        user["username"] = rows.text(author)
    user["followers_count"] = rows.text(stats.get("followerCount"))
    user["following_count"] = rows.text(stats.get("followingCount"))
    user["tweet_count"] = rows.text(stats.get("videoCount"))
    user["retrieved_at"] = retrieved
    return user


@rows.guard("tiktok-item")
def normalise_item(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    post_id = _post_id(payload)
    created = rows.to_datetime(payload.get("createTime"), "createTime")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    user = _item_user(payload, retrieved)
    post = rows.empty_post()
    _fill(post, post_id, user, rows.iso(created), retrieved)
    body = rows.text(payload.get("desc"))
    post["text"] = body
    post["lang"] = rows.text(payload.get("textLanguage"))
    tags = [t.get("hashtagName") for t in rows.dicts(payload.get("textExtra"))]
    post["hashtags"] = rows.join(rows.unique_lower(tags) or rows.hashtags_in(body))
    media = tiktok_item_media(payload, post_id)
    rows.media_columns(post, media)
    return Normalised("tiktok", post_id, created, post, user if user["id"] else None, media)


def _scraper_user(item: dict[str, Any], retrieved: str) -> dict[str, str]:
    meta = rows.obj(item.get("authorMeta"))
    user = rows.empty_user()
    user["id"] = rows.text(meta.get("id"))
    user["username"] = rows.text(meta.get("name"))
    user["name"] = rows.text(meta.get("nickName"))
    user["description"] = rows.text(meta.get("signature"))
    user["verified"] = rows.text(bool(meta.get("verified")))
    if "private" in meta:
        user["protected"] = rows.text(bool(meta.get("private")))
    user["followers_count"] = rows.text(meta.get("fans"))
    user["following_count"] = rows.text(meta.get("following"))
    user["tweet_count"] = rows.text(meta.get("video"))
    user["retrieved_at"] = retrieved
    return user


@rows.guard("tiktok-scraper")
def normalise_scraper(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    post_id = _post_id(payload)
    created = rows.to_datetime(payload.get("createTime"), "createTime")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    user = _scraper_user(payload, retrieved)
    post = rows.empty_post()
    _fill(post, post_id, user, rows.iso(created), retrieved)
    body = rows.text(payload.get("text"))
    post["text"] = body
    tags = [t.get("name") for t in rows.dicts(payload.get("hashtags"))]
    post["hashtags"] = rows.join(rows.unique_lower(tags) or rows.hashtags_in(body))
    media = tiktok_scraper_media(payload, post_id)
    rows.media_columns(post, media)
    return Normalised("tiktok", post_id, created, post, user if user["id"] else None, media)


FORMATS = {"tiktok-item": normalise_item, "tiktok-scraper": normalise_scraper}
