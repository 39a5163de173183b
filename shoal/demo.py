"""Demo traffic made by code: Twitter API v2 pages shaped like the real payloads.

Used by ``shoal up --source demo`` (so a fresh machine shows the whole pipeline without
credentials or input files) and by ``benchmarks/throughput``. Posts span several hours and
authors, carry hashtags, photos and videos (with mp4 and HLS variants), retweets with their
originals in ``includes.tweets``, and come from two pretend collectors whose slices overlap,
as the two-server sampled-stream setup does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

TWEPOCH_MS = 1288834974657
HASHTAGS = ("saccageparis", "paris", "velo", "climat", "kpop", "brexit", "jo2024", "photo")
WORDS = (
    "la", "ville", "rue", "photo", "aujourd'hui", "look", "at", "this", "new", "bike", "lane",
    "rain", "café", "mairie", "😀", "🚲", "métro", "trottinette", "street", "art",
)
LANGS = ("fr", "en", "fr", "fr", "es", "und")
SOURCES = ("Twitter for iPhone", "Twitter for Android", "Twitter Web App")


def snowflake(when: datetime, seq: int) -> int:
    return ((int(when.timestamp() * 1000) - TWEPOCH_MS) << 22) | (seq & 0x3FFFFF)


@dataclass(frozen=True)
class DemoSpec:
    posts: int = 2000
    hours: int = 6
    authors: int = 300
    start: datetime = datetime(2021, 5, 11, 18, 0, tzinfo=UTC)
    seed: int = 7
    page_size: int = 100
    media_share: float = 0.35
    retweet_share: float = 0.3
    photo_base: str = "https://pbs.twimg.com"
    video_base: str = "https://video.twimg.com"


def _user(rng: random.Random, uid: int) -> dict[str, Any]:
    name = f"user{uid}"
    return {
        "id": str(1000 + uid),
        "username": name,
        "name": f"Demo {name.title()}",
        "created_at": (
            f"20{rng.randint(9, 20):02d}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T08:00:00.000Z"
        ),
        "location": rng.choice(("Paris", "Lyon", "", "Berlin", "Montréal")),
        "description": "demo account",
        "verified": rng.random() < 0.05,
        "protected": False,
        "public_metrics": {
            "followers_count": rng.randint(0, 50000),
            "following_count": rng.randint(0, 3000),
            "tweet_count": rng.randint(1, 90000),
            "listed_count": rng.randint(0, 200),
        },
    }


def _media(rng: random.Random, tid: int, k: int, spec: DemoSpec) -> dict[str, Any]:
    if rng.random() < 0.8:
        key = f"3_{tid}{k}"
        return {
            "media_key": key,
            "type": "photo",
            "url": f"{spec.photo_base}/media/D{tid:x}{k}.jpg",
            "width": 1200,
            "height": 900,
        }
    key = f"7_{tid}{k}"
    base = f"{spec.video_base}/ext_tw_video/{tid}/pu/vid"
    return {
        "media_key": key,
        "type": "video",
        "preview_image_url": f"{spec.photo_base}/ext_tw_video_thumb/{tid}/pu/img/p{k}.jpg",
        "duration_ms": rng.randint(3000, 60000),
        "variants": [
            {"bit_rate": 256000, "content_type": "video/mp4", "url": f"{base}/480x270/{k}.mp4"},
            {"content_type": "application/x-mpegURL", "url": f"{base}/pl/{k}.m3u8"},
            {"bit_rate": 2176000, "content_type": "video/mp4", "url": f"{base}/1280x720/{k}.mp4"},
            {"bit_rate": 832000, "content_type": "video/mp4", "url": f"{base}/640x360/{k}.mp4"},
        ],
    }


def demo_pages(spec: DemoSpec) -> Iterator[dict[str, Any]]:
    """Pages of a time-ordered stream, each like one line of a twarc2 JSONL file."""
    rng = random.Random(spec.seed)
    users = [_user(rng, u) for u in range(spec.authors)]
    span = spec.hours * 3600
    times = sorted(rng.uniform(0, span) for _ in range(spec.posts))
    originals: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    page: dict[str, Any] = {}
    for i, offset in enumerate(times):
        if not page:
            page = {"data": [], "includes": {"users": {}, "media": [], "tweets": []}}
        when = spec.start + timedelta(seconds=offset)
        tid = snowflake(when, i)
        author = users[int(rng.paretovariate(1.2)) % len(users)]
        tags = rng.sample(HASHTAGS, rng.randint(0, 3))
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 18)))
        text += "".join(f" #{t}" for t in tags)
        tweet: dict[str, Any] = {
            "id": str(tid),
            "conversation_id": str(tid),
            "author_id": author["id"],
            "created_at": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "lang": rng.choice(LANGS),
            "source": rng.choice(SOURCES),
            "possibly_sensitive": False,
            "reply_settings": "everyone",
            "public_metrics": {
                "retweet_count": rng.randint(0, 500),
                "reply_count": rng.randint(0, 50),
                "like_count": rng.randint(0, 2000),
                "quote_count": rng.randint(0, 20),
            },
            "edit_history_tweet_ids": [str(tid)],
        }
        if tags:
            tweet["entities"] = {
                "hashtags": [{"start": 0, "end": len(t) + 1, "tag": t} for t in tags]
            }
        page["includes"]["users"][author["id"]] = author
        if originals and rng.random() < spec.retweet_share:
            orig, orig_media = rng.choice(originals)
            tweet["text"] = f"RT @user: {orig['text'][:100]}"
            tweet["referenced_tweets"] = [{"type": "retweeted", "id": orig["id"]}]
            page["includes"]["tweets"].append(orig)
            page["includes"]["media"].extend(orig_media)
            orig_author = users[int(orig["author_id"]) - 1000]
            page["includes"]["users"][orig_author["id"]] = orig_author
        else:
            tweet["text"] = text
            media: list[dict[str, Any]] = []
            if rng.random() < spec.media_share:
                media = [_media(rng, tid, k, spec) for k in range(rng.randint(1, 4))]
                tweet["attachments"] = {"media_keys": [m["media_key"] for m in media]}
                page["includes"]["media"].extend(media)
            originals.append((tweet, media))
            if len(originals) > 200:
                originals.pop(0)
        page["data"].append(tweet)
        if len(page["data"]) >= spec.page_size or i == len(times) - 1:
            page["includes"]["users"] = list(page["includes"]["users"].values())
            ids = [t["id"] for t in page["data"]]
            page["meta"] = {"result_count": len(ids), "newest_id": max(ids), "oldest_id": min(ids)}
            retrieved = when + timedelta(seconds=rng.uniform(1, 30))
            page["__twarc"] = {
                "url": "https://api.twitter.com/2/tweets/sample/stream",
                "version": "2.14.0",
                "retrieved_at": retrieved.replace(microsecond=0).isoformat(),
            }
            yield page
            page = {}


def write_demo_files(folder: Path, spec: DemoSpec) -> dict[str, Path]:
    """Two overlapping collector files, as two servers on the same stream would deliver.

    Collector ``demo-a`` misses every 17th page, ``demo-b`` every 13th: most posts arrive
    twice, some once, so the day report has a non-zero difference to show.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"demo-a": folder / "demo-a.jsonl", "demo-b": folder / "demo-b.jsonl"}
    with open(paths["demo-a"], "wb") as a, open(paths["demo-b"], "wb") as b:
        for n, page in enumerate(demo_pages(spec)):
            line = orjson.dumps(page) + b"\n"
            if n % 17 != 5:
                a.write(line)
            if n % 13 != 3:
                b.write(line)
    return paths
