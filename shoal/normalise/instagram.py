"""Instagram posts (``instagram-media``): private-API Media objects, as Zeeschuimer captures them.

The id is the media ``pk``, Instagram's global numeric media id (``id`` is ``{pk}_{owner}``,
the shortcode is only a URL form of ``pk``). The payload has no tag entities, so hashtags are
read from the caption as typed.
"""

from __future__ import annotations

from typing import Any

from shoal.media.platforms import instagram_media
from shoal.model import BadPost, Normalised
from shoal.normalise import _platform_rows as rows


def media_id(item: dict[str, Any]) -> str:
    """``pk``, or the part of ``id`` before the owner suffix; "" when there is neither."""
    pk = item.get("pk")
    if isinstance(pk, str | int) and not isinstance(pk, bool) and str(pk):
        return str(pk)
    full = item.get("id")
    if isinstance(full, str | int) and not isinstance(full, bool) and str(full):
        return str(full).split("_", 1)[0]
    return ""


def _user(item: dict[str, Any], retrieved: str) -> dict[str, str]:
    owner = item.get("user") or item.get("owner") or {}
    owner = owner if isinstance(owner, dict) else {}
    return rows.user_row(
        retrieved,
        rows.text(owner.get("pk") or owner.get("id")),
        username=owner.get("username"),
        name=owner.get("full_name"),
        verified=rows.flag(owner, "is_verified"),
        protected=rows.flag(owner, "is_private"),
        followers_count=owner.get("follower_count"),
        following_count=owner.get("following_count"),
        tweet_count=owner.get("media_count"),
    )


@rows.guard("instagram-media")
def normalise_media(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    post_id = media_id(payload)
    if not post_id:
        raise BadPost("Instagram media without pk or id")
    created = rows.to_datetime(payload.get("taken_at"), "taken_at")
    retrieved = rows.retrieved_at(payload, retrieved_at)
    user = _user(payload, retrieved)
    caption = payload.get("caption")
    body = rows.text(caption.get("text")) if isinstance(caption, dict) else ""

    post = rows.post_row(post_id, user["id"], created, retrieved, user)
    post["conversation_id"] = post_id
    post["text"] = body
    post["hashtags"] = rows.join(rows.hashtags_in(body))
    post["full_text"] = body
    plays = payload.get("play_count")
    if plays is None:
        plays = payload.get("view_count")
    rows.engagement(post, payload.get("reshare_count"), payload.get("comment_count"),
                    payload.get("like_count"), None, plays)
    media = instagram_media(payload, post_id)
    rows.media_columns(post, media)
    return Normalised("instagram", post_id, created, post, user if user["id"] else None, media)


FORMATS = {"instagram-media": normalise_media}
