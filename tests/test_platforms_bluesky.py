"""Bluesky readers, normalisers and media extraction against the real payloads.

twitwi's normalized files are an independent oracle for media URLs. Known, deliberate
differences (see shoal.media.platforms): video URLs percent-encode the DID as the AppView
does (twitwi leaves ``did:plc:`` raw), images always use ``@jpeg`` as the AppView does
(twitwi writes ``@png`` for PNG blobs), and where the AppView's URL names another DID than
the post's (one post) the AppView's URL is kept; so URLs are compared by CID.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, TypeGuard, TypeVar
from urllib.parse import unquote

import orjson
import pytest

from shoal.formats import UnknownFormat, detect_format, read_file
from shoal.model import POST_COLUMNS, BadPost, Control, DeadLetter, Normalised, RawPost
from shoal.normalise import normalise

TWITWI = "bluesky/medialab__twitwi/test/resources"
POSTS = f"{TWITWI}/bluesky-posts.json"
TAP = f"{TWITWI}/bluesky-tap-posts.json"
PROFILES = f"{TWITWI}/bluesky-profiles.json"
JETSTREAM = "bluesky/bluesky-social__jetstream/internal/corpus/testdata/expected_v1.jsonl"
NOW = "2030-01-01T00:00:00+00:00"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")

T = TypeVar("T")


def _all_of(items: list[Any], cls: type[T]) -> TypeGuard[list[T]]:
    """Whether every item is a ``cls``; asserted, it also narrows the list's type."""
    return all(isinstance(item, cls) for item in items)


def _read(path: Path) -> list[RawPost | DeadLetter | Control]:
    return list(read_file(path))


def _posts(path: Path) -> list[RawPost]:
    return [r for r in read_file(path) if isinstance(r, RawPost)]


def _key(url: str) -> str:
    """What identifies a media file whatever the URL spelling: its CID on Bluesky's CDNs."""
    url = unquote(url)
    if "cdn.bsky.app/img/" in url:
        return url.rsplit("/", 1)[1].split("@", 1)[0]
    if "video.bsky.app/watch/" in url:
        return url.rsplit("/", 2)[1]
    return url


def _check_row(n: Normalised) -> None:
    assert set(n.post) == set(POST_COLUMNS) - {"collectors"}
    assert all(isinstance(v, str) for v in n.post.values())
    assert ISO.match(n.post["created_at"]), n.post["created_at"]
    offset = n.created_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert n.post["id"] == n.id and n.id.startswith("at://")
    assert n.post["media_urls"] == "|".join(m.url for m in n.media)
    assert n.post["media_types"] == "|".join(m.type for m in n.media)
    assert [m.position for m in n.media] == list(range(len(n.media)))


@pytest.mark.parametrize("name", [POSTS, TAP, PROFILES, JETSTREAM])
def test_bluesky_files_are_detected(fixtures: Path, name: str) -> None:
    assert detect_format(fixtures / name) == "bluesky"


@pytest.mark.parametrize(
    "name",
    [
        f"{TWITWI}/bluesky-normalized-posts.json",
        f"{TWITWI}/bluesky-normalized-tap-posts.json",
        "minet-csv/medialab__twitwi/test/resources/bluesky-posts-export.csv",
    ],
)
def test_twitwi_outputs_are_not_taken_for_raw_bluesky(fixtures: Path, name: str) -> None:
    try:
        fmt = detect_format(fixtures / name)
    except UnknownFormat:
        return
    assert fmt != "bluesky"


