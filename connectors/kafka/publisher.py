"""Publishing posts and dead letters to Kafka (kafka-python), and creating the topics.

One message per post, key ``platform:id`` so every copy of a post lands in the same
partition whichever collector delivered it: that is what lets the dataflow dedupe and keep
event time per partition without a global shuffle.

A collector must not stop collecting, nor lose what it collected, because Kafka is away for
a while: the :class:`Publisher` then writes to a bounded disk spool (``connectors.kafka.spool``) and
replays it, in order, once Kafka is back.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    BrokerResponseError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)

from connectors.kafka.spool import DEFAULT_MAX_BYTES, Message, Spool, SpoolFull, default_spool_root
from connectors.kafka.spool import safe_name as _safe_name
from shoal.errors import UserError
from shoal.model import DEADLETTER_FORMAT, DEADLETTER_TOPIC, DeadLetter, RawPost
from shoal.options import KafkaSettings

log = logging.getLogger(__name__)

POSTS_TOPIC = "shoal.posts"
DEFAULT_PARTITIONS = 4
DEADLETTER_FORMAT_BYTES = DEADLETTER_FORMAT.encode()
MAX_MESSAGE_BYTES = 1_000_000  # [kafka] max_message_bytes: under Kafka's default broker limit
JOURNAL_CHUNK = 1024 * 1024
# The ``late`` header: a post replayed from the raw archive that was late when first processed.
LATE = b"1"


class KafkaUnreachable(UserError):
    """No broker answered: a wrong address or a stopped Kafka, said in one line."""


def bootstrap_list(brokers: str | Iterable[str]) -> list[str]:
    if isinstance(brokers, str):
        return [b.strip() for b in brokers.split(",") if b.strip()]
    return list(brokers)


def ensure_topics(
    brokers: str | Iterable[str],
    partitions: int = DEFAULT_PARTITIONS,
    topic: str = POSTS_TOPIC,
    replication: int = 1,
) -> dict[str, int]:
    """Create the posts topic (``partitions``) and the dead-letter topic if missing; return
    each one's partition count."""
    topics = (topic, DEADLETTER_TOPIC)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_list(brokers),
                                 client_id="shoal-admin", bootstrap_timeout_ms=10_000)
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise KafkaUnreachable(
            f"cannot reach Kafka at {','.join(bootstrap_list(brokers))} ({exc}); is it "
            "running, and are --brokers right?") from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [NewTopic(t, partitions if t == topic else 1, replication) for t in missing]
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
    spooled: int = 0  # messages that went through the disk spool (Kafka unreachable)
    rejected: int = 0  # refused by Kafka for good; kept in <spool dir>/rejected.seg


def _refused(exc: BaseException) -> bool:
    """Kafka said no for good (too large, not authorised...): retrying would loop forever."""
    return isinstance(exc, BrokerResponseError) and not exc.retriable


def _settle(future: Any, timeout: float) -> None:
    """Wait up to ``timeout`` for a send to be acknowledged or to fail, whichever."""
    with contextlib.suppress(Exception):
        future.get(timeout)


