"""Generated Twitter API v2 pages (twarc2 JSONL lines) with the hashtags and photos a test
chooses, so that a report's expected figures are known by construction."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shoal.demo import snowflake


@dataclass(frozen=True)
class Post:
    when: datetime
    author: str
    text: str = "a post"
    hashtags: Sequence[str] = ()
    photos: Sequence[str] = ()  # URLs
    seq: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(snowflake(self.when, self.seq))


def _user(name: str) -> dict[str, Any]:
    return {"id": str(zlib.crc32(name.encode()) + 10**9), "username": name, "name": name.title(),
            "created_at": "2015-01-01T00:00:00.000Z", "verified": False, "protected": False,
            "public_metrics": {"followers_count": 1, "following_count": 1, "tweet_count": 1,
                               "listed_count": 0}}


def page(posts: Sequence[Post]) -> dict[str, Any]:
    users = {p.author: _user(p.author) for p in posts}
    data, media = [], []
    for p in posts:
        tweet: dict[str, Any] = {
            "id": p.id, "conversation_id": p.id, "author_id": users[p.author]["id"],
            "created_at": p.when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "lang": "en",
            "text": p.text + "".join(f" #{t}" for t in p.hashtags),
            "edit_history_tweet_ids": [p.id], **p.extra,
        }
        if p.hashtags:
            tweet["entities"] = {"hashtags": [{"start": 0, "end": len(t) + 1, "tag": t}
                                              for t in p.hashtags]}
        if p.photos:
            keys = [f"3_{p.id}{k}" for k in range(len(p.photos))]
            tweet["attachments"] = {"media_keys": keys}
            media += [{"media_key": k, "type": "photo", "url": u, "width": 640, "height": 480}
                      for k, u in zip(keys, p.photos, strict=True)]
        data.append(tweet)
    last = max(p.when for p in posts) + timedelta(seconds=5)
    return {"data": data, "includes": {"users": list(users.values()), "media": media},
            "meta": {"result_count": len(data)},
            "__twarc": {"url": "https://api.twitter.com/2/tweets/search/recent",
                        "version": "2.14.0", "retrieved_at": last.isoformat()}}


def write_pages(path: Path, posts: Sequence[Post], per_page: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(posts, key=lambda p: p.when)
    with open(path, "wb") as fh:
        for i in range(0, len(ordered), per_page):
            fh.write(orjson.dumps(page(ordered[i:i + per_page])) + b"\n")
    return path
