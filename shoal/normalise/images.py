"""Keyword image-search results (``image-search``): one found image is one post.

A search result has no author and no date of its own, so the post is dated when it was
found, its author is the page's host, and its text is the result's title. The id is a hash
of the image URL, so the same image found again (by another keyword, another day) is the
same post, and the keyword that found it is kept in the payload (``query``).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from shoal.media.platforms import image_search_media
from shoal.model import BadPost, Normalised
from shoal.normalise import _platform_rows as rows

FORMAT = "image-search"


def image_id(image_url: str, keyword: str = "") -> str:
    """Stable id of a search result: 16 hex digits of the SHA-256 of the keyword and the
    image URL. A result is one keyword's find: an image two keywords found is a post of
    each (each with its ``query``, its file in each keyword's folder), not one post that the
    second keyword loses to deduplication."""
    text = f"{keyword}\n{image_url}" if keyword else image_url
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@rows.guard(FORMAT)
def normalise_result(payload: dict[str, Any], retrieved_at: str) -> Normalised:
    image = payload.get("image")
    if not isinstance(image, str) or not image:
        raise BadPost("image search result without an image URL")
    query = payload.get("query")
    post_id = str(payload.get("id") or image_id(image, query if isinstance(query, str) else ""))
    retrieved = rows.retrieved_at(payload, retrieved_at)
    created = rows.to_datetime(payload.get("found_at") or retrieved, "found_at")
    page = str(payload.get("url") or "")
    host = (urlsplit(page).hostname or "") if page else ""
    user = rows.user_row(retrieved, host, username=host, name=payload.get("source"))
    post = rows.post_row(post_id, host, created, retrieved, user)
    post["conversation_id"] = post_id
    post["text"] = rows.text(payload.get("title"))
    post["source"] = page
    media = image_search_media(payload, post_id)
    rows.media_columns(post, media)
    return Normalised("images", post_id, created, post, user if host else None, media)


FORMATS = {FORMAT: normalise_result}