def test_post_views_and_feed_items(fixtures: Path) -> None:
    records = _read(fixtures / POSTS)
    assert len(records) == 123
    assert _all_of(records, RawPost) and all(r.format == "bluesky-post" for r in records)
    ids = [r.id for r in records]
    assert all(i.startswith("at://did:") and "/app.bsky.feed.post/" in i for i in ids)
    feed_items = [r for r in records if "post" in r.payload]
    assert len(feed_items) == 13  # {post, reply} / {post, reason} / {post, uri}
    assert all(r.id == r.payload["post"]["uri"] for r in feed_items)

    good, bad = [], []
    for r in records:
        try:
            good.append(normalise(r.format, r.payload, NOW))
        except BadPost as exc:
            bad.append(str(exc))
    assert len(good) == 122
    # One record claims year 0: a date the hourly files cannot hold.
    assert len(bad) == 1 and "createdAt" in bad[0] and "0000-10-14" in bad[0]
    for n in good:
        _check_row(n)
        assert n.user is not None and n.user["id"] == n.post["author_id"]
        assert n.post["retrieved_at"] == NOW


def test_post_view_media_match_twitwi(fixtures: Path) -> None:
    payloads = orjson.loads((fixtures / POSTS).read_bytes())
    oracle = orjson.loads((fixtures / f"{TWITWI}/bluesky-normalized-posts.json").read_bytes())
    compared = with_media = 0
    for payload, group in zip(payloads, oracle, strict=True):
        expected = group[-1]  # twitwi lists referenced posts first, the post itself last
        try:
            n = normalise("bluesky-post", payload, NOW)
        except BadPost:
            continue
        assert expected["uri"] == n.id
        own = [m for m in n.media if not m.source_post_id and m.type != "thumbnail"]
        got = [_key(m.url) for m in own]
        want = [_key(u) for u in expected["media_urls"]]
        # twitwi writes "" for a video blob of type application/x-empty; the AppView still
        # serves a playlist for it, which is what we keep.
        got = [g for g, w in zip(got, want, strict=False) if w] + got[len(want) :]
        assert got == [w for w in want if w], n.id
        compared += 1
        with_media += bool(own)
    assert compared == 122
    assert with_media == 44  # as many posts as twitwi finds media in


def test_quoted_media_are_credited_to_the_quoted_post(fixtures: Path) -> None:
    payloads = orjson.loads((fixtures / POSTS).read_bytes())
    oracle = orjson.loads((fixtures / f"{TWITWI}/bluesky-normalized-posts.json").read_bytes())
    checked = 0
    for payload, group in zip(payloads, oracle, strict=True):
        try:
            n = normalise("bluesky-post", payload, NOW)
        except BadPost:
            continue
        quoted_uri = group[-1].get("quoted_uri")
        for m in n.media:
            if m.source_post_id:  # only ever the directly quoted post
                assert m.source_post_id == quoted_uri == n.post["referenced_tweet_id"]
                assert m.row()["source_post_id"] == quoted_uri
        referenced = {p["uri"]: p for p in group[:-1]}
        want = [_key(u) for u in referenced.get(quoted_uri, {}).get("media_urls", [])]
        if want:
            got = [
                _key(m.url)
                for m in n.media
                if m.source_post_id == quoted_uri and m.type != "thumbnail"
            ]
            assert got == want, n.id
            checked += 1
    assert checked == 8


def test_view_media_shapes(fixtures: Path) -> None:
    kinds: Counter[str] = Counter()
    for r in _posts(fixtures / POSTS):
        try:
            n = normalise(r.format, r.payload, NOW)
        except BadPost:
            continue
        for m in n.media:
            kinds[m.type] += 1
            if m.type == "video":
                assert m.url.startswith("https://video.bsky.app/watch/did%3A")
                assert m.url.endswith("/playlist.m3u8")
                assert any(
                    a.endswith("thumbnail.jpg") or "cdn.bsky.app" in a for a in m.alternatives
                )
            elif m.type == "photo" and "cdn.bsky.app" in m.url:
                assert "/feed_fullsize/" in m.url and m.media_key in m.url
                assert "/feed_thumbnail/" in m.alternatives[0]
            elif m.type == "gif":
                assert m.url.startswith("https://media.tenor.com/")
                assert m.alternatives and "feed_thumbnail" in m.alternatives[0]
            elif m.type == "thumbnail":
                assert "/feed_thumbnail/" in m.url
    assert kinds["video"] >= 10 and kinds["gif"] >= 5 and kinds["photo"] >= 40
    assert kinds["thumbnail"] > 0
    assert set(kinds) <= {"photo", "video", "gif", "thumbnail"}


