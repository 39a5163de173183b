"""TikTok (Zeeschuimer, tiktok-scraper JSON, video page HTML) and the Zeeschuimer envelope."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import orjson
import pytest

from shoal.formats import detect_format, read_file
from shoal.model import POST_COLUMNS, BadPost, DeadLetter, RawPost
from shoal.normalise import normalise

ZEESCHUIMER = (
    "tiktok/jorisheijkant__zeeschuimer-decoder/test-files/tiktok-test.lines-001-064.ndjson"
)
EXAMPLE = "tiktok/jorisheijkant__zeeschuimer-decoder/example-items/tiktok.json"
SCRAPER = "tiktok/drawrowfly__tiktok-scraper/thebigbradwolf_1609948309033.json"
PAGE = "tiktok/drawrowfly__tiktok-scraper/src/core/__mocks__/__mockData__/videoMeta.html"
X_LINES = "other/jorisheijkant__zeeschuimer-decoder/test-files/twitter-test.lines-001-078.ndjson"
X_EXAMPLE = "other/jorisheijkant__zeeschuimer-decoder/example-items/twitter.json"
NOW = "2030-01-01T00:00:00+00:00"

T = TypeVar("T")


def _all_of(items: list[Any], cls: type[T]) -> TypeGuard[list[T]]:
    """Whether every item is a ``cls``; asserted, it also narrows the list's type."""
    return all(isinstance(item, cls) for item in items)


def _first_post(path: Path) -> RawPost:
    record = next(iter(read_file(path)))
    assert isinstance(record, RawPost)
    return record


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        (ZEESCHUIMER, "zeeschuimer"),
        (EXAMPLE, "zeeschuimer"),
        (X_LINES, "zeeschuimer"),
        (X_EXAMPLE, "zeeschuimer"),
        (SCRAPER, "tiktok-scraper"),
        (PAGE, "tiktok-scraper"),
    ],
)
def test_detection(fixtures: Path, name: str, fmt: str) -> None:
    assert detect_format(fixtures / name) == fmt


def test_zeeschuimer_tiktok_items(fixtures: Path) -> None:
    lines = (fixtures / ZEESCHUIMER).read_bytes().splitlines()
    envelopes = [orjson.loads(line) for line in lines]
    records = list(read_file(fixtures / ZEESCHUIMER))
    assert len(records) == 64
    assert _all_of(records, RawPost)
    assert [r.id for r in records] == [e["item_id"] for e in envelopes]
    assert {(r.platform, r.format) for r in records} == {("tiktok", "tiktok-item")}
    assert records[0].source.endswith(":1") and records[-1].source.endswith(":64")
    for record, envelope in zip(records, envelopes, strict=True):
        n = normalise(record.format, record.payload, NOW)
        assert set(n.post) == set(POST_COLUMNS) - {"collectors"}
        assert all(isinstance(v, str) for v in n.post.values())
        # Capture time (ms epoch) from the envelope, not the dataflow's clock.
        assert n.post["retrieved_at"] == record.payload["__retrieved_at"]
        assert n.post["retrieved_at"].startswith("2023-10-12T")
        video = envelope["data"]["video"]
        (m,) = n.media
        assert m.type == "video" and m.url == video["playAddr"]
        assert m.alternatives == (video["downloadAddr"], video["cover"])
        assert n.post["media_keys"] == record.id
        assert n.post["author_id"] == envelope["data"]["author"]["id"]
        assert n.post["author.username"] == envelope["data"]["author"]["uniqueId"]
        tags = [t["hashtagName"].lower() for t in envelope["data"].get("textExtra", [])]
        assert n.post["hashtags"] == "|".join(dict.fromkeys(t for t in tags if t))


def test_pretty_printed_example_is_line_one(fixtures: Path) -> None:
    (example,) = read_file(fixtures / EXAMPLE)
    first = _first_post(fixtures / ZEESCHUIMER)
    assert isinstance(example, RawPost) and example.id == first.id
    a = normalise(example.format, example.payload, NOW)
    b = normalise(first.format, first.payload, NOW)
    assert a.post == b.post


def test_scraper_cli_output(fixtures: Path) -> None:
    items = orjson.loads((fixtures / SCRAPER).read_bytes())
    records = list(read_file(fixtures / SCRAPER))
    assert len(records) == 65 and _all_of(records, RawPost)
    assert {(r.platform, r.format) for r in records} == {("tiktok", "tiktok-scraper")}
    for record, item in zip(records, items, strict=True):
        n = normalise(record.format, record.payload, NOW)
        # The CLI's file name holds Date.now() of the run: 1609948309033 ms.
        assert n.post["retrieved_at"] == "2021-01-06T15:51:49+00:00"
        (m,) = n.media
        assert m.url == item["videoUrl"]
        assert m.alternatives == (item["covers"]["default"], item["covers"]["origin"])
        assert n.post["author.username"] == "thebigbradwolf"
        assert n.post["author.public_metrics.followers_count"] == "398700"
    first = normalise(records[0].format, records[0].payload, NOW)
    assert first.post["hashtags"] == "fyp|harrystyles"
    assert first.post["created_at"] == "2020-12-28T18:42:13+00:00"


