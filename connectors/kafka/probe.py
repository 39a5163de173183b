"""Is Kafka answering? A small metadata request now and then, for ``/healthz``.

The dataflow's consumer does not say when its broker stops answering: librdkafka retries
quietly, polls come back empty, and an empty poll looks like a quiet topic. So a probe asks
the brokers for the topic's metadata on a thread of its own every few seconds and remembers
the last answer; ``/healthz`` turns degraded (HTTP 503, with the reason) once no answer came
for ``stale`` seconds. A broker that is down, unreachable or frozen (accepting connections
but answering nothing) all look the same here, which is what an operator needs to know.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


class KafkaProbe:
    """Asks ``brokers`` about ``topic`` every ``stale / 3`` seconds (at most 5) until closed."""

    def __init__(self, brokers: str, topic: str, stale: float) -> None:
        self.brokers = brokers
        self.topic = topic
        self.stale = stale
        self.interval = max(0.2, min(5.0, stale / 3))
        self.last_ok = time.monotonic()  # a grace period from the start, like the other checks
        self.last_error = ""
        self._stop = threading.Event()
        self._admin = AdminClient({"bootstrap.servers": brokers, "log_level": 0})
        self._thread = threading.Thread(target=self._loop, name="shoal-kafka-probe", daemon=True)

    def start(self) -> KafkaProbe:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                meta = self._admin.list_topics(self.topic, timeout=self.interval)
                topic = meta.topics.get(self.topic)
                if topic is not None and topic.error is not None:
                    self.last_error = f"topic {self.topic}: {topic.error.str()}"
                else:
                    self.last_ok = time.monotonic()
                    self.last_error = ""
            except KafkaException as exc:
                self.last_error = str(exc.args[0].str() if exc.args else exc)
            self._stop.wait(self.interval)

    def check(self) -> tuple[bool, str]:
        """(True, "") while Kafka answered within ``stale`` seconds, else (False, why)."""
        silent = time.monotonic() - self.last_ok
        if silent <= self.stale:
            return True, ""
        why = f" ({self.last_error})" if self.last_error else ""
        return False, f"Kafka unreachable: no answer from {self.brokers} for {silent:.0f} s{why}"