def _by_embed_type(fixtures: Path) -> dict[str | None, list[Normalised]]:
    found: dict[str | None, list[Normalised]] = {}
    for r in _posts(fixtures / POSTS):
        view = r.payload.get("post", r.payload)
        embed = view["record"].get("embed")
        if isinstance(embed, dict) and "embed" not in view:
            try:
                n = normalise(r.format, r.payload, NOW)
            except BadPost:
                continue
            found.setdefault(embed.get("$type"), []).append(n)
    return found


def test_odd_third_party_embeds_never_crash(fixtures: Path) -> None:
    found = _by_embed_type(fixtures)
    # No media we could address: ignored.
    for odd in (
        "app.bsky.embed.file",
        "community.lexicon.embed.geo",
        "dev.chomu.embed.secret",
        "app.bsky.embed.links",
        "ar.cabildoabierto.embed.selectionQuote",
        "N/A",
    ):
        assert found[odd] and all(not n.media for n in found[odd]), odd
    # Blob refs in odd places: URLs built like the AppView's.
    (plain_cid,) = found["app.bsky.embed.image"]
    assert plain_cid.media[0].url.startswith("https://cdn.bsky.app/img/feed_fullsize/plain/")
    (videos,) = found["app.bsky.embed.videos"]
    assert videos.media[0].type == "video" and "did%3Aplc%3A" in videos.media[0].url
    media_videos = found["app.bsky.embed.media"]
    assert len(media_videos) == 2 and all(n.media[0].type == "video" for n in media_videos)
    # viewImages hold a plain http URL.
    assert all(
        n.media[0].url.startswith("https://img.projektn.sk/")
        for n in found["app.bsky.embed.viewImages"]
    )


def test_tap_records_match_twitwi_exactly(fixtures: Path) -> None:
    records = _read(fixtures / TAP)
    assert len(records) == 14
    assert _all_of(records, RawPost) and all(r.format == "bluesky-record" for r in records)
    oracle = orjson.loads((fixtures / f"{TWITWI}/bluesky-normalized-tap-posts.json").read_bytes())
    with_images = 0
    for r, expected in zip(records, oracle, strict=True):
        assert r.id == expected["uri"]
        assert r.payload["did"] == expected["user_did"]
        n = normalise(r.format, r.payload, NOW)
        _check_row(n)
        assert [m.url for m in n.media] == expected["media_urls"]
        assert sorted(n.post["hashtags"].split("|")) == sorted(expected["hashtags"] or [""])
        assert n.user is None and n.post["author_id"] == expected["user_did"]
        assert n.post["retrieved_at"] == NOW  # Tap events carry no clock of their own
        with_images += bool(n.media)
    assert with_images == 8


def test_jetstream_events(fixtures: Path) -> None:
    records = _read(fixtures / JETSTREAM)
    assert len(records) == 152
    posts = [r for r in records if isinstance(r, RawPost)]
    controls = Counter(r.kind for r in records if isinstance(r, Control))
    assert not [r for r in records if isinstance(r, DeadLetter)]
    assert len(posts) == 17 and len({p.id for p in posts}) == 17
    assert controls == {
        "app.bsky.feed.like": 105,
        "app.bsky.feed.repost": 15,
        "app.bsky.graph.follow": 6,
        "delete": 4,  # 3 unfollows, 1 post deletion
        "app.bsky.graph.block": 1,
        "fm.teal.alpha.actor.status": 1,
        "app.bsky.actor.status": 1,
        "identity": 1,
        "account": 1,
    }
    types: Counter[str] = Counter()
    for r in posts:
        commit = r.payload["commit"]
        assert r.id == f"at://{r.payload['did']}/app.bsky.feed.post/{commit['rkey']}"
        n = normalise(r.format, r.payload, NOW)
        _check_row(n)
        # Jetstream's time_us is the archive's clock, preferred over the dataflow's.
        assert n.post["retrieved_at"].startswith("2026-07-04T14:38")
        for m in n.media:
            types[m.type] += 1
            if m.type == "photo":
                cid = m.media_key
                assert m.url == (
                    f"https://cdn.bsky.app/img/feed_fullsize/plain/{r.payload['did']}/{cid}@jpeg"
                )
    assert types == {"photo": 2, "thumbnail": 2, "gif": 1}  # the gif is a Klipy picker link


