"""Kafka outages lose nothing: collectors spool to disk and replay in order; the flow waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker, free_port
from connectors.kafka.publisher import POSTS_TOPIC, Publisher, SpoolFull, ensure_topics
from shoal.demo import DemoSpec, write_demo_files
from shoal.formats import read_file
from shoal.model import RawPost
from tests.pipeline import all_ids, publish, run_flow

ROOT = Path(__file__).resolve().parents[1]
RETRIEVED = "2021-05-11T20:00:00+00:00"


def demo_streams(folder: Path, posts: int, seed: int = 5) -> dict[str, list[RawPost]]:
    files = write_demo_files(folder, DemoSpec(posts=posts, hours=3, seed=seed))
    return {
        name: [r for r in read_file(path) if isinstance(r, RawPost)]
        for name, path in files.items()
    }


def topic_messages(brokers: str, partitions: int = 4) -> list[tuple[int, str, str]]:
    """Every message of shoal.posts as (partition, collector, key), in offset order."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "outage-test",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(POSTS_TOPIC, p, 0) for p in range(partitions)])
    out: list[tuple[int, str, str]] = []
    at_end: set[int | None] = set()  # an error not tied to a partition reports None
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, "topic not read within 60s"
            for m in consumer.consume(2000, 1.0):
                if m.error():
                    at_end.add(m.partition())
                    continue
                partition, key = m.partition(), m.key()
                at_end.discard(partition)
                collector = dict(m.headers() or [])["collector"]
                assert partition is not None and isinstance(collector, bytes) and key is not None
                out.append((partition, collector.decode(), key.decode()))
    finally:
        consumer.close()
    return out


def assert_exactly_once_in_order(
    got: list[tuple[int, str, str]], sent: dict[str, list[str]]
) -> None:
    """Each collector's keys are in the topic once each, in posting order per partition."""
    for collector, keys in sent.items():
        assert len(set(keys)) == len(keys), "the test stream must not repeat keys"
        mine = [(p, k) for p, c, k in got if c == collector]
        counts = Counter(k for _p, k in mine)
        missing = set(keys) - set(counts)
        assert not missing, f"{collector}: {len(missing)} posts lost"
        twice = {k: n for k, n in counts.items() if n > 1}
        assert not twice, f"{collector}: {len(twice)} posts duplicated"
        assert set(counts) == set(keys)
        rank = {k: i for i, k in enumerate(keys)}
        for part in {p for p, _k in mine}:
            order = [rank[k] for p, k in mine if p == part]
            assert order == sorted(order), f"{collector}: partition {part} reordered"


def spool_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.seg") if p.name != "rejected.seg"]


def test_broker_paused_30s_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    streams = demo_streams(tmp_path / "demo", 3000)
    pause_at, pause_for, spread = 5.0, 30.0, 40.0
    seen_spooling: dict[str, bool] = {}
    failures: list[BaseException] = []
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        pubs = {name: Publisher(broker.bootstrap, name, spool_dir=tmp_path / "spool" / name)
                for name in streams}

        def collect(name: str) -> None:
            # A live collector: posts trickle in at a steady pace before, during and after.
            pub, posts = pubs[name], streams[name]
            t0 = time.monotonic()
            try:
                for i, post in enumerate(posts):
                    time.sleep(max(0.0, t0 + spread * i / len(posts) - time.monotonic()))
                    pub.post(post, RETRIEVED)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=collect, args=(n,), daemon=True) for n in streams]
        for t in threads:
            t.start()
        time.sleep(pause_at)
        broker.pause()
        try:
            time.sleep(pause_for - 5)
            for name, pub in pubs.items():
                seen_spooling[name] = pub.spooling
            spooled_mid = {n: sum(f.stat().st_size for f in spool_files(tmp_path / "spool" / n))
                           for n in streams}
            time.sleep(5)
        finally:
            broker.resume()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        for pub in pubs.values():
            pub.close(timeout=90)
        got = topic_messages(broker.bootstrap)

    assert all(seen_spooling.values()), seen_spooling
    assert all(n > 10_000 for n in spooled_mid.values()), spooled_mid
    for name, pub in pubs.items():
        assert pub.counts.posts == len(streams[name])
        assert pub.counts.spooled > 100, pub.counts
        assert not pub.spooling
    assert_exactly_once_in_order(got, {n: [p.key for p in s] for n, s in streams.items()})
    assert len(got) == sum(len(s) for s in streams.values())
    assert not spool_files(tmp_path / "spool"), "a delivered spool must be removed"


def test_spool_full_is_one_clear_error_and_keeps_what_it_took(tmp_path: Path) -> None:
    port = free_port()
    posts = demo_streams(tmp_path / "demo", 1500)["demo-a"]
    spool = tmp_path / "spool"
    limit = 256 * 1024
    pub = Publisher(f"127.0.0.1:{port}", "tiny", spool_dir=spool, spool_max_bytes=limit,
                    bootstrap_timeout_ms=500)
    assert pub.spooling
    accepted: list[str] = []
    with pytest.raises(SpoolFull) as info:
        for post in posts:
            pub.post(post, RETRIEVED)
            accepted.append(post.key)
    message = str(info.value)
    assert "\n" not in message and str(spool) in message and "full" in message
    assert 20 < len(accepted) < len(posts)
    assert pub.counts.posts == len(accepted)
    pub.close(timeout=0.5)
    on_disk = sum(f.stat().st_size for f in spool_files(spool))
    assert 0.5 * limit < on_disk <= limit

    # Kafka comes up where it was expected: the next publisher delivers the backlog first.
    with EmbeddedBroker(port=port) as broker:
        ensure_topics(broker.bootstrap, 4)
        later = Publisher(broker.bootstrap, "tiny", spool_dir=spool, spool_max_bytes=limit)
        extra = demo_streams(tmp_path / "demo2", 200, seed=9)["demo-b"]
        for post in extra:
            later.post(post, RETRIEVED)
        later.close(timeout=60)
        got = topic_messages(broker.bootstrap)
    assert_exactly_once_in_order(got, {"tiny": accepted + [p.key for p in extra]})
    assert not spool_files(spool)


