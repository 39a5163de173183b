"""Media URLs of Twitter posts, checked against medialab/twitwi's normalised files."""

from __future__ import annotations

import base64
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.fetch.data_url import decode_data_url
from shoal.formats import read_file
from shoal.media.extract import (
    best_variant,
    csv_media,
    v1_media,
    v2_media,
    v2_media_and_missing,
)
from shoal.model import MediaRef, Normalised, RawPost
from shoal.normalise.twitter_v1 import normalise_graphql, normalise_v1
from shoal.normalise.twitter_v2 import normalise_v2

NOW = "2024-01-01T00:00:00+00:00"
V2 = "twitter-v2/DocNow__twarc-csv/test-data"
TWITWI2 = "twitter-v2/medialab__twitwi/test/resources"
BEAR = "twitter-v1/bear__python-twitter/testdata"


def v2_posts(fixtures: Path, rel: str) -> list[RawPost]:
    return [p for p in read_file(fixtures / rel, "twitter-v2") if isinstance(p, RawPost)]


def v1_tweets(fixtures: Path, rel: str) -> list[dict[str, Any]]:
    return [p.payload for p in read_file(fixtures / rel, "twitter-v1") if isinstance(p, RawPost)]


# --- the twitwi oracles ----------------------------------------------------------------------


def _nested(tweet: dict[str, Any]) -> list[dict[str, Any]]:
    out = [tweet]
    for key in ("retweeted_status", "quoted_status"):
        if isinstance(tweet.get(key), dict):
            out += _nested(tweet[key])
    return out


def test_v1_media_urls_match_twitwi(fixtures: Path) -> None:
    """Every tweet of normalization.json, nested ones included, has twitwi's media_urls.

    Only difference: twitwi's v1 normaliser cuts the ``?tag=N`` query off video URLs (its v2
    normaliser does not); we keep URLs as the API gave them, in both versions.
    """
    cases = orjson.loads(
        (fixtures / "twitter-v1/medialab__twitwi/test/resources/normalization.json").read_bytes()
    )
    compared = with_media = 0
    for case in cases:
        expected = {n["id"]: n for n in case["normalized"]}
        for tweet in _nested(case["source"]):
            if tweet["id_str"] not in expected:
                continue
            want = expected[tweet["id_str"]]
            n = normalise_v1(tweet, NOW)
            assert [re.sub(r"\?tag=\d+$", "", m.url) for m in n.media] == want["media_urls"]
            assert [m.type.replace("gif", "animated_gif") for m in n.media] == want["media_types"]
            # twitwi's media_files are "<tweet carrying the file>_<name>".
            assert [f"{m.source_post_id}_" for m in n.media] == [
                f.split("_", 1)[0] + "_" for f in want["media_files"]
            ]
            compared += 1
            with_media += bool(n.media)
    assert compared == 13 and with_media == 6


@pytest.mark.parametrize("oracle", ["normalized-tweets-v2.json", "normalized-tweets-v2-all.json"])
def test_v2_media_urls_match_twitwi(fixtures: Path, oracle: str) -> None:
    """The oracle covers payload-v2*.json; the -all file adds the tweets found in includes."""
    ours: dict[str, Normalised] = {}
    for name in (
        "payload-v2",
        "payload-v2-geo",
        "payload-v2-singletweet",
        "payload-v2-tweet-retweet",
        "payload-v2-video",
    ):
        for post in v2_posts(fixtures, f"{TWITWI2}/{name}.json"):
            ours[post.id] = normalise_v2(post.payload, NOW)
            for ref in post.payload.get("referenced_tweets", []):
                if "created_at" in ref:  # inlined from includes
                    ours.setdefault(ref["id"], normalise_v2(ref, NOW))
    expected = orjson.loads((fixtures / TWITWI2 / oracle).read_bytes())
    assert len(expected) == (20 if oracle == "normalized-tweets-v2.json" else 24)
    for want in expected:
        got = ours[want["id"]]
        assert [m.url for m in got.media] == want["media_urls"], want["id"]
        assert [m.type for m in got.media] == want["media_types"]
        assert [f"{m.post_id}_{m.url.rsplit('/', 1)[1].split('?')[0]}" for m in got.media] == want[
            "media_files"
        ]
    assert sum(bool(w["media_urls"]) for w in expected) == 2


