"""Twitter readers (v2, v1.1, twitwi/minet CSV) on every real fixture and on hostile input."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from twarc.expansions import flatten

from shoal.formats import UnknownFormat, detect_format, minet_csv, read_file, twitter_v1, twitter_v2
from shoal.formats._sniff import first_value
from shoal.model import Control, DeadLetter, RawPost

V2 = "twitter-v2/DocNow__twarc-csv/test-data"
TWITWI2 = "twitter-v2/medialab__twitwi/test/resources"
BEAR = "twitter-v1/bear__python-twitter/testdata"
RUBY = "twitter-v1/sferik__twitter-ruby/test/fixtures"
TWEEPY = "twitter-v1/tweepy__tweepy/cassettes"
CSV = "minet-csv/medialab__twitwi/test/resources"

# file -> (format, posts, dead letters, controls): the counts SOURCES.md gives for each file.
EXPECTED: dict[str, tuple[str, int, int, dict[str, int]]] = {
    f"{V2}/brexit.jsonl": ("twitter-v2", 100, 0, {}),
    f"{V2}/kpop.jsonl": ("twitter-v2", 100, 0, {"error": 1}),
    f"{V2}/media_policy_violation_off.jsonl": ("twitter-v2", 100, 0, {}),
    f"{V2}/media_policy_violation_on.jsonl": ("twitter-v2", 100, 0, {}),
    f"{V2}/withheld.jsonl": ("twitter-v2", 215, 0, {"error": 5}),
    f"{V2}/streaming_output_with_error.jsonl": ("twitter-v2", 7, 1, {}),
    f"{V2}/streaming_output.jsonl": ("twitter-v2", 8, 0, {"error": 1}),
    f"{V2}/cashtags.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/cotweet.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/edited.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/edited_after.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/edited_before.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/quoted_edit.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/verified_type.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/geo_tweets.jsonl": ("twitter-v2", 2, 0, {}),
    f"{V2}/two_tweets.jsonl": ("twitter-v2", 1, 0, {}),
    f"{V2}/entities_test.jsonl": ("twitter-v2", 474, 0, {"error": 11}),
    f"{TWITWI2}/payload-v2.json": ("twitter-v2", 10, 0, {}),
    f"{TWITWI2}/payload-v2-tweet-retweet.json": ("twitter-v2", 6, 0, {}),
    f"{TWITWI2}/payload-v2-video.json": ("twitter-v2", 1, 0, {}),
    f"{TWITWI2}/payload-v2-singletweet.json": ("twitter-v2", 1, 0, {}),
    f"{TWITWI2}/payload-v2-geo.json": ("twitter-v2", 2, 0, {}),
    f"{BEAR}/streaming/lines.json": ("twitter-v1", 72, 0, {}),
    f"{BEAR}/get_list_timeline.json": ("twitter-v1", 20, 0, {}),
    f"{BEAR}/get_home_timeline.json": ("twitter-v1", 20, 0, {}),  # 35 with nested
    f"{BEAR}/get_user_timeline_count.json": ("twitter-v1", 63, 0, {}),  # 99 with nested
    f"{BEAR}/get_status_promoted_video_tweet.json": ("twitter-v1", 1, 0, {}),
    f"{BEAR}/get_status_ext_alt.json": ("twitter-v1", 1, 0, {}),
    f"{BEAR}/models/status_quoted_tweet_with_media.json": ("twitter-v1", 1, 0, {}),
    f"{BEAR}/3.2/extended_tweet_in_extended_mode.json": ("twitter-v1", 1, 0, {}),
    f"{BEAR}/3.2/extended_tweet_in_compat_mode.json": ("twitter-v1", 1, 0, {}),
    f"{BEAR}/get_search_raw.json": ("twitter-v1", 100, 0, {}),
    f"{BEAR}/get_replies.json": ("twitter-v1", 20, 0, {}),
    f"{RUBY}/premium_search_emoji.json": ("twitter-v1", 100, 0, {}),
    f"{RUBY}/status.json": ("twitter-v1", 1, 0, {}),
    f"{RUBY}/track_streaming_user.json": (
        "twitter-v1",
        1,
        0,
        {"friends": 1, "direct_message": 1, "event": 1, "delete": 1, "warning": 1},
    ),
    f"{TWEEPY}/testhometimeline.json.response-0.body.json": ("twitter-v1", 19, 0, {}),  # 22
    f"{TWEEPY}/testsearchtweets.json.response-0.body.json": ("twitter-v1", 15, 0, {}),  # 21
    f"{CSV}/tweet-export.csv": ("minet-csv", 4, 0, {}),
    f"{CSV}/bluesky-posts-export.csv": ("minet-csv", 157, 0, {}),
}

# Not posts: twitwi's normalised outputs and a v2 *users* lookup page.
NOT_TWITTER_POSTS = (
    f"{TWITWI2}/normalized-tweets-v2.json",
    f"{TWITWI2}/normalized-tweets-v2-all.json",
    "twitter-v1/medialab__twitwi/test/resources/normalization.json",
    f"{V2}/users.jsonl",
)


def split(
    items: list[RawPost | DeadLetter | Control],
) -> tuple[list[RawPost], list[DeadLetter], Counter[str]]:
    posts = [i for i in items if isinstance(i, RawPost)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    controls = Counter(i.kind for i in items if isinstance(i, Control))
    return posts, dead, controls


def test_every_twitter_fixture_is_listed(fixtures: Path) -> None:
    found = {
        str(p.relative_to(fixtures))
        for kind in ("twitter-v2", "twitter-v1", "minet-csv")
        for p in (fixtures / kind).rglob("*")
        if p.is_file()
    }
    assert found == set(EXPECTED) | set(NOT_TWITTER_POSTS)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_fixture_counts(fixtures: Path, rel: str) -> None:
    fmt, n_posts, n_dead, controls = EXPECTED[rel]
    path = fixtures / rel
    assert detect_format(path) == fmt
    posts, dead, seen_controls = split(list(read_file(path)))
    assert len(posts) == n_posts
    assert len(dead) == n_dead
    assert dict(seen_controls) == controls
    for post in posts:
        assert post.format == fmt
        assert post.source.startswith(f"{path}:")
        assert int(post.source.rsplit(":", 1)[1]) >= 1
        assert post.platform == ("bluesky" if "bluesky" in rel else "twitter")
        if post.platform == "twitter":
            assert post.id.isdigit()


@pytest.mark.parametrize("rel", NOT_TWITTER_POSTS)
def test_non_posts_are_not_taken_for_twitter(fixtures: Path, rel: str) -> None:
    try:
        fmt = detect_format(fixtures / rel)
    except UnknownFormat:
        return
    assert fmt not in {"twitter-v1", "twitter-v2", "minet-csv"}


def test_other_platforms_are_not_stolen(fixtures: Path) -> None:
    """Our sniffers must say no to every Bluesky, Mastodon, TikTok, Instagram and X-web file."""
    checked = 0
    for kind in ("bluesky", "mastodon", "tiktok", "instagram", "other"):
        for path in (fixtures / kind).rglob("*"):
            if path.is_file():
                head = first_value(path)
                for mod in (twitter_v2, twitter_v1, minet_csv):
                    assert not mod.sniff(head), (mod.NAME, path)
                checked += 1
    assert checked >= 15


def test_users_page_yields_no_posts(fixtures: Path) -> None:
    posts, dead, controls = split(list(read_file(fixtures / V2 / "users.jsonl", "twitter-v2")))
    assert posts == []
    assert len(dead) == 96
    assert all("not a tweet" in d.reason for d in dead)
    assert controls == {"error": 8}


def test_truncated_last_line_is_a_dead_letter(fixtures: Path) -> None:
    path = fixtures / V2 / "streaming_output_with_error.jsonl"
    items = list(read_file(path))
    posts, dead, _ = split(items)
    assert isinstance(items[-1], DeadLetter)
    (letter,) = dead
    assert letter.reason.startswith("invalid JSON: ")
    assert letter.source == f"{path}:8"
    assert letter.format == "twitter-v2"
    assert letter.raw == path.read_bytes().splitlines()[7]
    assert [p.source for p in posts] == [f"{path}:{n}" for n in range(1, 8)]
    assert all("matching_rules" in p.payload and "__twarc" in p.payload for p in posts)


def test_v2_payloads_are_self_contained(fixtures: Path) -> None:
    path = fixtures / V2 / "brexit.jsonl"
    page = orjson.loads(path.read_bytes())
    includes_only = {t["id"] for t in page["includes"]["tweets"]} - {t["id"] for t in page["data"]}
    posts, _, _ = split(list(read_file(path)))
    assert [p.id for p in posts] == [t["id"] for t in page["data"]]
    assert not includes_only & {p.id for p in posts}
    media_keys = {m["media_key"] for m in page["includes"]["media"]}
    for post in posts:
        tweet = post.payload
        assert tweet["author"]["id"] == tweet["author_id"]
        assert tweet["__twarc"]["retrieved_at"] == "2021-09-22T16:38:09+00:00"
        att = tweet.get("attachments", {})
        for key, obj in zip(att.get("media_keys", []), att.get("media", []), strict=True):
            assert obj == ({} if key not in media_keys else {**obj, "media_key": key})
        for ref in tweet.get("referenced_tweets", []):
            if "text" in ref:  # found in includes: its author is inlined too
                assert ref["author"]["id"] == ref["author_id"]
    # Retweet 1440715272805969924's original carries 3 photos, inlined with the original.
    (rt,) = [p for p in posts if p.id == "1440715272805969924"]
    (orig,) = rt.payload["referenced_tweets"]
    assert orig["type"] == "retweeted"
    assert [m["type"] for m in orig["attachments"]["media"]] == ["photo"] * 3
    assert orjson.loads(orjson.dumps(rt.payload))["id"] == rt.id  # serialisable as is


@pytest.mark.parametrize(
    "name", ["brexit.jsonl", "kpop.jsonl", "withheld.jsonl", "streaming_output.jsonl"]
)
def test_v2_flattening_matches_twarc(fixtures: Path, name: str) -> None:
    """Same payload as ``twarc2 flatten``; we only add authors twarc misses at depth 2."""
    path = fixtures / V2 / name
    theirs = []
    for line in path.read_bytes().splitlines():
        page = orjson.loads(line)
        if "data" in page:
            theirs += flatten(page)
    ours = [
        orjson.loads(orjson.dumps(p.payload)) for p in read_file(path) if isinstance(p, RawPost)
    ]
    assert len(ours) == len(theirs)
    for mine, twarc in zip(ours, theirs, strict=True):
        strip = lambda t: {k: v for k, v in t.items() if k != "referenced_tweets"}  # noqa: E731
        assert strip(mine) == strip(twarc)
        for a, b in zip(
            mine.get("referenced_tweets", []), twarc.get("referenced_tweets", []), strict=True
        ):
            assert strip(a) == strip(b)


def test_flattened_lines_pass_through(fixtures: Path, tmp_path: Path) -> None:
    page = orjson.loads((fixtures / V2 / "brexit.jsonl").read_bytes())
    flat = flatten(page)
    path = tmp_path / "flat.jsonl"
    path.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in flat))
    assert detect_format(path) == "twitter-v2"
    posts, dead, _ = split(list(read_file(path)))
    assert dead == []
    assert [p.payload for p in posts] == flat
    assert [p.source for p in posts] == [f"{path}:{n}" for n in range(1, 101)]


def test_v1_stream_controls_and_wrappers(fixtures: Path) -> None:
    items = list(read_file(fixtures / RUBY / "track_streaming_user.json"))
    assert [type(i).__name__ for i in items] == ["Control", "RawPost"] + ["Control"] * 4
    assert items[1].id == "55709764298092545"  # type: ignore[union-attr]
    search = [
        p for p in read_file(fixtures / BEAR / "get_search_raw.json") if isinstance(p, RawPost)
    ]
    statuses = orjson.loads((fixtures / BEAR / "get_search_raw.json").read_bytes())["statuses"]
    assert [p.id for p in search] == [s["id_str"] for s in statuses]
    assert search[0].payload is not None and search[0].payload == statuses[0]  # kept as is


def test_minet_csv_ids_and_platforms(fixtures: Path) -> None:
    with open(fixtures / CSV / "tweet-export.csv", encoding="utf-8-sig", newline="") as fh:
        expected = [row["id"] for row in csv.DictReader(fh)]
    tweets = [p for p in read_file(fixtures / CSV / "tweet-export.csv") if isinstance(p, RawPost)]
    assert [t.id for t in tweets] == expected
    assert {t.platform for t in tweets} == {"twitter"}
    assert tweets[0].payload["user_screen_name"] == "Mcmo_EVE"
    bsky = [
        p for p in read_file(fixtures / CSV / "bluesky-posts-export.csv") if isinstance(p, RawPost)
    ]
    assert {p.platform for p in bsky} == {"bluesky"}
    assert all(p.id.startswith("at://did:") and p.id == p.payload["uri"] for p in bsky)
    assert len({p.id for p in bsky}) == 134  # the export repeats quoted posts
    # Quoted multi-line text survives the CSV round trip.
    assert any("\n" in p.payload["text"] for p in bsky)


# --- hostile input -----------------------------------------------------------------------------

GOOD_V2 = {
    "data": [{"id": "1", "text": "hi", "author_id": "9", "created_at": "2021-01-01T00:00:00.000Z"}]
}


def _read(tmp_path: Path, content: bytes, fmt: str, name: str = "x.jsonl") -> list[object]:
    path = tmp_path / name
    path.write_bytes(content)
    return list(read_file(path, fmt))


def test_hostile_json_lines_are_dead_letters(tmp_path: Path) -> None:
    good = orjson.dumps(GOOD_V2)
    lines = [
        good,
        b'{"data": [{"id": "2", "text": "caf\xe9"}]}',  # Latin-1, not UTF-8
        b'{"data": [{"id": "3", "text": "a\x00b"}]}',  # raw NUL inside a string
        orjson.dumps({"data": [{"id": "12ab", "text": "x"}]}),
        orjson.dumps({"data": [{"id": "\u0661\u0662", "text": "x"}]}),  # Arabic-Indic digits
        orjson.dumps({"data": [{"text": "no id"}]}),
        orjson.dumps({"data": "nonsense"}),
        orjson.dumps({"data": [5, None]}),
        b"[1, 2]",
        b'"just a string"',
        orjson.dumps(
            {
                "data": [{"id": "4", "text": "x", "attachments": 5, "entities": []}],
                "includes": {"media": "x", "users": [1, {"id": []}], "tweets": {}},
            }
        ),
        b"   ",
        good,
    ]
    items = _read(tmp_path, b"\n".join(lines) + b"\n", "twitter-v2")
    posts = [i for i in items if isinstance(i, RawPost)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    assert [p.id for p in posts] == ["1", "4", "1"]
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("invalid UTF-8")
    assert reasons[1].startswith("invalid JSON")
    assert reasons[2].startswith("tweet with an invalid id '12ab'")
    assert reasons[3].startswith("tweet with an invalid id '\u0661\u0662'")
    assert reasons[4] == "tweet without id"
    assert reasons[5] == "page data is neither a list nor an object"
    assert len(dead) == 11
    assert len(items) == len(posts) + len(dead)  # no Control for a bad page
    assert all(d.source.startswith(str(tmp_path)) and d.format == "twitter-v2" for d in dead)


def test_huge_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = {"data": [{"id": "5", "text": "x" * (10 << 20), "created_at": "2021-01-01T00:00:00Z"}]}
    line = orjson.dumps(big)
    items = _read(tmp_path, orjson.dumps(GOOD_V2) + b"\n" + line + b"\n", "twitter-v2")
    assert [type(i).__name__ for i in items] == ["RawPost", "RawPost"]  # the normaliser rejects it
    monkeypatch.setattr(twitter_v2, "MAX_LINE_BYTES", 1 << 20)
    items = _read(tmp_path, orjson.dumps(GOOD_V2) + b"\n" + line + b"\n", "twitter-v2")
    assert isinstance(items[1], DeadLetter) and items[1].reason.startswith("line too large")
    assert len(items[1].raw) < len(line)


def test_hostile_v1(tmp_path: Path) -> None:
    tweet = {"id_str": "7", "text": "t", "user": {"id_str": "1"}, "created_at": "x"}
    lines = [
        orjson.dumps(tweet),
        orjson.dumps({**tweet, "id_str": "seven"}),
        orjson.dumps({"text": "t", "user": {}}),
        orjson.dumps({"limit": {"track": 3}}),
        orjson.dumps({"something": "else"}),
        b'{"id_str": "8", "text": "\xff", "user": {}}',
        b"{truncated",
    ]
    items = _read(tmp_path, b"\n".join(lines), "twitter-v1")
    assert [type(i).__name__ for i in items] == ["RawPost"] + ["DeadLetter"] * 2 + ["Control"] + [
        "DeadLetter"
    ] * 3
    assert items[3] == Control("limit", f"{tmp_path / 'x.jsonl'}:4")
    assert [i.reason[:12] for i in items if isinstance(i, DeadLetter)] == [
        "tweet with a",  # an invalid id: 'seven'
        "tweet withou",
        "not a v1.1 s",
        "invalid UTF-",
        "invalid JSON",
    ]


@pytest.fixture
def production_csv_limit() -> Iterator[None]:
    """The hourly-file writer raises csv.field_size_limit process-wide; read like production."""
    old = csv.field_size_limit(1 << 30)
    yield
    csv.field_size_limit(old)


def test_hostile_csv(tmp_path: Path, production_csv_limit: None) -> None:
    header = "id,timestamp_utc,user_screen_name,text,media_urls,media_types\r\n"
    body = (
        '1,1610005273.0,a,"multi\nline ""quoted""",https://x/1.jpg,photo\r\n'
        "2,1610005273.0,b,caf\xe9,,\r\n"
        ",1610005273.0,c,no id,,\r\n"
        "abc,1610005273.0,d,bad id,,\r\n"
        "3,1610005273.0,e,too,many,fields,here\r\n"
        "4,1610005273.0,f,nul\x00here,,\r\n"
        f'5,1610005273.0,g,"{"y" * (2 << 20)}",,\r\n'
        "\r\n"
        "6,1610005273.0,h,fine,,\r\n"
    )
    raw = (
        b"\xef\xbb\xbf"
        + header.encode()
        + body.encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9")
    )
    path = tmp_path / "x.csv"
    path.write_bytes(raw)
    assert detect_format(path) == "minet-csv"
    items = list(read_file(path))
    posts = [i for i in items if isinstance(i, RawPost)]
    dead = [i for i in items if isinstance(i, DeadLetter)]
    assert [p.id for p in posts] == ["1", "6"]
    assert posts[0].payload["text"] == 'multi\nline "quoted"'
    assert next(iter(posts[0].payload)) == "id"  # BOM stripped from the header
    assert posts[0].source == f"{path}:2" and posts[1].source == f"{path}:11"
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("invalid UTF-8: a latin-1 or cp1252 file? iconv -f CP1252")
    assert reasons[1:5] == [
        "row without id",
        "row with an invalid id 'abc' (ids are whole numbers from 1 to 2^63-1)",
        "row has 7 fields, header has 6",
        "NUL byte in row",
    ]
    assert dead[0].raw == b"2,1610005273.0,b,caf\xe9,,\r\n"  # the original bytes
    assert reasons[5] == "row too large: over 1048576 bytes"
    assert len(dead[5].raw) <= 64 << 10
    assert len(dead) == 6