def test_video_page_next_data(fixtures: Path) -> None:
    (record,) = read_file(fixtures / PAGE)
    assert isinstance(record, RawPost)
    assert (record.platform, record.format, record.id) == (
        "tiktok",
        "tiktok-item",
        "6881450806688664838",
    )
    n = normalise(record.format, record.payload, NOW)
    assert n.post["created_at"] == "2020-10-09T03:04:22+00:00"
    assert n.post["author.username"] == "tiktok" and n.post["author.verified"] == "true"
    (m,) = n.media
    video = record.payload["video"]
    assert m.url == video["playAddr"] and video["cover"] in m.alternatives


def test_profile_page_items_and_broken_pages(tmp_path: Path, fixtures: Path) -> None:
    item = _first_post(fixtures / ZEESCHUIMER).payload
    other = dict(item, id="123")
    page = {"props": {"pageProps": {"items": [item, other, {"desc": "no id"}]}}}
    path = tmp_path / "profile.html"
    path.write_bytes(
        b'<html><script id="__NEXT_DATA__" type="application/json">'
        + orjson.dumps(page)
        + b"</script></html>"
    )
    assert detect_format(path) == "tiktok-scraper"
    records = list(read_file(path))
    head = records[:2]
    assert _all_of(head, RawPost)
    assert [r.id for r in head] == [item["id"], "123"]
    assert isinstance(records[2], DeadLetter) and "without id" in records[2].reason

    empty = tmp_path / "login.html"
    empty.write_text("<html><body>log in</body></html>")
    (dead,) = read_file(empty, "tiktok-scraper")
    assert isinstance(dead, DeadLetter) and "no __NEXT_DATA__" in dead.reason
    garbled = tmp_path / "garbled.html"
    garbled.write_text('<script id="__NEXT_DATA__">{"props": </script>')
    (dead,) = read_file(garbled, "tiktok-scraper")
    assert isinstance(dead, DeadLetter) and "invalid __NEXT_DATA__" in dead.reason


def test_photo_mode_items(fixtures: Path) -> None:
    item = _first_post(fixtures / ZEESCHUIMER).payload
    item = dict(
        item,
        imagePost={
            "images": [
                {"imageURL": {"urlList": ["https://p.example/1.jpeg", "https://q.example/1"]}},
                {"imageURL": {"urlList": ["https://p.example/2.jpeg"]}},
            ]
        },
    )
    n = normalise("tiktok-item", item, NOW)
    assert n.post["media_types"] == "photo|photo"
    assert n.media[0].alternatives == ("https://q.example/1",)


def test_zeeschuimer_routes_x_graphql_to_twitter(fixtures: Path) -> None:
    envelopes = [orjson.loads(x) for x in (fixtures / X_LINES).read_bytes().splitlines()]
    records = list(read_file(fixtures / X_LINES))
    assert len(records) == 78 and _all_of(records, RawPost)
    assert {(r.platform, r.format) for r in records} == {("twitter", "twitter-graphql")}
    assert [r.id for r in records] == [e["data"]["rest_id"] for e in envelopes]
    assert all(r.payload["__retrieved_at"].startswith("2023-10-12T") for r in records)
    # The payload is what the Twitter GraphQL normaliser expects: a bare tweet result.
    for r in records:
        n = normalise(r.format, r.payload, NOW)
        assert n.id == r.id and n.post["retrieved_at"] == r.payload["__retrieved_at"]


def test_zeeschuimer_hostile_lines(fixtures: Path, tmp_path: Path) -> None:
    good = (fixtures / ZEESCHUIMER).read_bytes().splitlines()[0]
    envelope = orjson.loads(good)
    linkedin = dict(envelope, source_platform="linkedin.com")
    no_id = dict(envelope, data={k: v for k, v in envelope["data"].items() if k != "id"})
    tweet = orjson.loads((fixtures / X_LINES).read_bytes().splitlines()[0])
    tweet["data"].pop("rest_id")
    tweet["data"]["legacy"].pop("id_str")
    no_data = dict(envelope, data="oops")
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(
        b"\n".join(
            [
                good,
                b"{broken",
                orjson.dumps(linkedin),
                orjson.dumps(no_id),
                orjson.dumps(tweet),
                orjson.dumps(no_data),
                good[:100],
            ]
        )
    )
    records = list(read_file(path, "zeeschuimer"))
    assert isinstance(records[0], RawPost)
    dead = records[1:]
    assert _all_of(dead, DeadLetter) and all(d.format == "zeeschuimer" for d in dead)
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("invalid JSON line") and dead[0].source == f"{path}:2"
    assert reasons[1] == "unknown source_platform 'linkedin.com'"
    assert reasons[2] == "tiktok item without an id"
    assert reasons[3] == "twitter item without an id"
    assert "no data object" in reasons[4]
    assert reasons[5].startswith("invalid JSON line") and dead[5].raw == good[:100]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("id"), "without id"),
        (lambda d: d.update(createTime=0), "absurd"),
        (lambda d: d.pop("createTime"), "missing createTime"),
        (lambda d: d.update(createTime="soon"), "unparseable"),
    ],
)
def test_bad_items_raise_badpost(fixtures: Path, change, reason: str) -> None:
    item = _first_post(fixtures / ZEESCHUIMER).payload
    change(item)
    with pytest.raises(BadPost, match=reason):
        normalise("tiktok-item", item, NOW)
    scraped = orjson.loads((fixtures / SCRAPER).read_bytes())[0]
    change(scraped)
    with pytest.raises(BadPost, match=reason):
        normalise("tiktok-scraper", scraped, NOW)