# --- v2 --------------------------------------------------------------------------------------


def test_v2_video_best_mp4_and_fallbacks(fixtures: Path) -> None:
    (post,) = v2_posts(fixtures, f"{TWITWI2}/payload-v2-video.json")
    (ref,) = v2_media(post.payload, post.id)
    base = "https://video.twimg.com/amplify_video/1656683977720094731"
    assert ref == MediaRef(
        post_id="1656684087061381121",
        platform="twitter",
        position=0,
        type="video",
        url=f"{base}/vid/1280x720/jKBosd0XYnY98HAD.mp4?tag=16",
        alternatives=(
            f"{base}/pl/razxJ3G_fqhirHio.m3u8?tag=16&container=fmp4",
            f"{base}/vid/640x360/viu8mLIXkfDnIemM.mp4?tag=16",
            f"{base}/vid/480x270/SHODWZWboFgjwYz8.mp4?tag=16",
        ),
        media_key="13_1656683977720094731",
        source_post_id="1656684087061381121",
    )


def test_v2_preview_only_gifs_keep_their_type(fixtures: Path) -> None:
    page = orjson.loads((fixtures / V2 / "brexit.jsonl").read_bytes())
    gifs = {m["media_key"]: m for m in page["includes"]["media"] if m["type"] == "animated_gif"}
    assert len(gifs) == 2
    seen = {}
    for post in v2_posts(fixtures, f"{V2}/brexit.jsonl"):
        for ref in v2_media(post.payload, post.id):
            if ref.media_key in gifs:
                seen[ref.media_key] = ref
    assert set(seen) == set(gifs)
    for key, ref in seen.items():
        assert ref.type == "gif"
        assert ref.url == gifs[key]["preview_image_url"] and "tweet_video_thumb" in ref.url
        assert ref.alternatives == ()


def test_v2_retweets_show_the_original_media(fixtures: Path) -> None:
    posts = {p.id: p for p in v2_posts(fixtures, f"{V2}/brexit.jsonl")}
    # A retweet without attachments of its own; its original (also in data) has 3 photos.
    rt = v2_media(posts["1440715272805969924"].payload, "1440715272805969924")
    original = v2_media(posts["1440713966649417731"].payload, "1440713966649417731")
    assert [m.url for m in rt] == [m.url for m in original] and len(rt) == 3
    assert {m.source_post_id for m in rt} == {"1440713966649417731"}
    assert {m.post_id for m in rt} == {"1440715272805969924"}
    assert {m.source_post_id for m in original} == {"1440713966649417731"}
    # A retweet whose own attachments repeat the original's: attributed to the original.
    (ref,) = v2_media(posts["1440715801820950541"].payload, "1440715801820950541")
    orig_id = posts["1440715801820950541"].payload["referenced_tweets"][0]["id"]
    assert ref.media_key == "3_1440653504532549633" and ref.source_post_id == orig_id != ref.post_id


def test_v2_quote_lists_own_media_then_quoted() -> None:
    photo = {"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/own.jpg"}
    quoted_photo = {"media_key": "3_2", "type": "photo", "url": "https://pbs.twimg.com/media/q.jpg"}
    tweet = {
        "id": "20",
        "attachments": {"media_keys": ["3_1"], "media": [photo]},
        "referenced_tweets": [
            {
                "type": "quoted",
                "id": "10",
                "attachments": {"media_keys": ["3_2", "3_9"], "media": [quoted_photo, {}]},
            }
        ],
    }
    refs, missing = v2_media_and_missing(tweet, "20")
    assert [(m.url.rsplit("/", 1)[1], m.source_post_id, m.position) for m in refs] == [
        ("own.jpg", "20", 0),
        ("q.jpg", "10", 1),
    ]
    assert missing == ("3_9",)
    # Re-attaching the quoted tweet's photo does not make it the quoting tweet's.
    tweet["attachments"] = {"media_keys": ["3_2"], "media": [quoted_photo]}
    refs, _ = v2_media_and_missing(tweet, "20")
    assert [(m.media_key, m.source_post_id) for m in refs] == [("3_2", "10")]