def test_profiles_are_counted_not_posted(fixtures: Path) -> None:
    records = _read(fixtures / PROFILES)
    assert [type(r) for r in records] == [Control] * 5
    assert _all_of(records, Control)
    assert {r.kind for r in records} == {"profile"}


def test_references_and_threads(fixtures: Path) -> None:
    rows = []
    for r in _posts(fixtures / POSTS):
        with contextlib.suppress(BadPost):
            rows.append(normalise(r.format, r.payload, NOW).post)
    quotes = [p for p in rows if p["reference_type"] == "quoted"]
    replies = [p for p in rows if p["reference_type"] == "replied_to"]
    assert quotes and replies
    assert all(p["referenced_tweet_id"].startswith("at://") for p in quotes + replies)
    assert all(p["conversation_id"].startswith("at://") for p in replies)
    assert all(p["conversation_id"] == p["id"] for p in rows if not p["reference_type"])
    tagged = [p for p in rows if p["hashtags"]]
    assert tagged and all(p["hashtags"] == p["hashtags"].lower() for p in tagged)
    assert all("#" not in p["hashtags"] for p in tagged)


def test_wrapped_api_responses(fixtures: Path, tmp_path: Path) -> None:
    payloads = orjson.loads((fixtures / POSTS).read_bytes())
    path = tmp_path / "getPosts.json"
    path.write_bytes(orjson.dumps({"posts": payloads[:3]}))
    assert detect_format(path) == "bluesky"
    records = _read(path)
    assert _all_of(records, RawPost)
    assert [r.id for r in records] == [p["uri"] for p in payloads[:3]]


def test_hostile_lines_become_dead_letters(fixtures: Path, tmp_path: Path) -> None:
    lines = (fixtures / JETSTREAM).read_bytes().splitlines()
    post_line = next(line for line in lines if b'"app.bsky.feed.post"' in line)
    no_rkey = orjson.loads(post_line)
    del no_rkey["commit"]["rkey"]
    path = tmp_path / "jetstream.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                post_line,
                b"{not json",
                orjson.dumps(no_rkey),
                b'{"hello": "world"}',
                b"[1, 2, 3]",
                post_line[: len(post_line) // 2],  # truncated last line
            ]
        )
        + b"\n"
    )
    records = _read(path)
    assert len(records) == 6
    assert isinstance(records[0], RawPost)
    dead = records[1:]
    assert _all_of(dead, DeadLetter)
    assert [d.source for d in dead] == [f"{path}:{i}" for i in range(2, 7)]
    assert dead[0].reason.startswith("invalid JSON line") and dead[0].raw == b"{not json"
    assert "rkey" in dead[1].reason
    assert "not a Bluesky" in dead[2].reason and "not a Bluesky" in dead[3].reason
    assert dead[4].reason.startswith("invalid JSON line") and dead[4].format == "bluesky"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda v: v.pop("uri"), "uri"),
        (lambda v: v.pop("record"), "no record"),
        (lambda v: v["record"].pop("createdAt"), "missing record.createdAt"),
        (lambda v: v["record"].update(createdAt="1999-12-31T23:00:00Z"), "absurd"),
        (lambda v: v["record"].update(createdAt="2101-01-01T00:00:00Z"), "absurd"),
        (lambda v: v["record"].update(createdAt="yesterday"), "unparseable"),
    ],
)
def test_bad_views_raise_badpost(fixtures: Path, change, reason: str) -> None:
    view = orjson.loads((fixtures / POSTS).read_bytes())[0]
    change(view)
    with pytest.raises(BadPost, match=reason):
        normalise("bluesky-post", view, NOW)


