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


def test_a_host_with_nothing_left_is_forgotten_and_its_gap_kept(tmp_path: Path) -> None:
    """The fetch step holds a logic per host only while the host has work: a keyword image
    search meets thousands of hosts, each fetched once, and logics kept for ever would grow
    with them. A host's next URL, queued by a new logic a moment after the last one was
    dropped, still waits out the host's gap at the server (the gate outlives the logic)."""
    import time as clock

    from bytewax.operators import StatefulBatchLogic

    from connectors.fetch import engine
    from flows.media import FetchLogic, MediaJob
    from shoal.fetch import FetchConfig
    from tests.loopback_server import MediaServer, tightest_window

    server = MediaServer(latency=0.0).start()
    hosts = [f"h{i}.test" for i in range(6)]
    cfg = FetchConfig(domain_parallelism=1, throttle=0.4,
                      resolve=dict.fromkeys(hosts, "127.0.0.1"))

    def service() -> engine.FetchService:
        return engine.FetchService(tmp_path, cfg, max_pending=8)

    def job(host: str, n: int) -> MediaJob:
        return MediaJob("twitter", 0, {"post_id": f"{host}-{n}", "position": n, "type": "photo",
                                       "url": f"http://{host}:{server.port}/p/{host}-{n}.jpg"})

    def until_dropped(logic: FetchLogic) -> int:
        deadline = clock.monotonic() + 20
        facts = 0
        while clock.monotonic() < deadline:
            out, fate = logic.on_notify()
            facts += len(list(out))
            if fate == StatefulBatchLogic.DISCARD:
                return facts
            clock.sleep(0.02)
        raise AssertionError("the logic of a host with nothing left was kept")

    try:
        logics = {h: FetchLogic(tmp_path, cfg, None, service) for h in hosts}
        for h, logic in logics.items():
            logic.on_batch([job(h, 0), job(h, 1)])
        assert all(until_dropped(logic) for logic in logics.values())  # rows written first
        runtimes = list(engine._RUNTIMES.values())
        assert len(runtimes) == 1 and runtimes[0].users == 0  # no service left behind
        # A new logic for h0, at once: its URL waits out h0's gap all the same.
        again = FetchLogic(tmp_path, cfg, None, service)
        again.on_batch([job("h0.test", 2)])
        until_dropped(again)
    finally:
        engine.close_all()
        server.stop()
    media = [rec for chunk in _chunks(tmp_path)
             for rec in map(orjson.loads, chunk.read_bytes().splitlines())]
    assert len(media) == 2 * len(hosts) + 1, media
    assert all(r["r"]["sha256"] for r in media)
    starts = sorted(start for host, start, _end in server.log if host == "h0.test")
    assert len(starts) == 3
    assert tightest_window(starts, 0.4) <= 0.030, starts  # see tightest_window