def test_close_during_an_outage_hands_unacknowledged_messages_to_the_next_run(
    tmp_path: Path,
) -> None:
    """What the producer still held is rescued to the spool: never lost, maybe sent twice."""
    posts = demo_streams(tmp_path / "demo", 700)["demo-a"]
    spool = tmp_path / "spool"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        pub = Publisher(broker.bootstrap, "closer", spool_dir=spool)
        for post in posts[:100]:
            pub.post(post, RETRIEVED)
        pub.flush()
        broker.pause()
        try:
            for post in posts[100:]:  # handed to the producer: the outage is not noticed yet
                pub.post(post, RETRIEVED)
            pub.close(timeout=2)
            assert spool_files(spool), "unacknowledged messages must be rescued to disk"
        finally:
            broker.resume()
        Publisher(broker.bootstrap, "closer", spool_dir=spool).close(timeout=60)
        got = topic_messages(broker.bootstrap)
    counts = Counter(k for _p, _c, k in got)
    keys = [p.key for p in posts]
    assert set(counts) == set(keys), "nothing may be lost"
    assert all(counts[k] == 1 for k in keys[:100])
    assert max(counts.values()) <= 2
    assert not spool_files(spool)


CHILD = """
import sys, time
from pathlib import Path
from connectors.kafka.publisher import Publisher
from shoal.formats import read_file
from shoal.model import RawPost
pub = Publisher(sys.argv[1], "crashy", spool_dir=sys.argv[2], bootstrap_timeout_ms=500)
posts = [r for r in read_file(Path(sys.argv[3])) if isinstance(r, RawPost)]
for post in posts:
    pub.post(post, "2021-05-11T20:00:00+00:00")
pub.flush(5)
print(pub.counts.posts, pub.spooling, flush=True)
time.sleep(120)
"""


def test_spool_of_a_killed_collector_is_delivered_by_the_next(tmp_path: Path) -> None:
    port = free_port()
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=2000, hours=2, seed=11))
    first = [r.key for r in read_file(files["demo-a"]) if isinstance(r, RawPost)]
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"127.0.0.1:{port}", str(spool), str(files["demo-a"])],
        stdout=subprocess.PIPE, env=env, cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().split()
        assert line == [str(len(first)), "True"], line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert spool_files(spool), "the killed collector's spool must be on disk"

    with EmbeddedBroker(port=port) as broker:
        ensure_topics(broker.bootstrap, 4)
        pub = Publisher(broker.bootstrap, "crashy", spool_dir=spool)
        assert pub.spooling  # the leftover goes first
        second = demo_streams(tmp_path / "demo2", 300, seed=12)["demo-b"]
        for post in second:
            pub.post(post, RETRIEVED)
        pub.close(timeout=60)
        got = topic_messages(broker.bootstrap)
    assert not pub.spooling
    assert_exactly_once_in_order(got, {"crashy": first + [p.key for p in second]})
    assert not list(spool.iterdir()), "the adopted spool must be cleaned up"


def test_dataflow_waits_out_a_paused_broker(tmp_path: Path) -> None:
    """The flow runs through an outage, and takes what a collector spooled meanwhile."""
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=30000, hours=6, seed=2))
    streams = {n: [r for r in read_file(p) if isinstance(r, RawPost)] for n, p in files.items()}
    want = {r.id for posts in streams.values() for r in posts}
    done = threading.Event()
    failures: list[BaseException] = []
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        publish(broker.bootstrap, [("demo-a", files["demo-a"])])
        pub = Publisher(broker.bootstrap, "demo-b", spool_dir=tmp_path / "spool")
        resumed_at: list[float] = []

        def outage() -> None:
            try:
                time.sleep(1.5)  # the flow is reading demo-a
                broker.pause()
                posts = streams["demo-b"]
                t0 = time.monotonic()
                for i, post in enumerate(posts):  # a collector carries on meanwhile
                    time.sleep(max(0.0, t0 + 7.0 * i / len(posts) - time.monotonic()))
                    pub.post(post, RETRIEVED)
                time.sleep(max(0.0, t0 + 9.0 - time.monotonic()))
                broker.resume()
                resumed_at.append(time.monotonic())
                pub.close(timeout=90)
            except BaseException as exc:
                failures.append(exc)
                broker.resume()
            finally:
                done.set()

        side = threading.Thread(target=outage, daemon=True)
        side.start()
        try:
            run_flow(broker.bootstrap, tmp_path / "out", idle_exit=2.0, lateness=60,
                     producers_done=done)
        finally:
            side.join(120)
        flow_done_at = time.monotonic()
    assert not failures, failures
    assert pub.counts.spooled > 0 and pub.counts.posts == len(streams["demo-b"])
    assert resumed_at and flow_done_at > resumed_at[0]
    ids = all_ids(tmp_path / "out")
    assert len(ids) == len(set(ids))
    assert set(ids) == want
