"""Finding where to start and stop a replay, on any Kafka.

``ListOffsets`` by timestamp is the standard way, but some Kafka-compatible brokers answer it
wrongly (the embedded Tansu answers offset 0 for every time). So every answer is verified
against the timestamps of the messages themselves, and when it does not hold, the offset is
found by binary search over message timestamps (which are non-decreasing per partition for
producer-stamped topics like ``shoal.posts``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from connectors.kafka.publisher import bootstrap_list
from shoal.errors import UserError


class OffsetError(UserError, ValueError):
    """A start or end position the topic cannot give (bad syntax, no such partition)."""


def parse_offsets(spec: str) -> dict[int, int]:
    """``0:120,1:98`` -> {0: 120, 1: 98}."""
    out: dict[int, int] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        p, sep, o = part.partition(":")
        if not sep or not p.strip().isdigit() or not o.strip().isdigit():
            raise OffsetError(f"bad offset {part!r}: use PARTITION:OFFSET[,PARTITION:OFFSET...]")
        out[int(p)] = int(o)
    return out


class OffsetFinder:
    def __init__(self, brokers: str | Iterable[str], topic: str):
        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_list(brokers),
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=5000,
            max_poll_records=10_000,
        )

    def close(self) -> None:
        self.consumer.close()

    def partitions(self) -> list[int]:
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            raise OffsetError(f"topic {self.topic!r} has no partitions (does it exist?)")
        return sorted(parts)

    def bounds(self, partition: int, patience: float = 30.0) -> tuple[int, int]:
        """First offset and one past the last message, checked against the messages.

        The embedded Tansu answers ListOffsets with the base offset of the last record batch
        plus one, which cuts off the rest of that batch; its fetch responses carry the true
        high watermark. So the end is read: from there on until the consumer's position
        reaches the high watermark the first fetch reported, which is what the partition held
        then. Never until a poll comes back empty: on a loaded machine a fetch can take longer
        than any poll timeout, and a replay would stop short at a point the load chose.
        """
        tp = TopicPartition(self.topic, partition)
        low = int(self.consumer.beginning_offsets([tp])[tp])
        high = int(self.consumer.end_offsets([tp])[tp])
        if high <= low:
            return low, high
        self.consumer.assign([tp])
        self.consumer.seek(tp, high - 1)
        end = high
        target: int | None = None
        deadline = time.monotonic() + patience
        while True:
            batch = self.consumer.poll(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for rec in records:
                    end = max(end, rec.offset + 1)
            if target is None:
                target = self.consumer.highwater(tp)  # None until a fetch has answered
            if target is not None and self.consumer.position(tp) >= target:
                return low, end
            if time.monotonic() > deadline:
                raise OffsetError(f"could not read {self.topic}/{partition} to its end within "
                                  f"{patience:.0f}s (broker too slow or unreachable)")

    def timestamp_at(self, partition: int, offset: int) -> int:
        """The timestamp (ms) of the message at ``offset``."""
        tp = TopicPartition(self.topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, offset)
        for _ in range(20):
            batch = self.consumer.poll(timeout_ms=1000, max_records=1)
            for records in batch.values():
                for rec in records:
                    return int(rec.timestamp)
        raise OffsetError(f"no message at {self.topic}/{partition}/{offset}")

    def _holds(self, partition: int, offset: int, ts_ms: int, low: int, high: int) -> bool:
        """Is ``offset`` the first message at or after ``ts_ms``?"""
        if offset < low or offset > high:
            return False
        if offset < high and self.timestamp_at(partition, offset) < ts_ms:
            return False
        return offset == low or self.timestamp_at(partition, offset - 1) < ts_ms

    def offset_for_time(self, partition: int, ts_ms: int) -> int:
        """First offset whose message timestamp is >= ts_ms (the end offset if none)."""
        low, high = self.bounds(partition)
        if low >= high:
            return high
        tp = TopicPartition(self.topic, partition)
        try:
            answer = self.consumer.offsets_for_times({tp: ts_ms}).get(tp)
        except Exception:  # brokers without the API: search instead
            answer = None
        guess = high if answer is None else int(answer.offset)
        if self._holds(partition, guess, ts_ms, low, high):
            return guess
        lo, hi = low, high  # invariant: answer in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if self.timestamp_at(partition, mid) < ts_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        ts_ms = int(when.timestamp() * 1000)
        return {p: self.offset_for_time(p, ts_ms) for p in self.partitions()}

    def end_offsets(self) -> dict[int, int]:
        return {p: self.bounds(p)[1] for p in self.partitions()}
