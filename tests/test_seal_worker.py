"""Sealing in a child process changes where the work runs, never what is written."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import time
from pathlib import Path

import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from connectors.store.disk import DiskTrouble
from connectors.store.seal_worker import SealWorker
from shoal.demo import DemoSpec, write_demo_files
from shoal.errors import chain
from shoal.merge import HourSummary
from tests.pipeline import all_ids, digests, publish, run_flow


def test_sealing_in_one_or_two_helpers_or_inline_writes_identical_files(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=6000, hours=6, seed=11))
    summaries: dict[int, list[HourSummary]] = {2: [], 1: [], 0: []}
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(files.items()))
        for n in summaries:
            run_flow(b.bootstrap, tmp_path / f"seal={n}", seal_processes=n,
                     lateness=60, on_sealed=summaries[n].append)
    two, one, inline = (digests(tmp_path / f"seal={n}") for n in (2, 1, 0))
    assert len(inline) > 6 * 4  # every hour's four files, day reports, Parquet
    assert two == inline
    assert one == inline
    assert len(set(all_ids(tmp_path / "seal=2"))) > 5000
    # The parent learns of every seal the children did, with the same counts.
    def facts(n: int) -> list[tuple[str, int, int, list[tuple[str, int]]]]:
        return sorted((s.platform, s.start, s.total, sorted(s.collectors.items()))
                      for s in summaries[n])

    assert facts(2) == facts(0)
    assert len(facts(2)) >= 6


def test_a_seal_failing_in_the_child_stops_the_parent(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=500, hours=2, seed=5))
    data = tmp_path / "data"
    data.mkdir()
    (data / "twitter").write_text("a file where the platform's folder belongs")
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        publish(b.bootstrap, list(files.items()))
        with pytest.raises(Exception) as info:
            run_flow(b.bootstrap, data)
    causes = chain(info.value)
    assert any(isinstance(e, NotADirectoryError | FileExistsError) for e in causes), causes
    assert not list(data.rglob("*_IDs.txt.xz"))


def test_disk_trouble_crosses_the_process_boundary_intact() -> None:
    trouble = DiskTrouble("/data/twitter", errno.ENOSPC, "No space left on device")
    back = pickle.loads(pickle.dumps(trouble))
    assert isinstance(back, DiskTrouble)
    assert str(back) == str(trouble)
    assert back.errno == errno.ENOSPC
    assert "free space" in str(back)


def test_a_lost_helper_is_replaced_and_the_seal_done_again(tmp_path: Path) -> None:
    """A helper killed from outside (OOM killer, an operator) does not stop the run: new
    helpers seal what was under way again (sealing is idempotent and staged)."""
    worker = SealWorker(tmp_path, "UTC", processes=1)
    try:
        worker.done(wait=False)
        deadline = time.monotonic() + 30
        while not worker._pool._processes:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for pid in list(worker._pool._processes):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        worker.submit("twitter", 0)
        assert worker.done(wait=True) == [(("twitter", 0), None)]  # no chunks: nothing to seal
        assert worker.restarts == 1
    finally:
        worker.close()


def _chunks_of_two_hours(data: Path) -> list[int]:
    """Chunk files for the two busiest hours of a small demo stream; their starts."""
    import orjson

    from connectors.store.chunks import write_chunk
    from shoal import chunks
    from shoal.demo import demo_pages
    from shoal.formats.twitter_v2 import read
    from shoal.hours import hour_start, zone
    from shoal.model import RawPost
    from shoal.normalise import normalise

    pages = data.parent / "pages.jsonl"
    pages.write_bytes(b"".join(orjson.dumps(p) + b"\n"
                               for p in demo_pages(DemoSpec(posts=400, hours=2, seed=3))))
    by_hour: dict[int, list[bytes]] = {}
    for post in read(pages):
        if not isinstance(post, RawPost):
            continue
        raw = post.payload if isinstance(post.payload, bytes) else orjson.dumps(post.payload)
        norm = normalise("twitter-v2", orjson.loads(raw), "2021-05-11T20:00:00+00:00")
        body = chunks.post_body(norm.post, user=norm.user, media=[m.row() for m in norm.media],
                                fmt="twitter-v2", retrieved="2021-05-11T20:00:00+00:00")
        start = hour_start(norm.created_at, zone("UTC"))
        by_hour.setdefault(start, []).append(chunks.line_of_body("c1", body, raw=raw))
    starts = sorted(by_hour)[:2]
    for start in starts:
        write_chunk(data, "twitter", start, "p0", by_hour[start])
    return starts


def test_a_pool_broken_under_two_seals_restarts_once_and_does_not_wait_on_them(
        tmp_path: Path) -> None:
    """Both seals under way break with the pool when one helper dies. ``done`` must start
    them again and return, not wait on one of them there: the dataflow calls it between
    batches. Here both seals wait for the reports lock the test holds, so a ``done`` that
    waited on a seal would wait until the lock is let go."""
    import threading

    from connectors.store.reports import reports_lock

    data = tmp_path / "data"
    data.mkdir()
    starts = _chunks_of_two_hours(data)
    worker = SealWorker(data, "UTC", processes=2)
    returned: list[list[tuple[tuple[str, int], HourSummary | None]]] = []
    try:
        with reports_lock(data):
            for start in starts:
                worker.submit("twitter", start)
            deadline = time.monotonic() + 60
            while len(worker._pool._processes) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(1.0)  # both seals are taken by the helpers and wait for the lock
            assert not any(f.done() for f in worker._running.values())
            os.kill(next(iter(worker._pool._processes)), signal.SIGKILL)
            while not all(f.done() for f in worker._running.values()):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            caller = threading.Thread(target=lambda: returned.append(worker.done(wait=False)))
            caller.start()
            caller.join(timeout=20)
            assert not caller.is_alive(), "done() waited on a seal the new helpers started"
            assert returned == [[]]
            assert worker.restarts == 1
            assert worker.in_flight() == {("twitter", s) for s in starts}
        finished = worker.done(wait=True)
        assert sorted(k for k, _ in finished) == [("twitter", s) for s in starts]
        assert all(s is not None and s.total > 0 for _, s in finished)
        assert worker.restarts == 1
    finally:
        worker.close()
