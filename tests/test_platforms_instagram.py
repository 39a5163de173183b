"""Instagram Media objects from Zeeschuimer NDJSON: photos, reels and carousels."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import orjson
import pytest

from shoal.formats import detect_format, read_file
from shoal.model import POST_COLUMNS, BadPost, Normalised, RawPost
from shoal.normalise import normalise

BASE = "instagram/craigfahner__zeeschuimer-workshop"
POSTS = f"{BASE}/posts.ndjson"
OLD = f"{BASE}/old_ndjson/posts.ndjson"
OLDER = f"{BASE}/old_ndjson/old_posts.lines-001-030.ndjson"
NOW = "2030-01-01T00:00:00+00:00"

T = TypeVar("T")


def _all_of(items: list[Any], cls: type[T]) -> TypeGuard[list[T]]:
    """Whether every item is a ``cls``; asserted, it also narrows the list's type."""
    return all(isinstance(item, cls) for item in items)


def _normalised(fixtures: Path, name: str) -> list[tuple[dict, Normalised]]:
    envelopes = [orjson.loads(x) for x in (fixtures / name).read_bytes().splitlines()]
    records = list(read_file(fixtures / name))
    assert _all_of(records, RawPost)
    assert {(r.platform, r.format) for r in records} == {("instagram", "instagram-media")}
    pairs = []
    for envelope, record in zip(envelopes, records, strict=True):
        assert record.id == envelope["data"]["pk"] == envelope["item_id"].split("_")[0]
        pairs.append((envelope["data"], normalise(record.format, record.payload, NOW)))
    return pairs


@pytest.mark.parametrize("name", [POSTS, OLD, OLDER])
def test_detected_as_zeeschuimer(fixtures: Path, name: str) -> None:
    assert detect_format(fixtures / name) == "zeeschuimer"


@pytest.mark.parametrize(
    ("name", "items", "photos", "reels", "carousels", "children", "video_children"),
    [
        (POSTS, 23, 16, 4, 3, 23, 0),
        (OLD, 15, 8, 2, 5, 25, 0),
        (OLDER, 30, 11, 11, 8, 51, 12),
    ],
)
def test_counts_match_sources(
    fixtures: Path,
    name: str,
    items: int,
    photos: int,
    reels: int,
    carousels: int,
    children: int,
    video_children: int,
) -> None:
    pairs = _normalised(fixtures, name)
    assert len(pairs) == items
    shapes: Counter[str] = Counter()
    child_count = child_videos = 0
    for data, n in pairs:
        assert set(n.post) == set(POST_COLUMNS) - {"collectors"}
        assert all(isinstance(v, str) for v in n.post.values())
        kinds = [m.type for m in n.media]
        if data["media_type"] == 1:
            shapes["photo"] += 1
            assert kinds == ["photo"]
        elif data["media_type"] == 2:
            shapes["reel"] += 1
            assert kinds == ["video"]
        else:
            shapes["carousel"] += 1
            child_count += len(n.media)
            child_videos += kinds.count("video")
            assert [m.media_key for m in n.media] == [c["pk"] for c in data["carousel_media"]]
            assert all(m.source_post_id == "" for m in n.media)
    assert shapes == {"photo": photos, "reel": reels, "carousel": carousels}
    assert child_count == children and child_videos == video_children


def test_media_urls(fixtures: Path) -> None:
    for data, n in _normalised(fixtures, OLDER):
        parts = data["carousel_media"] if data["media_type"] == 8 else [data]
        assert len(parts) == len(n.media)
        for part, m in zip(parts, n.media, strict=True):
            cover = part["image_versions2"]["candidates"][0]["url"]
            if part.get("video_versions"):
                urls = [v["url"] for v in part["video_versions"]]
                assert m.url == urls[0]
                # Other renditions (some larger) then the cover, for when the URL is dead.
                assert set(urls[1:]) - {urls[0]} <= set(m.alternatives)
                assert m.alternatives[-1] == cover
            else:
                assert m.url == cover  # candidates are largest first
        assert n.post["media_urls"] == "|".join(m.url for m in n.media)


def test_post_columns(fixtures: Path) -> None:
    envelopes = [orjson.loads(x) for x in (fixtures / POSTS).read_bytes().splitlines()]
    for envelope, (data, n) in zip(envelopes, _normalised(fixtures, POSTS), strict=True):
        assert n.post["author.username"] == data["user"]["username"]
        assert n.post["author_id"] == data["user"]["pk"]
        assert n.post["author.verified"] in ("true", "false")
        assert n.user is not None and n.user["username"] == data["user"]["username"]
        assert n.created_at.timestamp() == data["taken_at"]
        assert n.post["retrieved_at"].startswith("2026-02-08T")  # envelope timestamp_collected
        collected = datetime.fromisoformat(n.post["retrieved_at"]).timestamp()
        assert abs(envelope["timestamp_collected"] / 1000 - collected) < 1
        caption = (data.get("caption") or {}).get("text") or ""
        assert n.post["text"] == caption
        for tag in n.post["hashtags"].split("|") if n.post["hashtags"] else ():
            assert f"#{tag}" in caption.lower()


def test_hashtags_from_caption(fixtures: Path) -> None:
    tagged = [n for _, n in _normalised(fixtures, OLDER) if n.post["hashtags"]]
    assert tagged
    for n in tagged:
        assert "#" not in n.post["hashtags"] and n.post["hashtags"] == n.post["hashtags"].lower()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: (d.pop("pk"), d.pop("id")), "without pk or id"),
        (lambda d: d.pop("taken_at"), "missing taken_at"),
        (lambda d: d.update(taken_at=4_200_000_000), "absurd"),
    ],
)
def test_bad_media_raise_badpost(fixtures: Path, change, reason: str) -> None:
    data = orjson.loads((fixtures / POSTS).read_bytes().splitlines()[0])["data"]
    change(data)
    with pytest.raises(BadPost, match=reason):
        normalise("instagram-media", data, NOW)


def test_carousel_with_missing_renditions_does_not_crash(fixtures: Path) -> None:
    lines = (fixtures / POSTS).read_bytes().splitlines()
    data = next(d for d in map(orjson.loads, lines) if d["data"]["media_type"] == 8)["data"]
    data["carousel_media"][0]["image_versions2"] = None
    data["carousel_media"][1] = "garbage"
    n = normalise("instagram-media", data, NOW)
    assert len(n.media) == len(data["carousel_media"]) - 2
    assert [m.position for m in n.media] == list(range(len(n.media)))


def test_hashtags_in_text_keep_their_marks() -> None:
    """The hashtags column of a caption (Instagram, TikTok without tag lists): ``\\w`` stopped
    at the first vowel sign or combining accent, so #भारत became 'भ', #สวัสดี 'ส' and a café
    typed with a combining accent 'cafe' - every Hindi or Thai hashtag cut to its first
    letter in the reports of what spreads."""
    from shoal.normalise._platform_rows import hashtags_in

    text = ("#भारत and #สวัสดี, #cafe\u0301 x#no &#38; #a_b-c #東京 #می\u200cخواهم "
            "#Straße #BHARAT #भारत")
    assert hashtags_in(text) == ["भारत", "สวัสดี", "café", "a_b", "東京", "می\u200cخواهم",
                                 "straße", "bharat"]
