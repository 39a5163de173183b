"""Sealing shared among shards: each shard on a worker of its own, the files unchanged.

``flows.route`` models how Bytewax places state keys on workers; the first test holds the
model against Bytewax itself. The others run the real flow with several seal shards and
compare its files with one sealer's, also across a restart that changes the shard count.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSource, cluster_main

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from flows.route import reader_of, shard_keys, shard_of, stage_keys, worker_of
from shoal.demo import DemoSpec, write_demo_files
from tests.pipeline import all_ids, digests, publish, run_flow


def test_bytewax_places_keys_where_the_route_model_says() -> None:
    workers = 3
    keys = [*shard_keys(workers, workers), *(f"key-{i}" for i in range(30))]
    threads: dict[str, int] = {}
    lock = threading.Lock()

    def remember(key: str, thread: int) -> None:
        with lock:
            threads[key] = thread

    flow = Dataflow("route-model")
    items = op.input("in", flow, TestingSource([(k, 1) for k in keys]))
    placed = op.stateful_map("place", items, lambda state, _v: (state, threading.get_ident()))
    op.inspect("remember", placed, lambda _s, kv: remember(*kv))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)

    by_worker: dict[int, set[int]] = {}
    for key in keys:
        by_worker.setdefault(worker_of(key, workers), set()).add(threads[key])
    # Keys the model puts on one worker ran on one thread, and each worker on its own.
    assert sorted(by_worker) == [0, 1, 2]
    assert all(len(t) == 1 for t in by_worker.values())
    assert len({next(iter(t)) for t in by_worker.values()}) == workers
    # And the seal shards' keys cover every worker once.
    assert sorted(worker_of(k, workers) for k in shard_keys(workers, workers)) == [0, 1, 2]


class _Reader(StatefulSourcePartition[tuple[str, int], None]):
    """One item: the partition's stage key and the thread that read it."""

    def __init__(self, key: str) -> None:
        self.key, self.done = key, False

    def next_batch(self) -> list[tuple[str, int]]:
        if self.done:
            raise StopIteration
        self.done = True
        return [(self.key, threading.get_ident())]

    def snapshot(self) -> None:
        return None


class _Partitions(FixedPartitionedSource[tuple[str, int], None]):
    def __init__(self, keys: dict[int, str]) -> None:
        self.keys = keys

    def list_parts(self) -> list[str]:
        return [str(p) for p in self.keys]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Reader:
        return _Reader(self.keys[int(for_part)])


def test_each_partition_is_staged_on_the_worker_that_reads_it() -> None:
    workers, partitions = 3, list(range(12))  # 12: names "10", "11" sort before "2"
    keys = stage_keys(partitions, workers)
    placed: dict[str, tuple[int, int]] = {}
    flow = Dataflow("reader-model")
    items = op.input("in", flow, _Partitions(keys))
    staged = op.stateful_map("stage", items,
                             lambda state, reader: (state, (reader, threading.get_ident())))
    op.inspect("remember", staged, lambda _s, kv: placed.__setitem__(*kv))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)

    assert sorted(placed) == sorted(keys.values())
    assert all(reader == stager for reader, stager in placed.values()), placed
    # The model says where each partition is read, and the stage is spread evenly.
    names = [str(p) for p in partitions]
    by_thread: dict[int, set[int]] = {}
    for p, key in keys.items():
        by_thread.setdefault(placed[key][0], set()).add(reader_of(str(p), names, workers))
        assert worker_of(key, workers) == reader_of(str(p), names, workers)
    assert all(len(w) == 1 for w in by_thread.values()) and len(by_thread) == workers
    assert sorted(Counter(worker_of(k, workers) for k in keys.values()).values()) == [4, 4, 4]
    # One worker: every partition keeps its own name (a single process's recovery keys).
    assert stage_keys(partitions, 1) == {p: str(p) for p in partitions}


def test_hours_are_dealt_to_every_shard() -> None:
    starts = [1_620_756_000 + 3600 * h for h in range(12)]
    for shards in (2, 3, 5):
        dealt = [shard_of("twitter", s, shards) for s in starts]
        assert set(dealt) == set(range(shards))
        # Neighbouring hours go to different shards: a replay seals them side by side.
        assert all(a != b for a, b in pairwise(dealt))


def test_several_seal_shards_write_what_one_sealer_writes(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=6000, hours=7, seed=5))
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(files.items()))
        run_flow(b.bootstrap, tmp_path / "one", lateness=timedelta(minutes=5).total_seconds())
        run_flow(b.bootstrap, tmp_path / "three", seal_shards=3, seal_processes=1,
                 lateness=timedelta(minutes=5).total_seconds())
    one = digests(tmp_path / "one")
    assert len(one) > 7 * 4
    assert digests(tmp_path / "three") == one


def test_a_restart_with_another_shard_count_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """Three shards for the first half, one sealer after a restart: the retired shards'
    state is dropped, their hours are the new sealer's, and the files are a single run's."""
    early = write_demo_files(tmp_path / "early", DemoSpec(posts=3000, hours=3, seed=8))
    later = write_demo_files(tmp_path / "later", DemoSpec(
        posts=3000, hours=3, seed=9,
        start=DemoSpec().start + timedelta(hours=3)))
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(early.items()))
        run_flow(b.bootstrap, tmp_path / "split", recovery=True, seal_shards=3,
                 seal_processes=1)
        publish(b.bootstrap, list(later.items()))
        run_flow(b.bootstrap, tmp_path / "split", recovery=True, seal_shards=1,
                 seal_processes=1)
        run_flow(b.bootstrap, tmp_path / "whole", seal_processes=1)
    whole = digests(tmp_path / "whole")
    assert len(whole) > 6 * 4
    assert digests(tmp_path / "split") == whole
    assert len(all_ids(tmp_path / "split")) == len(set(all_ids(tmp_path / "whole")))


def test_a_restart_on_more_workers_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """One worker for the first half, three after a restart: the stage's state resumed
    under keys that are no longer its partitions' is retired, and the files are a single
    run's."""
    early = write_demo_files(tmp_path / "early", DemoSpec(posts=3000, hours=3, seed=11))
    later = write_demo_files(tmp_path / "later", DemoSpec(
        posts=3000, hours=3, seed=12,
        start=DemoSpec().start + timedelta(hours=3)))
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(early.items()))
        run_flow(b.bootstrap, tmp_path / "split", recovery=True, seal_processes=1)
        publish(b.bootstrap, list(later.items()))
        run_flow(b.bootstrap, tmp_path / "split", recovery=True, workers=3, seal_processes=1)
        run_flow(b.bootstrap, tmp_path / "whole", seal_processes=1)
    whole = digests(tmp_path / "whole")
    assert len(whole) > 6 * 4
    assert digests(tmp_path / "split") == whole
    assert len(all_ids(tmp_path / "split")) == len(set(all_ids(tmp_path / "whole")))
