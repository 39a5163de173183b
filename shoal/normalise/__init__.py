"""Normalisers: one self-contained post payload in, one :class:`~shoal.model.Normalised` out.

Pure functions, keyed by the *post* format named in the Kafka ``format`` header (not the file
format): a v2 page and a twarc2-flattened file both publish ``twitter-v2`` posts.
Each module exposes ``FORMATS: dict[str, Callable[[dict, str], Normalised]]`` where the
second argument is the retrieval time (ISO 8601, UTC). Normalisers raise
:class:`~shoal.model.BadPost` with a readable reason for payloads that cannot be posts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from shoal.model import SEARCH_FORMATS, BadPost, Normalised

Normaliser = Callable[[dict[str, Any], str], Normalised]


@cache
def normalisers() -> dict[str, Normaliser]:
    """Post format -> normaliser, over every platform module."""
    from shoal.normalise import (
        bluesky,
        images,
        instagram,
        mastodon,
        minet_csv,
        tiktok,
        twitter_v1,
        twitter_v2,
    )

    table: dict[str, Normaliser] = {}
    for mod in (twitter_v2, twitter_v1, minet_csv, bluesky, mastodon, tiktok, instagram,
               images):
        table.update(mod.FORMATS)
    return table


def normalise(fmt: str, payload: dict[str, Any], retrieved_at: str) -> Normalised:
    fn = normalisers().get(fmt)
    if fn is None:
        raise BadPost(f"unknown post format {fmt!r}")
    norm = fn(payload, retrieved_at)
    if fmt in SEARCH_FORMATS:  # one rule for every searching collector
        query = payload.get("query")
        norm.post["query"] = query if isinstance(query, str) else ""
    return norm