def test_withheld_unresolvable_keys_are_recorded(fixtures: Path) -> None:
    path = fixtures / V2 / "withheld.jsonl"
    own_missing: list[str] = []
    for line in path.read_bytes().splitlines():
        page = orjson.loads(line)
        known = {m["media_key"] for m in page["includes"].get("media", [])}
        for tweet in page["data"]:
            own_missing += [
                k for k in tweet.get("attachments", {}).get("media_keys", []) if k not in known
            ]
    assert len(own_missing) == 12
    recorded: list[str] = []
    for post in v2_posts(fixtures, f"{V2}/withheld.jsonl"):
        n = normalise_v2(post.payload, NOW)
        recorded += n.unresolved_media_keys
        assert not set(n.unresolved_media_keys) & {m.media_key for m in n.media}
    assert set(own_missing) <= set(recorded)
    counts = Counter(
        m.type
        for p in v2_posts(fixtures, f"{V2}/withheld.jsonl")
        for m in normalise_v2(p.payload, NOW).media
    )
    assert counts == {"video": 13, "photo": 8, "gif": 1}  # every includes.media object is used


@pytest.mark.parametrize(
    ("name", "photos", "videos"),
    [("media_policy_violation_on.jsonl", 13, 10), ("media_policy_violation_off.jsonl", 13, 9)],
)
def test_media_policy_captures(fixtures: Path, name: str, photos: int, videos: int) -> None:
    refs = [
        m for p in v2_posts(fixtures, f"{V2}/{name}") for m in normalise_v2(p.payload, NOW).media
    ]
    unique = {m.media_key: m for m in refs}
    assert Counter(m.type for m in unique.values()) == {"photo": photos, "video": videos}
    assert ("7_1390728896350461960" in unique) == name.endswith("_on.jsonl")
    assert all("pbs.twimg.com" in m.url for m in unique.values())


def test_streaming_photos(fixtures: Path) -> None:
    refs = [
        m
        for p in v2_posts(fixtures, f"{V2}/streaming_output.jsonl")
        for m in v2_media(p.payload, p.id)
    ]
    assert [m.type for m in refs] == ["photo", "photo"]
    assert all(m.url.startswith("https://pbs.twimg.com/media/") for m in refs)


# --- v1.1 ------------------------------------------------------------------------------------


def test_promoted_video_best_mp4(fixtures: Path) -> None:
    tweet = orjson.loads((fixtures / BEAR / "get_status_promoted_video_tweet.json").read_bytes())
    (ref,) = v1_media(tweet, tweet["id_str"])
    base = "https://video.twimg.com/amplify_video/778025997606105089"
    assert ref.type == "video"
    assert ref.url == f"{base}/vid/1280x720/mUiy98wFwECTRNxT.mp4"
    assert ref.alternatives == (
        f"{base}/pl/PX7Gx8TRhJyUZ2-L.m3u8",
        f"{base}/vid/640x360/SX_HepRw0MeH796L.mp4",
        f"{base}/vid/320x180/5Qr0z_HeycC2DvRj.mp4",
        f"{base}/pl/PX7Gx8TRhJyUZ2-L.mpd",
    )
    assert ref.media_key == "13_778025997606105089"  # amplify video, despite a /media/ thumbnail