class Publisher:
    """Posts to ``shoal.posts``, dead letters to ``shoal.deadletter``; survives Kafka outages.

    While Kafka takes messages they go straight to the producer (the hot path costs a deque
    append over a bare ``send``). Once it stops taking them — ``send`` cannot get metadata, a
    delivery fails, the oldest unacknowledged message is older than ``stall_seconds`` or more
    than ``max_pending_bytes`` await acknowledgement — this and every later message are
    appended to a disk spool instead (at most ``spool_max_bytes``, then :class:`SpoolFull`).
    A background thread waits until everything already handed to the producer is
    acknowledged (the producer keeps retrying it, idempotently, for ``delivery_timeout_ms``),
    then replays the spool in order, and goes back to direct sending once it is empty.

    Order: every message of one partition (so every copy of one key) reaches Kafka in the
    order ``post``/``dead`` were called, across any outage — the producer is idempotent (one
    batch in flight per partition, retries never duplicate), the spool is replayed only after
    every earlier message was acknowledged, and direct sending resumes only once the spool is
    empty. The one exception: a message the producer gives back (its delivery timeout, one
    hour by default, expired; or the publisher was closed while Kafka was away) is re-sent
    from the spool ahead of everything spooled after it, but after any message of the same
    partition the producer did deliver meanwhile. Nothing is sent twice, except what a
    broker may have received before the producer gave it back (it is re-sent: at-least-once),
    and the last replayed batch when a process dies while replaying. Neither matters
    downstream: the dataflow dedupes by post id and orders by event time.

    The spool lives in ``spool_dir`` (default ``$SHOAL_SPOOL_DIR/<collector>`` or
    ``~/.cache/shoal/spool/<collector>``) and survives restarts: a new publisher of the same
    collector first delivers what an earlier one left there. Calls are not thread-safe
    (one posting thread, as with any ordered stream).
    """

    def __init__(
        self,
        brokers: str | Iterable[str],
        collector: str,
        *,
        spool_dir: str | Path | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        stall_seconds: float = 5.0,
        max_pending_bytes: int = 32 * 1024 * 1024,
        topic: str = POSTS_TOPIC,
        deadletter_topic: bool = True,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        **producer_config: Any,
    ):
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_list(brokers),
            "client_id": f"shoal-collector-{collector}",
            "acks": "all",
            "linger_ms": 20,
            "batch_size": 1024 * 1024,
            # Room for a record at the limit plus its key and headers.
            "max_request_size": max_message_bytes + 64 * 1024,
            # Idempotence (kafka-python's default) makes retries safe: no duplicate, no
            # reordering. What the producer holds is bounded by max_pending_bytes, so it may
            # keep retrying for long; past this it gives messages back to the spool.
            "delivery_timeout_ms": 3_600_000,
            "max_block_ms": 5_000,  # a send waiting for metadata: then spool instead
            "bootstrap_timeout_ms": 10_000,
        }
        config.update(producer_config)
        self._config = config
        self.topic = topic
        self.deadletter_topic = deadletter_topic
        self.max_message_bytes = max_message_bytes
        self.collector = collector
        self._collector_bytes = collector.encode()
        self._formats: dict[str, bytes] = {}
        self.counts = PublishCounts()
        self.stall_seconds = stall_seconds
        self.max_pending_bytes = max_pending_bytes
        root = Path(spool_dir) if spool_dir else default_spool_root() / _safe_name(collector)
        self._spool = Spool(root, spool_max_bytes)
        self._lock = threading.Lock()
        # Messages handed to the producer and not yet known to be delivered, in send order:
        # their futures, and (topic, key, header fields, journal chunk, offset, length). The
        # values are copied into shared journal chunks (freed once every message in them is
        # settled) rather than kept as objects: holding a thousand freshly allocated values
        # alive costs the hot path several microseconds a message in allocator churn.
        self._pending: deque[Any] = deque()
        self._records: deque[tuple[str, bytes, tuple[bytes, ...], bytearray, int, int]]
        self._records = deque()
        self._chunk = bytearray(JOURNAL_CHUNK)
        self._fill = 0
        self._head: Any = None
        self._head_since = 0.0
        self._sent = 0
        self._sent_bytes = 0
        self._settled_bytes = 0
        self._outage_since = 0.0
        self._closed = False
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._said_unreachable = False
        self._last_commit = 0.0  # when the drain last delivered a batch
        self._freed = threading.Event()
        self.producer: KafkaProducer | None = self._connect()
        # Leftovers of an earlier run go first; until they are delivered, new ones queue.
        self._direct = self.producer is not None and not self._spool.pending()
        if not self._direct:
            self._outage_since = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"shoal-spool-{collector}", daemon=True
        )
        self._thread.start()
        atexit.register(self._at_exit)

    @classmethod
    def for_settings(cls, brokers: str, collector: str, kafka: KafkaSettings,
                     **kwargs: Any) -> Publisher:
        """A publisher as ``[kafka]`` says: topic, dead-letter topic, message limit."""
        return cls(brokers, collector, topic=kafka.topic, deadletter_topic=kafka.deadletter_topic,
                   max_message_bytes=kafka.max_message_bytes, **kwargs)

    @property
    def spool_dir(self) -> Path:
        return self._spool.root

    @property
    def spooling(self) -> bool:
        """True while messages go to the disk spool rather than straight to Kafka."""
        return not self._direct

    # ------------------------------------------------------------------ posting
    def post(self, post: RawPost, retrieved_at: str | None = None) -> None:
        # A post read back from the raw archive goes out as the bytes that first came in.
        value = post.raw if post.raw is not None else orjson.dumps(post.payload)
        if len(value) > self.max_message_bytes:
            # Kafka would refuse it (and a refusal used to end the run): the record becomes a
            # dead letter keeping its head, and collection goes on.
            self.dead(DeadLetter(
                f"oversized record: {len(value)} bytes, over the {self.max_message_bytes}-byte "
                "message limit ([kafka] max_message_bytes)", post.source, value, post.format))
            return
        fmt = self._formats.get(post.format) or self._format_bytes(post.format)
        retrieved = (retrieved_at or now_iso()).encode()
        source = post.source.encode("utf-8", "backslashreplace")
        fields = (fmt, retrieved, source, LATE) if post.late else (fmt, retrieved, source)
        self._emit(self.topic, post.key.encode(), value, fields)
        self.counts.posts += 1

    def _format_bytes(self, fmt: str) -> bytes:
        self._formats[fmt] = fmt.encode()
        return self._formats[fmt]

    def dead(self, letter: DeadLetter) -> None:
        """A record that is no post: into the posts topic, marked by its format, so that the
        dataflow files it on disk with the posts, exactly once across crashes and replays
        (a dead letter is known by its origin and reason); and to ``shoal.deadletter`` for
        whoever watches that topic."""
        letter.collector = letter.collector or self.collector
        rec = letter.as_message()
        value = orjson.dumps(rec)
        key = letter.source.encode("utf-8", "backslashreplace")
        fields = (DEADLETTER_FORMAT_BYTES, now_iso().encode(), key)
        self._emit(self.topic, b"deadletter:" + key, value, fields)
        if self.deadletter_topic:
            self._emit(DEADLETTER_TOPIC, key, value, ())
        self.counts.dead += 1

    def _headers(self, fields: tuple[bytes, ...]) -> list[tuple[str, bytes]]:
        """The headers of ``post_headers`` from (format, retrieved_at, source) bytes, and a
        ``late`` header when a fourth field says so."""
        if not fields:
            return []
        headers = [("format", fields[0]), ("collector", self._collector_bytes),
                   ("retrieved_at", fields[1]), ("source", fields[2])]
        if len(fields) > 3:
            headers.append(("late", fields[3]))
        return headers

    def _emit(self, topic: str, key: bytes, value: bytes, fields: tuple[bytes, ...]) -> None:
        headers = self._headers(fields)
        full_since = 0.0
        while True:
            if self._direct:
                try:
                    future = self.producer.send(  # type: ignore[union-attr]
                        topic, key=key, value=value, headers=headers
                    )
                except KafkaTimeoutError as exc:  # no metadata within max_block_ms
                    with self._lock:
                        self._go_spooling(f"send: {exc}")
                else:
                    # Copied into a preallocated chunk: growing a bytearray would re-copy it.
                    chunk, at, size = self._chunk, self._fill, len(value)
                    if at + size > JOURNAL_CHUNK:
                        chunk = self._chunk = bytearray(max(JOURNAL_CHUNK, size))
                        at = 0
                    chunk[at : at + size] = value
                    self._fill = at + size
                    # Futures and data in separate deques: a record of plain bytes is soon
                    # untracked by the garbage collector, a tuple holding a future never is.
                    # The record goes first: the reaper pops a record per future it pops.
                    self._records.append((topic, key, fields, chunk, at, size))
                    self._pending.append(future)
                    self._sent_bytes += size
                    self._sent += 1
                    if not self._sent & 63:  # soon: settled futures then die young
                        self._check()
                    return
            with self._lock:
                if not self._direct:
                    if len(key) + len(value) > self._config["max_request_size"]:
                        raise MessageSizeTooLargeError(
                            f"message of {len(value)} bytes is over max_request_size"
                        )
                    try:
                        self._spool.append((topic, key, value, headers))
                    except SpoolFull:
                        # Full while the backlog drains: wait for room (back-pressure) as
                        # long as the drain makes progress; full with Kafka away: say so.
                        now = time.monotonic()
                        full_since = full_since or now
                        if now - max(full_since, self._last_commit) > self.stall_seconds:
                            raise
                    else:
                        self.counts.spooled += 1
                        return
            if full_since:
                self._freed.wait(0.2)
                self._freed.clear()
            # Otherwise the spool emptied meanwhile: direct again.

    # ------------------------------------------------------------------ outage detection
    def _check(self) -> None:
        with self._lock:
            self._reap()
            if not self._direct or not self._pending:
                return
            # How long the oldest unacknowledged send has been the oldest: no clock read
            # per message on the hot path.
            now = time.monotonic()
            head = self._pending[0]
            if head is not self._head:
                self._head, self._head_since = head, now
            age = now - self._head_since
            waiting = self._sent_bytes - self._settled_bytes
            if age > self.stall_seconds:
                self._go_spooling(f"no acknowledgement for {age:.1f}s")
            elif waiting > self.max_pending_bytes:
                self._go_spooling(f"{waiting} bytes await acknowledgement")

    def _reap(self) -> None:
        """Drop settled sends; a failed one is rescued to the spool (lock held)."""
        pending = self._pending
        lost: list[Message] = []
        refused: list[Message] = []
        why: BaseException | None = None
        records = self._records
        while pending and pending[0].is_done:
            exc = pending.popleft().exception
            topic, key, fields, chunk, at, size = records.popleft()
            self._settled_bytes += size
            if exc is not None:
                why = exc
                msg = (topic, key, bytes(chunk[at : at + size]), self._headers(fields))
                (refused if _refused(exc) else lost).append(msg)
        if refused:
            self._reject(refused)
        if lost:
            self._spool.rescue(lost)
            self.counts.spooled += len(lost)
            self._go_spooling(f"delivery failed: {why!r}")

    def _reject(self, messages: list[Message]) -> None:
        path = self._spool.reject(messages)
        self.counts.rejected += len(messages)
        log.error("Kafka refused messages for good; kept aside", extra={"fields": {
            "collector": self.collector, "messages": len(messages), "path": str(path),
        }})

    def _go_spooling(self, reason: str) -> None:
        if self._direct:
            self._direct = False
            self._outage_since = time.monotonic()
            log.warning("Kafka unreachable: spooling to disk", extra={"fields": {
                "collector": self.collector, "reason": reason, "spool": str(self._spool.dir),
            }})
            self._wake.set()

    # ------------------------------------------------------------------ recovery thread
    def _connect(self) -> KafkaProducer | None:
        try:
            return KafkaProducer(**self._config)
        except (KafkaConnectionError, KafkaTimeoutError) as exc:  # cannot bootstrap
            if not self._said_unreachable:
                self._said_unreachable = True
                log.warning("Kafka unreachable at start: spooling to disk", extra={"fields": {
                    "collector": self.collector, "error": repr(exc), "spool": str(self._spool.dir),
                }})
            return None

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                if self._direct:
                    self._wake.wait(0.2)
                    self._wake.clear()
                    self._check()
                else:
                    self._recover_step()
            except SpoolFull as exc:  # the posting side reports it; keep trying
                log.warning("spool: %s", exc)
                self._closing.wait(1.0)
            except Exception:
                log.exception("spool thread error; retrying")
                self._closing.wait(1.0)

    def _recover_step(self) -> None:
        """One bounded step towards direct sending; returns within about a second."""
        with self._lock, contextlib.suppress(SpoolFull):
            self._spool.write_out()  # a crash loses at most what one step buffers
        if self.producer is None:
            self.producer = self._connect()
            if self.producer is None:
                self._closing.wait(2.0)
                return
        with self._lock:
            self._reap()
            head = self._pending[0] if self._pending else None
        if head is not None:  # the producer's own backlog goes first
            _settle(head, 0.5)
            return
        with self._lock:
            batch = self._spool.read_batch()
            if batch is None:
                if self._spool.finish():
                    self._direct = True
                    log.warning("Kafka is back: spool delivered", extra={"fields": {
                        "collector": self.collector, "spooled": self.counts.spooled,
                        "outage_seconds": round(time.monotonic() - self._outage_since, 1),
                    }})
                return
        if self._deliver(batch.messages):
            with self._lock:
                self._spool.commit(batch)
                self._last_commit = time.monotonic()
            self._freed.set()

    def _deliver(self, messages: list[Message]) -> bool:
        """Send spooled messages and wait for all of them; False if closing first."""
        producer = self.producer
        assert producer is not None
        todo = messages
        while todo:
            sent: list[tuple[Any, Message]] = []
            refused: list[Message] = []
            unsent: list[Message] = []
            for i, msg in enumerate(todo):
                topic, key, value, headers = msg
                try:
                    sent.append((producer.send(topic, key=key, value=value, headers=headers), msg))
                except KafkaTimeoutError:
                    unsent = todo[i:]
                    break
                except KafkaError as exc:
                    if exc.retriable:
                        unsent = todo[i:]
                        break
                    refused.append(msg)
            for future, _msg in sent:
                while not future.is_done:
                    if self._closing.is_set():
                        return False
                    _settle(future, 0.5)
            retry: list[Message] = []
            for future, msg in sent:
                if future.exception is not None:
                    (refused if _refused(future.exception) else retry).append(msg)
            if refused:
                with self._lock:
                    self._reject(refused)
            todo = retry + unsent
            if todo and self._closing.wait(1.0):
                return False
        return True

    # ------------------------------------------------------------------ flush and close
    def flush(self, timeout: float | None = 60) -> None:
        """Return once every message posted so far is acknowledged by Kafka or on disk.

        Messages spooled during an outage count as safe (fsynced); the ones handed to the
        producer before it was noticed must be acknowledged: if they are not within
        ``timeout`` seconds, :class:`KafkaTimeoutError` is raised, as before the spool.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        producer = self.producer
        if self._direct and producer is not None:
            with contextlib.suppress(KafkaTimeoutError):
                producer.flush(timeout)
        while True:
            with self._lock:
                self._reap()
                head = self._pending[0] if self._pending else None
                waiting = len(self._pending)
            if head is None:
                break
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(
                    f"{waiting} messages sent to Kafka not acknowledged after {timeout}s"
                )
            _settle(head, min(0.5, left))
        with self._lock:
            self._spool.sync()

    def close(self, timeout: float | None = 60) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, keep the rest on disk.

        Whatever is still spooled (or given back by the producer) stays in the spool
        directory, and the next publisher of this collector delivers it first.
        """
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        while not self._direct and (deadline is None or time.monotonic() < deadline):
            self._closing.wait(0.05)  # the recovery thread drains the spool meanwhile
        with contextlib.suppress(KafkaTimeoutError):
            self.flush(left())
        self._closing.set()
        self._wake.set()
        self._thread.join()
        self._closed = True
        atexit.unregister(self._at_exit)
        if self.producer is not None:
            _shut(self.producer, left())
        with self._lock:
            self._reap()  # a forced close fails what was left: rescued to disk
            self._spool.close()
        if self._spool.bytes:
            log.warning("Kafka unreachable at close: messages kept in the spool", extra={
                "fields": {"collector": self.collector, "bytes": self._spool.bytes,
                           "spool": str(self._spool.root)},
            })

    def _at_exit(self) -> None:
        """Interpreter exit without close(): at least the spooled messages reach the disk."""
        with contextlib.suppress(Exception), self._lock:
            self._spool.sync()


def _shut(producer: KafkaProducer, timeout: float | None) -> None:
    """Close the producer; if Kafka is away, force it so every unsent message fails back.

    kafka-python's ``close`` raises instead of forcing when its flush times out, and a
    producer left running could deliver a message after it was rescued to the spool.
    """
    try:
        producer.close(timeout=timeout)
        return
    except KafkaError:
        pass
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(10)
    with contextlib.suppress(Exception):
        producer.close(timeout=0)
