"""Bytewax input from ``shoal.posts`` that can tell when a replay is over.

Bytewax's own ``KafkaSource`` either tails forever or stops at the first end-of-partition,
which is too early while a collector is still publishing. This source ends a partition only
once it is at the end *and* nothing arrived for ``idle_exit`` seconds (and the optional
``producers_done`` event is set). Like Bytewax's, one Kafka partition is one Bytewax
partition and its resume state is the next offset, which is what makes recovery exact.

Each poll is emitted as *one* item, ``(partition key, [Message, ...])``: Bytewax's cost is per
item, so handing it a poll's worth of messages at once (already keyed, so the stage needs no
``key_on``) keeps the engine's share of a post's cost small.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.ops import metrics


class Message(NamedTuple):
    """What the dataflow needs of a Kafka message (picklable, no client objects).

    A named tuple rather than a frozen dataclass: one is built per message, and a frozen
    dataclass's ``__init__`` costs several times as much.
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def is_idle_marker(self) -> bool:
        return self.offset < 0


def idle_marker(partition: int) -> Message:
    """Tells the dataflow a partition is caught up, so it does not hold back event time."""
    return Message(partition, -1, None, None, (), 0)


def _consumer_config(brokers: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": brokers,
        "group.id": "shoal-bytewax",  # required by librdkafka; offsets live in Bytewax state
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        "queued.max.messages.kbytes": 65536,
        "log_level": 3,
    }
    config.update(extra or {})
    return config


def list_partitions(brokers: str, topic: str, timeout: float = 10.0) -> list[int]:
    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=timeout)
    tmeta = meta.topics.get(topic)
    if tmeta is None or tmeta.error is not None:
        why = tmeta.error if tmeta else "missing"
        raise RuntimeError(f"cannot list partitions of {topic!r}: {why}")
    return sorted(tmeta.partitions)


Batch = tuple[str, list[Message]]


class _Partition(StatefulSourcePartition[Batch, int]):
    def __init__(
        self,
        brokers: str,
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        idle_exit: float | None,
        producers_done: threading.Event | None,
        end_offset: int | None,
        key: str | None = None,
    ):
        self._consumer = Consumer(_consumer_config(brokers))
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._idle_exit = idle_exit
        self._producers_done = producers_done
        self._end_offset = end_offset
        self._at_eof = False
        self._idle_sent = False
        self._idle_since: float | None = None
        self._tp = TopicPartition(topic, partition)
        self._lag_at = 0.0
        self._awake: datetime | None = None
        self._key = key if key is not None else str(partition)

    def next_batch(self) -> list[Batch]:
        batch = self._poll()
        return [(self._key, batch)] if batch else []

    def _poll(self) -> list[Message]:
        if self._end_offset is not None and self._offset >= self._end_offset:
            raise StopIteration
        msgs = self._consumer.consume(self._batch_size, 0.0)
        batch: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_eof = True
                    continue
                raise RuntimeError(f"Kafka error on partition {self._partition}: {err}")
            self._at_eof = False
            off: int = m.offset()  # type: ignore[assignment]  # None only on error messages
            if self._end_offset is not None and off >= self._end_offset:
                break
            _ts_type, ts = m.timestamp()
            headers: Any = m.headers() or ()  # shoal's producers send a list of (str, bytes)
            batch.append(Message(self._partition, off, m.key(), m.value(), tuple(headers), ts))
            self._offset = off + 1
        if batch:
            self._idle_since = None
            self._idle_sent = False
            self._awake = None
            return batch
        now = time.monotonic()
        if now - self._lag_at >= 1.0:
            self._lag_at = now
            self._report_lag()
        if self._at_eof:
            if not self._idle_sent:
                # librdkafka says end of partition: tell the sealer this partition does not
                # hold event time back. Cheap, and harmless if it was premature.
                self._idle_sent = True
                return [idle_marker(self._partition)]
            done = self._producers_done is None or self._producers_done.is_set()
            if self._idle_since is None or not done:
                self._idle_since = now
            elif self._idle_exit is not None and now - self._idle_since >= self._idle_exit:
                # Only now ask the broker (a round trip) whether we really are at the end.
                if self._caught_up():
                    raise StopIteration
                self._idle_since = now
        else:
            self._idle_since = None
        # Nothing to do: sleep a little instead of spinning the worker.
        self._awake = datetime.now(UTC) + timedelta(milliseconds=50)
        return batch

    def _report_lag(self) -> None:
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except Exception:  # no statistics yet
            return
        if high >= 0 and self._offset >= 0:
            metrics.lag(self._partition, max(0, high - self._offset))

    def _caught_up(self) -> bool:
        """At the end of the partition, asked of the broker (EOF events can be stale)."""
        if not self._at_eof:
            return False
        try:
            low, high = self._consumer.get_watermark_offsets(self._tp, timeout=2.0, cached=False)
        except Exception:  # broker unreachable: not known to be caught up
            return False
        # The embedded Tansu answers that query with the base offset of the last record batch
        # plus one, short of the rest of that batch; the high watermark its fetches carried
        # (cached by the consumer) is the true one. The larger of the two is the end: with
        # the query's alone, a partition whose last batch held several posts was left with
        # them unread (four of a run's posts once, seen in CI).
        with contextlib.suppress(Exception):
            high = max(high, self._consumer.get_watermark_offsets(self._tp, cached=True)[1])
        position = self._offset if self._offset >= 0 else low  # OFFSET_BEGINNING is -2
        return bool(position >= high)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class PostsSource(FixedPartitionedSource[Batch, int]):
    def __init__(
        self,
        brokers: str,
        topic: str,
        *,
        idle_exit: float | None = None,
        producers_done: threading.Event | None = None,
        start_offsets: dict[int, int] | None = None,
        end_offsets: dict[int, int] | None = None,
        batch_size: int = 2000,
        keys: dict[int, str] | None = None,
    ):
        """``keys``: the key each partition's batches carry (default: its number), which
        says on which worker the step after keeps the partition's state."""
        self.brokers = brokers
        self.topic = topic
        self.idle_exit = idle_exit
        self.producers_done = producers_done
        self.start_offsets = start_offsets or {}
        self.end_offsets = end_offsets or {}
        self.batch_size = batch_size
        self.keys = keys or {}

    def list_parts(self) -> list[str]:
        return [str(p) for p in list_partitions(self.brokers, self.topic)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        part = int(for_part)
        offset = resume_state
        if offset is None:
            offset = self.start_offsets.get(part, OFFSET_BEGINNING)
        return _Partition(
            self.brokers,
            self.topic,
            part,
            offset,
            self.batch_size,
            self.idle_exit,
            self.producers_done,
            self.end_offsets.get(part),
            self.keys.get(part),
        )