def test_list_timeline_gifs_and_old_videos(fixtures: Path) -> None:
    refs = [
        m
        for t in v1_tweets(fixtures, f"{BEAR}/get_list_timeline.json")
        for m in v1_media(t, t["id_str"])
    ]
    gifs = [m for m in refs if m.type == "gif"]
    videos = [m for m in refs if m.type == "video"]
    assert (len(gifs), len(videos)) == (13, 7)
    for gif in gifs:  # a gif is one mp4 with bitrate 0
        assert re.fullmatch(r"https://pbs\.twimg\.com/tweet_video/[\w-]+\.mp4", gif.url)
        assert gif.alternatives == () and gif.media_key.startswith("16_")
    for video in videos:  # mp4 beats webm at the same bitrate; HLS is the first fallback
        assert video.url.endswith(".mp4") and ".m3u8" in video.alternatives[0]
        assert any(a.endswith(".webm") for a in video.alternatives)
        assert video.media_key.startswith(("7_", "13_"))
    first = next(m for m in videos if "693178495795609600" in m.url)
    assert first.url.endswith("/720x720/EqwS2CD0YgNHAT70.mp4")


def test_lines_json_media_counts(fixtures: Path) -> None:
    tweets = v1_tweets(fixtures, f"{BEAR}/streaming/lines.json")
    refs = [m for t in tweets for m in v1_media(t, t["id_str"])]
    assert Counter(m.type for m in refs) == {"photo": 26, "video": 2, "gif": 1}
    # Compat-mode tweets whose media are only under extended_tweet (18 here, 19 with nested).
    only_extended = [
        t
        for t in tweets
        if "media" in t.get("extended_tweet", {}).get("extended_entities", {})
        and "extended_entities" not in t
    ]
    assert len(only_extended) == 18
    for tweet in only_extended:
        media = tweet["extended_tweet"]["extended_entities"]["media"]
        assert len(v1_media(tweet, tweet["id_str"])) >= len(media)


def test_compat_and_extended_mode(fixtures: Path) -> None:
    compat = orjson.loads((fixtures / BEAR / "3.2/extended_tweet_in_compat_mode.json").read_bytes())
    extended = orjson.loads(
        (fixtures / BEAR / "3.2/extended_tweet_in_extended_mode.json").read_bytes()
    )
    assert v1_media(compat, compat["id_str"]) == []
    (photo,) = v1_media(extended, extended["id_str"])
    assert photo.type == "photo" and photo.url.startswith("https://pbs.twimg.com/media/")


def test_old_entities_media_and_quotes(fixtures: Path) -> None:
    search = v1_tweets(fixtures, f"{BEAR}/get_search_raw.json")
    legacy = [
        t for t in search if "media" in t.get("entities", {}) and "extended_entities" not in t
    ]
    assert legacy and all(v1_media(t, t["id_str"]) for t in legacy)
    quoted = orjson.loads(
        (fixtures / BEAR / "models/status_quoted_tweet_with_media.json").read_bytes()
    )
    (ref,) = v1_media(quoted, quoted["id_str"])
    assert ref.source_post_id == quoted["quoted_status"]["id_str"] != ref.post_id


def test_retweet_media_attributed_to_original(fixtures: Path) -> None:
    home = v1_tweets(fixtures, f"{BEAR}/get_home_timeline.json")
    found = 0
    for tweet in home:
        rt = tweet.get("retweeted_status")
        if not rt:
            continue
        mine = v1_media(tweet, tweet["id_str"])
        assert [m.url for m in mine] == [m.url for m in v1_media(rt, rt["id_str"])]
        assert all(
            m.source_post_id in (rt["id_str"], rt.get("quoted_status", {}).get("id_str"))
            for m in mine
        )
        found += bool(mine)
    assert found >= 1


def test_graphql_media(fixtures: Path) -> None:
    path = (
        fixtures
        / "other/jorisheijkant__zeeschuimer-decoder/test-files/twitter-test.lines-001-078.ndjson"
    )
    envelopes = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    refs = [m for env in envelopes for m in normalise_graphql(env, NOW).media]
    assert Counter(m.type for m in refs) == {"photo": 25, "video": 14}
    assert all(
        m.url.startswith(("https://pbs.twimg.com/media/", "https://video.twimg.com/")) for m in refs
    )
    # Our v1.1 media keys (derived from the CDN path) agree with X's own media_key.
    derived = 0
    for env in envelopes:
        for ent in env["data"]["legacy"].get("extended_entities", {}).get("media", []):
            stripped = {k: v for k, v in ent.items() if k != "media_key"}
            (ref,) = v1_media({"extended_entities": {"media": [stripped]}}, "1")
            assert ref.media_key == ent["media_key"]
            derived += 1
    assert derived == 16


