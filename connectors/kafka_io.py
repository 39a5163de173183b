"""Publishing posts and dead letters to Kafka (kafka-python), and creating the topics.

One message per post, key ``platform:id`` so every copy of a post lands in the same
partition whichever collector delivered it: that is what lets the dataflow dedupe and keep
event time per partition without a global shuffle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from shoal.model import DeadLetter, RawPost

log = logging.getLogger(__name__)

POSTS_TOPIC = "shoal.posts"
DEADLETTER_TOPIC = "shoal.deadletter"
DEFAULT_PARTITIONS = 4
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def bootstrap_list(brokers: str | Iterable[str]) -> list[str]:
    if isinstance(brokers, str):
        return [b.strip() for b in brokers.split(",") if b.strip()]
    return list(brokers)


def ensure_topics(
    brokers: str | Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    topics: Iterable[str] = (POSTS_TOPIC, DEADLETTER_TOPIC),
    replication: int = 1,
) -> dict[str, int]:
    """Create missing topics; return every wanted topic's partition count."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_list(brokers), client_id="shoal-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [
                NewTopic(t, partitions if t == POSTS_TOPIC else 1, replication) for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
        counts: dict[str, int] = {}
        for meta in admin.describe_topics(list(topics)):
            counts[meta.get("topic") or meta["name"]] = len(meta.get("partitions") or [])
        return counts
    finally:
        admin.close()


def post_headers(
    fmt: str, collector: str, retrieved_at: str, source: str
) -> list[tuple[str, bytes]]:
    return [
        ("format", fmt.encode()),
        ("collector", collector.encode()),
        ("retrieved_at", retrieved_at.encode()),
        ("source", source.encode("utf-8", "backslashreplace")),
    ]


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass
class PublishCounts:
    posts: int = 0
    dead: int = 0
    control: dict[str, int] = field(default_factory=dict)


class Publisher:
    """A thin producer: posts to ``shoal.posts``, dead letters to ``shoal.deadletter``."""

    def __init__(self, brokers: str | Iterable[str], collector: str, **producer_config: Any):
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_list(brokers),
            "client_id": f"shoal-collector-{collector}",
            "acks": "all",
            "linger_ms": 20,
            "batch_size": 1024 * 1024,
            "max_request_size": MAX_MESSAGE_BYTES,
            "retries": 10,
        }
        config.update(producer_config)
        self.producer = KafkaProducer(**config)
        self.collector = collector
        self.counts = PublishCounts()

    def post(self, post: RawPost, retrieved_at: str | None = None) -> None:
        value = orjson.dumps(post.payload)
        headers = post_headers(post.format, self.collector, retrieved_at or now_iso(), post.source)
        self.producer.send(POSTS_TOPIC, key=post.key.encode(), value=value, headers=headers)
        self.counts.posts += 1

    def dead(self, letter: DeadLetter) -> None:
        letter.collector = letter.collector or self.collector
        value = orjson.dumps(letter.as_json())
        self.producer.send(DEADLETTER_TOPIC, key=letter.source.encode(), value=value)
        self.counts.dead += 1

    def flush(self, timeout: float | None = 60) -> None:
        self.producer.flush(timeout)

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()
