"""What the processor keeps in memory is bounded by construction, not by the stream's size.

``benchmarks/memory.py`` prints the processor's RSS with a million media URLs pending and
over a long soak; these tests pin the bookkeeping those figures rest on, by the sizes of
the structures themselves (never by a timing or an RSS reading).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from connectors.collect.files import retrieval_time
from connectors.kafka.publisher import post_headers
from connectors.kafka.source import Message
from flows.config import FlowConfig
from flows.seal import SealLogic
from flows.stage import ChunkFact, StageLogic
from shoal import chunks
from shoal.demo import DemoSpec, demo_pages
from shoal.formats import read_file
from shoal.hours import HOUR
from shoal.model import RawPost
from shoal.options import FlowSettings, MediaSettings


def _messages(path: Path, collector: str, first_offset: int = 0) -> list[Message]:
    """A file's posts as one partition hands them to the stage."""
    out: list[Message] = []
    for rec in read_file(path):
        assert isinstance(rec, RawPost)
        headers = post_headers(rec.format, collector,
                               retrieval_time(rec, "2021-05-11T00:00:00+00:00"), rec.source)
        out.append(Message(0, first_offset + len(out), rec.key.encode(),
                           orjson.dumps(rec.payload), tuple(headers), 0))
    return out


def _chunks(data_dir: Path) -> set[Path]:
    return set(data_dir.rglob("*.jsonl"))


def _lines(paths: set[Path]) -> set[tuple[str, str, str]]:
    """(kind, post id, collector) of every line in the chunks ``paths``."""
    out = set()
    for chunk in paths:
        for line in chunk.read_bytes().splitlines():
            rec = orjson.loads(line)
            out.add((rec["k"], rec.get("id") or rec.get("r", {}).get("id", ""), rec["c"]))
    return out


def test_the_stage_remembers_a_bounded_number_of_posts(tmp_path: Path) -> None:
    """However many posts its open hours hold, the stage remembers at most its cap (plus the
    quarter it trims at once), the most recent ones: a copy of a recent post is still told
    apart from a new one (a "seen" line), a copy of one forgotten is written in full."""
    source = tmp_path / "posts.jsonl"
    spec = DemoSpec(posts=1200, hours=2, seed=3, retweet_share=0.0, media_share=0.0)
    source.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in demo_pages(spec)))
    msgs = _messages(source, "first")
    assert len(msgs) == 1200
    cap = 300
    cfg = FlowConfig(data_dir=tmp_path / "data", brokers="unused:9092", seen_posts=cap,
                     flow=FlowSettings(lateness=3600.0), media=MediaSettings(enabled=False))
    stage = StageLogic(cfg, None)
    peak = 0
    for n in range(0, len(msgs), 40):
        stage.on_batch([msgs[n:n + 40]])
        held = sum(map(len, stage.seen.values()))
        assert held == stage.remembered
        peak = max(peak, held)
    assert cap <= peak <= cap + cap // 4, peak
    # Every hour is still open (lateness of an hour): only the cap made it forget.
    assert stage.seen

    stage.snapshot()  # the first collector's lines on disk
    before = _chunks(cfg.data_dir)

    # The same posts again from another collector: the newest are remembered ("seen" lines),
    # the oldest were forgotten (written in full, which the merge makes the same files of).
    again = _messages(source, "second", first_offset=len(msgs))
    newest, oldest = again[-1], again[0]
    stage.on_batch([[newest, oldest]])
    stage.on_eof()
    written = _lines(_chunks(cfg.data_dir) - before)
    ids = {n: orjson.loads(m.value or b"")["id"] for n, m in (("new", newest), ("old", oldest))}
    assert written == {(chunks.SEEN, ids["new"], "second"), (chunks.POST, ids["old"], "second")}
    assert sum(map(len, stage.seen.values())) <= cap + cap // 4


def test_the_sealer_forgets_when_it_sealed_hours_past_the_reseal_interval(
    tmp_path: Path,
) -> None:
    """The re-seal rate limit remembers when each hour was sealed; hours sealed longer ago
    than the interval are forgotten, so a processor running for months keeps a bounded map.
    Within the interval an hour is still not sealed again."""
    cfg = FlowConfig(data_dir=tmp_path / "data", brokers="unused:9092", partitions=1,
                     flow=FlowSettings(lateness=0.0, seal_processes=0),
                     media=MediaSettings(enabled=False), reseal_interval=0.0)
    seal = SealLogic(cfg, None)
    base = 1_620_000_000 // HOUR * HOUR
    peak = 0
    for n in range(600):  # 600 hours, each done as soon as the next one starts
        hour = base + n * HOUR
        seal.on_batch([(0, 1, ChunkFact(0, hour + HOUR, (("twitter", hour),)))])
        peak = max(peak, len(seal.last_sealed))
    assert len(seal.open) == 0  # every hour went to the sealer
    assert peak <= 65, peak

    # A long interval: an hour sealed a moment ago is remembered, and not sealed again.
    cfg.reseal_interval = 3600.0
    hour = base + 600 * HOUR
    seal.on_batch([(0, 1, ChunkFact(0, hour + HOUR, (("twitter", hour),)))])
    assert ("twitter", hour) in seal.last_sealed
    seal.on_batch([(0, 1, ChunkFact(0, hour + HOUR, (("twitter", hour),)))])
    assert ("twitter", hour) in seal.open  # waits for the interval
    seal.on_eof()