def test_hostile_media_shapes() -> None:
    tweet = {
        "extended_entities": {
            "media": [5, {"type": "video", "video_info": {"variants": "x"}}, {"type": "photo"}]
        },
        "retweeted_status": {"id_str": "1", "retweeted_status": {}},
    }
    assert v1_media(tweet, "2") == []
    loop: dict[str, Any] = {"id": "1", "attachments": {"media_keys": [1, None], "media": "x"}}
    loop["referenced_tweets"] = [{"type": "retweeted", "id": "1", **loop}]
    refs, missing = v2_media_and_missing(loop, "1")
    assert refs == [] and missing == ()
    assert best_variant(
        [{"url": "u", "content_type": "video/mp4", "bitrate": "high"}], "bitrate"
    ) == ("u", ())
    assert best_variant(None, "bit_rate") == ("", ())


# --- CSV and data URLs -----------------------------------------------------------------------


def test_csv_media_pairs_columns() -> None:
    refs = csv_media(
        "5",
        "twitter",
        "https://pbs.twimg.com/media/a.jpg|https://video.twimg.com/x.mp4|data:image/png;base64,iVBO",
        "photo|animated_gif",
        "4_a.jpg|5_x.mp4",
    )
    assert [(m.position, m.type, m.source_post_id) for m in refs] == [
        (0, "photo", "4"),
        (1, "gif", "5"),
        (2, "photo", "5"),
    ]
    assert csv_media("5", "twitter", "") == []
    bsky = csv_media(
        "at://x",
        "bluesky",
        "https://cdn.bsky.app/img/feed_fullsize/a|https://video.bsky.app/b.m3u8",
        "application/octet-stream|video/mp4",
        thumbnails="https://cdn.bsky.app/img/feed_thumbnail/a|t",
    )
    assert [(m.type, m.alternatives) for m in bsky] == [
        ("photo", ("https://cdn.bsky.app/img/feed_thumbnail/a",)),
        ("video", ()),
    ]


def test_bluesky_export_media(fixtures: Path) -> None:
    path = fixtures / "minet-csv/medialab__twitwi/test/resources/bluesky-posts-export.csv"
    rows = [p.payload for p in read_file(path) if isinstance(p, RawPost)]
    with_media = [r for r in rows if r["media_urls"]]
    assert len(with_media) == 55
    for row in with_media:
        refs = csv_media(row["uri"], "bluesky", row["media_urls"], row["media_types"])
        assert [m.url for m in refs] == row["media_urls"].split("|")
    types = Counter(
        m.type
        for r in with_media
        for m in csv_media(r["uri"], "bluesky", r["media_urls"], r["media_types"])
    )
    assert types["gif"] == 7 and types["video"] >= 10


def test_decode_data_url() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert decode_data_url(url, 1000) == ("image/png", png)
    assert decode_data_url("data:,hello%20world", 100) == ("text/plain", b"hello world")
    assert decode_data_url("DATA:text/plain;charset=utf-8,%E2%82%AC", 3) == (
        "text/plain",
        "€".encode(),
    )
    (ref,) = csv_media("1", "twitter", url)
    assert ref.type == "photo" and ref.url == url


@pytest.mark.parametrize(
    ("url", "limit", "reason"),
    [
        ("https://example.org/a.png", 10, "not a data: URL"),
        ("data:image/png;base64", 10, "no ','"),
        ("data:image/png;base64,!!!!", 10, "invalid base64"),
        ("data:image/png;base64," + "A" * 4000, 100, "too large"),
        ("data:,%41" * 1 + "A" * 500, 100, "too large"),
        ("data:image png;base64,AAAA", 10, "invalid media type"),
        ("data:,x", -1, "max_bytes"),
    ],
)
def test_decode_data_url_rejects(url: str, limit: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_data_url(url, limit)
