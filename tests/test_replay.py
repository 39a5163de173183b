"""Replays: byte-identical outputs, and --from-time on a broker whose time index lies."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.offsets import OffsetFinder, parse_offsets
from connectors.kafka.publisher import POSTS_TOPIC, ensure_topics
from shoal.app.cli import main
from tests.pipeline import all_ids, digests, publish, run_flow

V2 = "twitter-v2/DocNow__twarc-csv/test-data"


def page_ids(path: Path) -> set[str]:
    return {t["id"] for line in path.read_text().splitlines() for t in json.loads(line)["data"]}


def test_replay_is_byte_identical_and_from_time_finds_its_offsets(
    fixtures: Path, tmp_path: Path
) -> None:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 3)
        publish(b.bootstrap, [("x", fixtures / V2 / "brexit.jsonl"),
                              ("y", fixtures / V2 / "kpop.jsonl")])
        time.sleep(1.2)
        middle = datetime.now(UTC)
        time.sleep(0.2)
        publish(b.bootstrap, [("x", fixtures / V2 / "withheld.jsonl")])

        original = tmp_path / "original"
        run_flow(b.bootstrap, original, recovery=True)
        argv = ["replay", "--no-media", "--brokers", b.bootstrap, "--idle-exit", "1",
                "--epoch-seconds", "0.5"]
        assert main([*argv, "--data-dir", str(tmp_path / "replay")]) == 0
        assert main([*argv, "--data-dir", str(tmp_path / "replay2")]) == 0

        # The embedded broker's time index answers offset 0 for any time; the finder must
        # notice and search instead.
        finder = OffsetFinder(b.bootstrap, POSTS_TOPIC)
        wanted = finder.offsets_for_time(middle)
        ends = finder.end_offsets()
        finder.close()
        assert any(0 < wanted[p] < ends[p] for p in wanted)
        assert main([*argv, "--data-dir", str(tmp_path / "late"),
                     "--from-time", middle.isoformat()]) == 0
        assert main([*argv, "--data-dir", str(tmp_path / "early"),
                     "--until-time", middle.isoformat()]) == 0
        spec = ",".join(f"{p}:{o}" for p, o in wanted.items())
        assert main([*argv, "--data-dir", str(tmp_path / "offsets"), "--from-offset", spec]) == 0

    a, r, r2 = digests(original), digests(tmp_path / "replay"), digests(tmp_path / "replay2")
    assert len(a) > 20
    assert a == r == r2
    withheld = page_ids(fixtures / V2 / "withheld.jsonl")
    first = page_ids(fixtures / V2 / "brexit.jsonl") | page_ids(fixtures / V2 / "kpop.jsonl")
    assert set(all_ids(tmp_path / "late")) == withheld
    assert set(all_ids(tmp_path / "offsets")) == withheld
    assert set(all_ids(tmp_path / "early")) == first


def test_parse_offsets_rejects_garbage() -> None:
    assert parse_offsets("0:5,2:7") == {0: 5, 2: 7}
    for bad in ("0", "a:1", "1:-3", "0:1;1:2"):
        try:
            parse_offsets(bad)
        except ValueError as exc:
            assert "PARTITION:OFFSET" in str(exc)
        else:
            raise AssertionError(bad)


def test_resume_after_restart_does_not_reread(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        publish(b.bootstrap, [("x", fixtures / V2 / "brexit.jsonl")])
        run_flow(b.bootstrap, out, recovery=True)
        before = {p: p.stat().st_mtime_ns for p in (out / "twitter").rglob("*.xz")}
        run_flow(b.bootstrap, out, recovery=True)
        after = {p: p.stat().st_mtime_ns for p in (out / "twitter").rglob("*.xz")}
    assert before == after  # nothing re-read, nothing re-sealed
