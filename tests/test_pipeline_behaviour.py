"""Dedupe across collectors, the day report, other platforms, hours, late data, dead letters."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import orjson

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import DEADLETTER_TOPIC, Publisher, ensure_topics
from connectors.store.deadletters import read_deadletters
from shoal.model import RawPost
from tests.pipeline import (
    all_ids,
    all_rows,
    pipeline,
    publish,
    read_xz_lines,
    report_lines,
    run_flow,
)

V2 = "twitter-v2/DocNow__twarc-csv/test-data"


def _page_ids(line: bytes) -> set[str]:
    return {t["id"] for t in json.loads(line)["data"]}


def test_two_collectors_overlapping_slices(fixtures: Path, tmp_path: Path) -> None:
    lines = (fixtures / V2 / "withheld.jsonl").read_bytes().splitlines(keepends=True)
    a_file, b_file = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a_file.write_bytes(b"".join(lines[0:3]))
    b_file.write_bytes(b"".join(lines[1:5]))
    a_ids = set().union(*(_page_ids(x) for x in lines[0:3]))
    b_ids = set().union(*(_page_ids(x) for x in lines[1:5]))
    out = tmp_path / "out"
    pipeline(out, [("server-a", a_file), ("server-b", b_file)])

    ids = all_ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == a_ids | b_ids
    got_a = got_b = total = diff = 0
    for report in (out / "twitter").glob("*/*_report.txt"):
        rows = [r.split("\t") for r in report_lines(report)]
        header = rows[0]
        assert header[1:3] == ["server-a", "server-b"]
        for r in rows[1:]:
            rec = dict(zip(header, r, strict=True))
            got_a += int(rec["server-a"])
            got_b += int(rec["server-b"])
            total += int(rec["total"])
            diff += int(rec["diff"])
    assert (got_a, got_b, total) == (len(a_ids), len(b_ids), len(a_ids | b_ids))
    assert diff == len(a_ids ^ b_ids)
    collectors = {r["id"]: r["collectors"] for r in all_rows(out)}
    for pid in a_ids & b_ids:
        assert collectors[pid] == "server-a|server-b"


def test_other_platforms_use_the_same_layout(fixtures: Path, tmp_path: Path) -> None:
    files = [
        ("bsky", fixtures / "bluesky/medialab__twitwi/test/resources/bluesky-posts.json"),
        ("masto", fixtures / "mastodon/sys1yagi__mastodon4j/mastodon4j/src/test/assets/tag.json"),
        ("tt", fixtures / "tiktok/jorisheijkant__zeeschuimer-decoder/test-files/"
                          "tiktok-test.lines-001-064.ndjson"),
        ("ig", fixtures / "instagram/craigfahner__zeeschuimer-workshop/posts.ndjson"),
    ]
    out = tmp_path / "out"
    pipeline(out, files)
    tiktok = all_ids(out, "tiktok")
    assert len(tiktok) == 64 == len(set(tiktok))
    insta = all_rows(out, "instagram")
    assert len(insta) == 23
    carousel = [r for r in insta if r["media_urls"].count("|") >= 1]
    assert carousel, "carousel children must be listed in media_urls"
    masto = all_rows(out, "mastodon")
    assert len(masto) == 20
    bsky = all_rows(out, "bluesky")
    assert bsky and all(r["id"].startswith("at://") for r in bsky)
    for platform in ("bluesky", "mastodon", "tiktok", "instagram"):
        assert list((out / platform).glob("*/*_posts.csv.xz")), platform
        assert list((out / platform).glob("*/*_report.txt")), platform


def _tweet(tid: int, created: str, text: str = "hello") -> RawPost:
    payload = {
        "id": str(tid), "text": text, "created_at": created, "author_id": "42",
        "author": {"id": "42", "username": "someone", "name": "Some One"},
    }
    return RawPost("twitter", str(tid), "twitter-v2", payload, "test")


def _send(brokers: str, collector: str, posts: list[RawPost]) -> None:
    pub = Publisher(brokers, collector)
    for p in posts:
        pub.post(p, "2021-10-31T12:00:00+00:00")
    pub.close()


def test_berlin_hours_around_the_autumn_change(tmp_path: Path) -> None:
    # 2021-10-31 in Berlin: 02:00-03:00 happens twice (00:00 UTC in CEST, 01:00 UTC in CET).
    posts = [
        _tweet(1, "2021-10-30T23:30:00.000Z"),  # 01:30 CEST
        _tweet(2, "2021-10-31T00:30:00.000Z"),  # 02:30 CEST (first 02 hour)
        _tweet(3, "2021-10-31T01:30:00.000Z"),  # 02:30 CET (second 02 hour)
        _tweet(4, "2021-10-31T02:30:00.000Z"),  # 03:30 CET
        _tweet(5, "2021-10-30T21:59:59.000Z"),  # 23:59:59 CEST on the 30th
    ]
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        _send(b.bootstrap, "c", posts)
        run_flow(b.bootstrap, out, tz="Europe/Berlin")
    day = out / "twitter" / "2021-10-31"
    names = sorted(p.name for p in day.glob("*_IDs.txt.xz"))
    assert names == [
        "2021-10-31_01_IDs.txt.xz", "2021-10-31_02_IDs.txt.xz",
        "2021-10-31_02b_IDs.txt.xz", "2021-10-31_03_IDs.txt.xz",
    ]
    assert read_xz_lines(day / "2021-10-31_02_IDs.txt.xz") == ["2"]
    assert read_xz_lines(day / "2021-10-31_02b_IDs.txt.xz") == ["3"]
    assert read_xz_lines(out / "twitter/2021-10-30/2021-10-30_23_IDs.txt.xz") == ["5"]
    # Timestamps inside stay UTC.
    rows = all_rows(out)
    assert {r["id"]: r["created_at"] for r in rows}["3"] == "2021-10-31T01:30:00+00:00"
    report = report_lines(day / "2021-10-31_report.txt")
    assert [line.split("\t")[0] for line in report[1:]] == ["01", "02", "02b", "03"]


def test_late_post_reseals_its_hour(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 1)
        _send(b.bootstrap, "c", [_tweet(10, "2021-05-01T10:10:00.000Z"),
                                 _tweet(11, "2021-05-01T13:00:00.000Z")])
        run_flow(b.bootstrap, out, recovery=True, lateness=60)
        ids_file = out / "twitter/2021-05-01/2021-05-01_10_IDs.txt.xz"
        assert read_xz_lines(ids_file) == ["10"]
        # A straggler for 10:00 plus a copy of a known post, long after the hour was sealed.
        _send(b.bootstrap, "c", [_tweet(9, "2021-05-01T10:59:00.000Z"),
                                 _tweet(10, "2021-05-01T10:10:00.000Z")])
        run_flow(b.bootstrap, out, recovery=True, lateness=60)
    assert read_xz_lines(ids_file) == ["9", "10"]
    report = report_lines(out / "twitter/2021-05-01/2021-05-01_report.txt")
    rows = {r.split("\t")[0]: r.split("\t") for r in report[1:]}
    assert rows["10"][-1] == "1"  # one late post, the duplicate is not late
    assert rows["13"][-1] == "0"


def test_bad_messages_become_dead_letters(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 1)
        publish(b.bootstrap, [("c", fixtures / V2 / "streaming_output_with_error.jsonl")])
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=b.bootstrap)
        hdr = [("format", b"twitter-v2"), ("collector", b"c")]
        prod.send("shoal.posts", key=b"twitter:1", value=b"{not json", headers=hdr)
        prod.send("shoal.posts", key=b"twitter:2", value=b'{"id": "abc"}', headers=hdr)
        prod.send("shoal.posts", key=b"x:3", value=b'{"id": "3"}',
                  headers=[("format", b"martian"), ("collector", b"c")])
        prod.flush()
        run_flow(b.bootstrap, out)
        from kafka import KafkaConsumer

        cons = KafkaConsumer(DEADLETTER_TOPIC, bootstrap_servers=b.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
        topic_letters = [orjson.loads(m.value) for m in cons]
    assert len(all_ids(out)) == 7
    files = list((out / "_deadletter").rglob("*_deadletter.jsonl.xz"))
    letters = [r for f in files for r in read_deadletters(f)]
    reasons = " / ".join(r["reason"] for r in letters)
    # The flow's three, and the collector's own (the truncated last line): every dead letter,
    # wherever it was found, reaches the disk (it used to stay on the topic only).
    assert len(letters) == 4, reasons
    assert "invalid JSON" in reasons and "martian" in reasons
    flow = [r for r in letters if r["source"].startswith("shoal.posts/0/")]
    assert len(flow) == 3
    (collector,) = [r for r in letters if r not in flow]
    assert collector["source"].endswith("streaming_output_with_error.jsonl:8")
    assert any("streaming_output_with_error.jsonl:8" in r["source"] for r in topic_letters)
    assert len(topic_letters) == 4
    raw = lzma.decompress(files[0].read_bytes())
    assert b"{not json" in raw
    # The day they arrived on reports them, by reason.
    report = files[0].parent / f"{files[0].parent.name}_report.txt"
    table = dict(line.split("\t") for line in report.read_text().splitlines()[1:])
    assert table["total"] == "4"
    assert table["invalid JSON"] == str(sum(r["reason"].startswith("invalid JSON")
                                            for r in letters)) != "0"


def test_a_post_created_after_its_retrieval_is_a_dead_letter_not_a_clock(
        tmp_path: Path) -> None:
    """One post dated 2090 (years up to 2099 pass) moved the partition's event time there:
    every post after it counted as late, and an hour of 2090 was opened."""
    posts = [_tweet(100 + i, f"2021-05-11T{10 + i // 12:02d}:{i % 12 * 5:02d}:00.000Z")
             for i in range(40)]
    posts.insert(3, _tweet(99, "2090-01-01T00:00:00.000Z"))
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 1)
        _send(b.bootstrap, "c", posts)  # retrieved 2021-10-31
        run_flow(b.bootstrap, out, lateness=60)
    assert sorted(map(int, all_ids(out))) == list(range(100, 140))
    report = report_lines(out / "twitter/2021-05-11/2021-05-11_report.txt")
    assert [r.split("\t")[-1] for r in report[1:]] == ["0"] * 4  # nothing late
    assert not (out / "twitter" / "2090-01-01").exists()
    letters = [r for f in (out / "_deadletter").rglob("*_deadletter.jsonl.xz")
               for r in read_deadletters(f)]
    (letter,) = letters
    assert str(letter["reason"]).startswith("created after it was retrieved")