def test_an_array_per_line_is_json_lines(fixtures: Path, tmp_path: Path) -> None:
    """A v1.1 timeline page per line was refused as a whole file ("no reader recognises"),
    though the reader takes it apart when told the format."""
    src = fixtures / "twitter-v1/bear__python-twitter/testdata/get_home_timeline.json"
    tweets = orjson.loads(src.read_bytes())
    pages = tmp_path / "pages.jsonl"
    pages.write_bytes(orjson.dumps(tweets[:7]) + b"\n" + orjson.dumps(tweets[7:]) + b"\n")
    assert detect_format(pages) == "twitter-v1"
    got = [r.id for r in read_file(pages) if isinstance(r, RawPost)]
    assert got == [str(t["id_str"]) for t in tweets]
    whole = tmp_path / "one.json"  # one array on one line is still an array
    whole.write_bytes(orjson.dumps(tweets) + b"\n")
    assert first_value(whole).layout == "array"  # type: ignore[union-attr]


@pytest.mark.parametrize(("encoding", "named"), [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"),
                                                 ("utf-16-be", "UTF-16BE"), ("utf-32", "UTF-32")])
def test_a_wide_encoding_is_named_when_the_file_is_refused(
        fixtures: Path, tmp_path: Path, encoding: str, named: str) -> None:
    """A UTF-16 export was refused as "no reader recognises this file (CsvHead at start)"."""
    text = (fixtures / "twitter-v2/DocNow__twarc-csv/test-data/two_tweets.jsonl").read_text()
    path = tmp_path / "wide.jsonl"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(UnknownFormat, match=f"is {named} encoded; shoal reads UTF-8"):
        detect_format(path)
