"""Twitter normalisers: every fixture post becomes a complete row, bad ones a BadPost."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from shoal.formats import UnknownFormat, detect_format, read_file
from shoal.model import POST_COLUMNS, USER_COLUMNS, BadPost, Normalised, RawPost
from shoal.normalise import normalise
from shoal.normalise.twitter_v1 import normalise_graphql, normalise_v1, parse_twitter_date
from shoal.normalise.twitter_v2 import normalise_v2

NOW = "2024-01-01T00:00:00+00:00"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
V2 = "twitter-v2/DocNow__twarc-csv/test-data"
BEAR = "twitter-v1/bear__python-twitter/testdata"
GRAPHQL = "other/jorisheijkant__zeeschuimer-decoder"
POST_KEYS = [c for c in POST_COLUMNS if c != "collectors"]


def all_posts(fixtures: Path) -> list[tuple[Path, RawPost]]:
    out = []
    for kind in ("twitter-v2", "twitter-v1", "minet-csv", "other"):
        for path in sorted((fixtures / kind).rglob("*")):
            if not path.is_file():
                continue
            try:
                fmt = detect_format(path)
            except UnknownFormat:
                continue
            out += [(path, p) for p in read_file(path, fmt) if isinstance(p, RawPost)]
    return out


def check_row(n: Normalised) -> None:
    assert list(n.post) == POST_KEYS  # every column, in order
    assert all(isinstance(v, str) for v in n.post.values())
    assert n.post["id"] == n.id
    assert ISO.match(n.post["created_at"]), n.post["created_at"]
    assert n.created_at.tzinfo is UTC and n.created_at.isoformat() == n.post["created_at"]
    if n.user is not None:
        assert list(n.user) == list(USER_COLUMNS)
        assert all(isinstance(v, str) for v in n.user.values())
        assert n.user["created_at"] == "" or ISO.match(n.user["created_at"])
        assert n.post["author.username"] == n.user["username"]
    assert n.post["media_urls"] == "|".join(m.url for m in n.media)
    assert n.post["media_types"] == "|".join(m.type for m in n.media)
    assert n.post["media_keys"] == "|".join(m.media_key for m in n.media)
    assert [m.position for m in n.media] == list(range(len(n.media)))


def test_every_fixture_post_normalises(fixtures: Path) -> None:
    bad: list[str] = []
    count = 0
    for path, raw in all_posts(fixtures):
        try:
            n = normalise(raw.format, raw.payload, NOW)
        except BadPost as exc:
            bad.append(f"{path.name}:{raw.id}:{exc}")
            continue
        check_row(n)
        assert n.platform == raw.platform and n.id == raw.id
        count += 1
    # The one bad row: a Bluesky post dated year 0 in twitwi's export.
    assert (
        len(bad) == 1 and bad[0].startswith("bluesky-posts-export.csv:") and "created_at" in bad[0]
    )
    # Every post of the files listed in test_formats_twitter less that one, + 78 + 1 X items.
    assert count == 1730 + 79


def test_v2_row(fixtures: Path) -> None:
    post = next(p for p in read_file(fixtures / V2 / "brexit.jsonl") if isinstance(p, RawPost))
    n = normalise_v2(post.payload, NOW)
    row = n.post
    assert row["id"] == "1440716895355764743" == row["conversation_id"]
    assert row["author_id"] == "4203239195"
    assert row["created_at"] == "2021-09-22T16:37:29+00:00"
    assert n.created_at == datetime(2021, 9, 22, 16, 37, 29, tzinfo=UTC)
    assert row["retrieved_at"] == "2021-09-22T16:38:09+00:00"  # __twarc wins over NOW
    assert (row["source"], row["lang"]) == ("Twitter Web App", "en")
    assert row["hashtags"] == "PeoplesVote|Brexit"
    assert row["text"].startswith("The same Labour MPs") and row["reference_type"] == ""
    assert row["author.verified"] in ("true", "false")
    assert row["author.public_metrics.followers_count"].isdigit()
    assert (
        n.user is not None
        and n.user["id"] == "4203239195"
        and n.user["retrieved_at"] == row["retrieved_at"]
    )
    assert n.unresolved_media_keys == ()


def test_v2_references_and_retrieved_fallback(fixtures: Path) -> None:
    path = fixtures / "twitter-v2/medialab__twitwi/test/resources/payload-v2.json"
    rows = {
        p.id: normalise_v2(p.payload, NOW).post for p in read_file(path) if isinstance(p, RawPost)
    }
    assert rows["1383055313276964865"]["reference_type"] == "retweeted"
    assert rows["1383055313276964865"]["referenced_tweet_id"] == "1383026700695441414"
    assert all(r["retrieved_at"] == NOW for r in rows.values())  # no __twarc in this file
    kinds = {r["reference_type"] for r in rows.values()}
    assert kinds == {"retweeted", "replied_to"}  # 9 retweets and a reply


def test_v2_note_tweet_text_and_tags() -> None:
    tweet = {
        "id": "10",
        "text": "short #a",
        "created_at": "2023-03-01T10:00:00.000Z",
        "entities": {"hashtags": [{"tag": "a"}]},
        "note_tweet": {
            "text": "long text #a #B",
            "entities": {"hashtags": [{"tag": "a"}, {"tag": "B"}]},
        },
        "referenced_tweets": [{"type": "replied_to", "id": "9"}],
    }
    n = normalise_v2(tweet, NOW)
    assert n.post["text"] == "long text #a #B"
    assert n.post["hashtags"] == "a|B"
    assert (n.post["reference_type"], n.post["referenced_tweet_id"]) == ("replied_to", "9")
    assert n.user is None and n.post["author.name"] == ""
    # An author missing from includes: a stub row that can never beat a real profile.
    n = normalise_v2({**tweet, "author_id": "77", "author": {}}, NOW)
    assert n.user == {**dict.fromkeys(USER_COLUMNS, ""), "id": "77"}
    assert n.post["author_id"] == "77" and n.post["author.username"] == ""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "missing id"),
        ({"id": "12a"}, "invalid id"),
        ({"id": "1\x002"}, "invalid id"),
        ({"created_at": None}, "missing created_at"),
        ({"created_at": "yesterday"}, "unparseable created_at"),
        ({"created_at": "1999-01-01T00:00:00.000Z"}, "absurd created_at"),
        ({"created_at": "2150-01-01T00:00:00.000Z"}, "absurd created_at"),
        ({"text": "x" * (10 << 20)}, "text too long"),
        ({"author": "nobody", "attachments": {"media_keys": 3}, "entities": 7}, None),
        ({"referenced_tweets": "x", "note_tweet": []}, None),
    ],
)
def test_v2_bad_posts(change: dict[str, Any], reason: str | None) -> None:
    tweet = {"id": "10", "text": "t", "created_at": "2021-01-01T00:00:00.000Z", **change}
    if reason is None:  # odd types are tolerated, not crashes
        assert normalise_v2(tweet, NOW).id == "10"
        return
    with pytest.raises(BadPost, match=reason):
        normalise_v2(tweet, NOW)


def test_v1_compat_tweet_uses_extended_tweet(fixtures: Path) -> None:
    posts = [
        p for p in read_file(fixtures / BEAR / "streaming/lines.json") if isinstance(p, RawPost)
    ]
    compat = [
        p.payload for p in posts if p.payload.get("truncated") and "extended_tweet" in p.payload
    ]
    assert len(compat) >= 37
    for tweet in compat:
        row = normalise_v1(tweet, NOW).post
        assert row["text"] == tweet["extended_tweet"]["full_text"]
        tags = tweet["extended_tweet"]["entities"]["hashtags"]
        assert row["hashtags"] == "|".join(t["text"] for t in tags)


def test_v1_row(fixtures: Path) -> None:
    tweet = orjson.loads(
        (fixtures / "twitter-v1/sferik__twitter-ruby/test/fixtures/status.json").read_bytes()
    )
    n = normalise_v1(tweet, NOW)
    assert n.post["id"] == tweet["id_str"]
    assert n.post["author_id"] == tweet["user"]["id_str"]
    assert n.post["author.username"] == tweet["user"]["screen_name"]
    assert n.post["author.public_metrics.following_count"] == str(tweet["user"]["friends_count"])
    assert "<" not in n.post["source"] and n.post["source"]
    assert n.post["retrieved_at"] == NOW
    assert n.post["created_at"] == parse_twitter_date(tweet["created_at"]).isoformat()


def test_v1_references(fixtures: Path) -> None:
    quoted = orjson.loads(
        (fixtures / BEAR / "models/status_quoted_tweet_with_media.json").read_bytes()
    )
    row = normalise_v1(quoted, NOW).post
    assert (row["reference_type"], row["referenced_tweet_id"]) == (
        "quoted",
        quoted["quoted_status"]["id_str"],
    )
    assert row["text"] == quoted["full_text"]
    home = orjson.loads((fixtures / BEAR / "get_home_timeline.json").read_bytes())
    rts = [t for t in home if "retweeted_status" in t]
    assert len(rts) == 14
    for t in rts:
        row = normalise_v1(t, NOW).post
        assert (row["reference_type"], row["referenced_tweet_id"]) == (
            "retweeted",
            t["retweeted_status"]["id_str"],
        )


def test_twitter_dates() -> None:
    assert parse_twitter_date("Wed Oct 10 20:19:24 +0000 2018") == datetime(
        2018, 10, 10, 20, 19, 24, tzinfo=UTC
    )
    assert parse_twitter_date("Wed Oct 10 22:19:24 +0200 2018") == datetime(
        2018, 10, 10, 20, 19, 24, tzinfo=UTC
    )
    assert parse_twitter_date("2018-10-10T20:19:24Z").hour == 20
    for bad in (
        "Wed Foo 10 20:19:24 +0000 2018",
        "Wed Oct 10 20:19 +0000 2018",
        "Wed Oct 10 20:19:24 +00x0 2018",
    ):
        with pytest.raises(BadPost, match="unparseable"):
            parse_twitter_date(bad)
    with pytest.raises(BadPost, match="absurd"):
        parse_twitter_date("Wed Oct 10 20:19:24 +0000 1970")


def _graphql_lines(fixtures: Path) -> list[dict[str, Any]]:
    path = fixtures / GRAPHQL / "test-files/twitter-test.lines-001-078.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_graphql_envelopes_and_bare_results(fixtures: Path) -> None:
    envelopes = _graphql_lines(fixtures)
    assert len(envelopes) == 78
    for env in envelopes:
        n = normalise("twitter-graphql", env, NOW)
        check_row(n)
        assert n.id == env["item_id"] == env["data"]["rest_id"]
        assert (
            n.post["retrieved_at"]
            == datetime.fromtimestamp(env["timestamp_collected"] // 1000, UTC).isoformat()
        )
        bare = normalise_graphql(env["data"], NOW)
        assert bare.post == {**n.post, "retrieved_at": NOW}
        assert n.user is not None and n.user["username"]
    quotes = [e for e in envelopes if "quoted_status_result" in e["data"]]
    assert quotes
    for env in quotes:
        assert normalise_graphql(env, NOW).post["reference_type"] == "quoted"
    notes = [e for e in envelopes if "note_tweet" in e["data"]]
    assert len(notes) == 1
    row = normalise_graphql(notes[0], NOW).post
    assert row["text"] == notes[0]["data"]["note_tweet"]["note_tweet_results"]["result"]["text"]


def test_graphql_through_the_zeeschuimer_reader(fixtures: Path) -> None:
    """The Zeeschuimer reader routes X items to ``twitter-graphql``, which is ours."""
    path = fixtures / GRAPHQL / "test-files/twitter-test.lines-001-078.ndjson"
    assert detect_format(path) == "zeeschuimer"
    posts = [p for p in read_file(path) if isinstance(p, RawPost)]
    envelopes = _graphql_lines(fixtures)
    assert [p.format for p in posts] == ["twitter-graphql"] * 78
    assert [p.id for p in posts] == [e["item_id"] for e in envelopes]
    rows = [normalise(p.format, p.payload, NOW) for p in posts]
    for n, env in zip(rows, envelopes, strict=True):
        assert n.post == normalise_graphql(env, NOW).post  # same row from payload or envelope
    media = Counter(m.type for n in rows for m in n.media)
    assert media == {"photo": 25, "video": 14}


def test_graphql_single_pretty_item(fixtures: Path) -> None:
    env = orjson.loads((fixtures / GRAPHQL / "example-items/twitter.json").read_bytes())
    n = normalise_graphql(env, NOW)
    first = normalise_graphql(_graphql_lines(fixtures)[0], NOW)
    assert n.post == first.post
    assert [m.type for m in n.media] == ["photo", "photo"]


def test_graphql_tombstone_is_bad() -> None:
    with pytest.raises(BadPost, match="legacy"):
        normalise_graphql({"__typename": "TweetTombstone", "tombstone": {}}, NOW)
    with pytest.raises(BadPost):
        normalise_graphql({"data": {"legacy": {"created_at": "x"}}}, NOW)


def test_minet_rows(fixtures: Path) -> None:
    path = fixtures / "minet-csv/medialab__twitwi/test/resources/tweet-export.csv"
    first = next(p for p in read_file(path) if isinstance(p, RawPost))
    n = normalise("minet-csv", first.payload, NOW)
    assert n.platform == "twitter"
    assert n.post["created_at"] == "2021-01-07T07:41:13+00:00"  # from timestamp_utc, not local_time
    assert (n.post["reference_type"], n.post["referenced_tweet_id"]) == (
        "replied_to",
        "1347084392481615872",
    )
    assert n.post["author.verified"] == "false" and n.post["author.username"] == "Mcmo_EVE"
    assert n.user is not None and n.user["created_at"] == "2012-05-12T15:32:30+00:00"
    bsky_path = fixtures / "minet-csv/medialab__twitwi/test/resources/bluesky-posts-export.csv"
    bsky = next(p for p in read_file(bsky_path) if isinstance(p, RawPost))
    b = normalise("minet-csv", bsky.payload, NOW)
    assert b.platform == "bluesky" and b.id == bsky.payload["uri"]
    assert b.post["author_id"] == "did:plc:crmrddqmbqzyqd24yjlpibz2"
    assert b.post["hashtags"] == "esr|hceres"
    assert b.post["conversation_id"] == b.id
    assert "cdn.bsky.app" not in b.post["text"]  # original_text, not twitwi's text with links
    assert [m.type for m in b.media] == ["photo"]


def test_minet_bad_rows() -> None:
    row = {"id": "", "timestamp_utc": "1610005273.0"}
    with pytest.raises(BadPost, match="missing id"):
        normalise("minet-csv", row, NOW)
    with pytest.raises(BadPost, match="created_at"):
        normalise("minet-csv", {"id": "1", "timestamp_utc": "soon"}, NOW)
    with pytest.raises(BadPost, match="text too long"):
        normalise(
            "minet-csv", {"id": "1", "timestamp_utc": "1610005273", "text": "x" * 200_000}, NOW
        )
    with pytest.raises(BadPost, match="missing id"):
        normalise("minet-csv", {"uri": "", "timestamp_utc": "1610005273"}, NOW)


def test_normalise_v2_speed(fixtures: Path) -> None:
    """The dataflow runs at 20,000+ posts/s: a typical tweet must stay well under 50 µs."""
    payloads = [
        p.payload for p in read_file(fixtures / V2 / "brexit.jsonl") if isinstance(p, RawPost)
    ]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for payload in payloads:
            normalise_v2(payload, NOW)
        best = min(best, (time.perf_counter() - start) / len(payloads))
    assert best < 50e-6, f"{best * 1e6:.1f} µs per tweet"