def test_bad_records_raise_badpost(fixtures: Path) -> None:
    event = orjson.loads((fixtures / TAP).read_bytes())[0]
    event["record"]["collection"] = "app.bsky.feed.like"
    with pytest.raises(BadPost, match="not a post"):
        normalise("bluesky-record", event, NOW)
    with pytest.raises(BadPost, match="did or rkey"):
        normalise("bluesky-record", {"kind": "commit", "commit": {}}, NOW)


def test_sniffers_claim_only_their_own_files(fixtures: Path) -> None:
    """Registry order must not matter: each of these readers refuses everything else."""
    from shoal.formats import _sniff, bluesky, mastodon, tiktok_scraper, zeeschuimer

    owners = {
        "bluesky": bluesky,
        "mastodon": mastodon,
        "tiktok-scraper": tiktok_scraper,
        "zeeschuimer": zeeschuimer,
    }
    expected = {
        POSTS: "bluesky",
        TAP: "bluesky",
        PROFILES: "bluesky",
        JETSTREAM: "bluesky",
    }
    checked = 0
    files = [p for p in fixtures.rglob("*") if p.is_file() and p.name != "SOURCES.md"]
    for path in sorted(fixtures.rglob("*")):
        if not path.is_file() or path.name == "SOURCES.md":
            continue
        rel = str(path.relative_to(fixtures))
        kind = rel.split("/", 1)[0]
        if rel in expected:
            want = {expected[rel]}
        elif kind == "mastodon":
            want = {"mastodon"}
        elif kind in ("instagram", "other") or rel.endswith((".ndjson", "tiktok.json")):
            want = {"zeeschuimer"}
        elif kind == "tiktok":
            want = {"tiktok-scraper"}
        else:  # Twitter payloads, CSV exports, twitwi outputs
            want = set()
        head = _sniff.first_value(path)
        claimed = {name for name, mod in owners.items() if mod.sniff(head)}
        assert claimed == want, rel
        checked += 1
    # Every payload in the tree was looked at (the tree grows as fixtures are added).
    assert checked == len(files) >= 66


@pytest.mark.parametrize(
    "name",
    [
        POSTS,
        TAP,
        JETSTREAM,
        "mastodon/sys1yagi__mastodon4j/mastodon4j/src/test/assets/tag.json",
        "tiktok/jorisheijkant__zeeschuimer-decoder/test-files/tiktok-test.lines-001-064.ndjson",
        "tiktok/drawrowfly__tiktok-scraper/thebigbradwolf_1609948309033.json",
        "instagram/craigfahner__zeeschuimer-workshop/old_ndjson/old_posts.lines-001-030.ndjson",
    ],
)
def test_corrupted_payloads_only_ever_raise_badpost(fixtures: Path, name: str) -> None:
    """Any field replaced by any JSON type: a row or a BadPost, never another exception."""
    import random

    junk: list[Any] = [None, 0, -1, 1e300, "", "x", [], {}, [None], [{}], {"a": 1}, True, 10**30]
    rng = random.Random(name)
    posts = [r for r in read_file(fixtures / name) if isinstance(r, RawPost)]
    tried = 0
    for record in posts[:12]:
        blob = orjson.dumps(record.payload)
        for _ in range(40):
            payload = orjson.loads(blob)
            for _ in range(rng.randint(1, 3)):
                parent, key = payload, rng.choice(list(payload))
                for _ in range(rng.randint(0, 4)):  # walk down a few levels
                    child = parent[key]
                    keys = (
                        list(child)
                        if isinstance(child, dict)
                        else range(len(child) if isinstance(child, list) else 0)
                    )
                    if not keys:
                        break
                    parent, key = child, rng.choice(list(keys))
                parent[key] = rng.choice(junk)
            with contextlib.suppress(BadPost):
                normalise(record.format, payload, NOW)
            tried += 1
    assert tried == 40 * min(12, len(posts))
