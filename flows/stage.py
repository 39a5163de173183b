"""The stage step: per Kafka partition, normalise each post, dedupe it within its open hour,
assign its hour and write its rows to the hour's chunks.

Every copy of a post carries the same Kafka key, so it lands in the same partition: keying the
step by partition dedupes across collectors and keeps one event-time clock per partition (a
single global clock would make a replay look late). Rows never live in Bytewax state: they go
to chunk files (``connectors.store.chunks``, format ``shoal.chunks``), flushed at every
snapshot so consumed offsets are never saved ahead of their rows.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bytewax.operators import StatefulBatchLogic

from connectors.kafka.source import Message
from connectors.ops import metrics
from connectors.store.chunks import write_chunk
from flows.config import FlowConfig
from flows.media import MediaJob
from shoal import chunks, faults
from shoal.hours import HOUR, hour_start, parse_iso, zone
from shoal.model import DEADLETTER_FORMAT, BadPost, DeadLetter
from shoal.names import safe_collector
from shoal.normalise import normalise


@dataclass(frozen=True, slots=True)
class ChunkFact:
    """A stage partition's news for the sealer: its watermark and the hours it wrote to."""

    partition: int
    watermark: int
    hours: tuple[tuple[str, int], ...]
    idle: bool = False


class _Copies:
    """What the stage wrote of one post in one hour: its contents and its collectors.

    A copy is left out (or written as a "seen" line) only when its content, the post, author
    and media rows, is one already written: merging it again could change nothing but the
    collectors. A copy with other content (another collector's retrieval time, updated
    counters) is written in full, so that the merge's rules (earliest retrieval, newest
    author stats) choose among every copy, whatever the stage happens to remember. Were it
    dropped, the result would depend on whether the first copy was still remembered, which
    the pruning at each flush (wall-clock timed), the cap on remembered posts and a crash
    decide: replays under load then differed from runs on a quiet machine.

    Nearly every post has one copy from one collector, so each field holds a single value
    until a second one comes (then a set): about 200 bytes a post with its key, where two
    sets from the start cost over 600.
    """

    __slots__ = ("collectors", "contents")

    def __init__(self, content: bytes, collector: str) -> None:
        self.contents: bytes | set[bytes] = content  # digests of _content
        self.collectors: str | set[str] = collector

    def take(self, content: bytes, collector: str) -> int:
        """Note a copy: 2 if its content is new (write it in full), 1 if only its collector
        is (write a "seen" line), 0 if neither (write nothing)."""
        if not _holds(self.contents, content):
            self.contents = _joined(self.contents, content)
            self.collectors = _joined(self.collectors, collector)
            return 2
        if not _holds(self.collectors, collector):
            self.collectors = _joined(self.collectors, collector)
            return 1
        return 0


def _holds(held: Any, value: Any) -> bool:
    return value in held if isinstance(held, set) else held == value


def _joined(held: Any, value: Any) -> Any:
    if isinstance(held, set):
        held.add(value)
        return held
    return held if held == value else {held, value}


def _content(raw: bytes, fmt: str, retrieved: str) -> bytes:
    """A digest of what a post line contributes to the merge, collector and late mark aside:
    its raw payload, its format and the retrieval time its rows are made with.

    The rows themselves (:func:`shoal.chunks.post_body`) need no place here: the normaliser
    is a pure function of these three, so two copies with the same three have the same
    rows, and two with different rows differ in one of them. Digesting the inputs rather
    than the encoded rows hashes half the bytes.
    A late mark needs no place either: every copy of a post lands in one partition, whose
    watermark only grows, so a copy after one already written is late if that one was, and
    its mark cannot matter if that one was on time (an on-time copy anywhere clears it).
    The raw payload is content: the merge picks the archived copy among every copy written,
    so two copies that differ only in their bytes must both reach it for the choice not to
    depend on which came first.
    """
    digest = hashlib.blake2b(raw, digest_size=16)
    digest.update(b"\0%s\0%s" % (fmt.encode(), retrieved.encode()))
    return digest.digest()


def _headers(msg: Message) -> dict[str, str]:
    try:  # shoal's own producers: every value is UTF-8 bytes
        return {k: v.decode() for k, v in msg.headers}
    except (AttributeError, UnicodeDecodeError):
        pass
    out = {}
    for k, v in msg.headers:
        if isinstance(v, bytes):
            out[k] = v.decode("utf-8", "backslashreplace")
        else:
            out[k] = "" if v is None else str(v)
    return out


# A post may be created this long after its retrieval time before it is called impossible
# (a dead letter): clocks differ, and a local time read as UTC is off by up to 14 hours.
FUTURE_SLACK = 24 * 3600


def _origin(msg: Message, topic: str) -> str:
    return f"{topic}/{msg.partition}/{msg.offset}"


StageSnapshot = tuple[int, int] | tuple[int, int, str]


class StageLogic(StatefulBatchLogic[list[Message], Any, StageSnapshot]):
    """Per Kafka partition: normalise, dedupe within open hours, write rows to chunks.

    Its state key is the partition's key of ``cfg.stage_keys`` (``flows.route``), which
    depends on the cluster's worker count. State resumed under a key that is no longer its
    partition's (the cluster was resized, or the store predates these keys) would sit there
    forever with nothing routed to it: it reports its watermark once, so that the sealers
    keep it, and is discarded. The partition's new state starts its clock afresh.
    """

    def __init__(self, cfg: FlowConfig, resume: StageSnapshot | None):
        self.cfg = cfg
        self.tz = zone(cfg.flow.tz)
        self.names: dict[str, str] = {}  # collector header -> the name reports use
        self.media_kinds = frozenset(cfg.media.media_types) if cfg.media.enabled else frozenset()
        # Bytewax does not hand the key to the builder; the first message tells it.
        self.partition, self.watermark = resume[:2] if resume else (-1, 0)
        # Before keys followed readers, the key was the partition's number.
        key = resume[2] if resume is not None and len(resume) > 2 else str(self.partition)
        self.retired = resume is not None and key != self._key()
        self.buffers: dict[tuple[str, int], list[bytes]] = {}
        self.buffered = 0
        self.counts: dict[str, int] = {}
        # What was written per open hour and post id. Only an optimisation: forgetting it
        # (pruned below, lost in a crash: it is never snapshotted) writes post lines where
        # "seen" lines would have done, and the merge makes the same files of either. So it
        # is also capped (``cfg.seen_posts``, oldest forgotten first): at 500 posts/s the
        # open hours hold millions of posts, and remembering them all would cost gigabytes.
        self.seen: dict[tuple[str, int], dict[str, _Copies]] = {}
        self.remembered = 0  # posts in ``seen``
        self.out: list[Any] = []
        self.written: set[tuple[str, int]] = set()
        self.reported_wm = -1
        self.idle = False
        self.reported_idle = False
        self.next_flush = datetime.now(UTC) + timedelta(seconds=cfg.flush_interval)

    # -- input
    def on_batch(self, values: list[list[Message]]) -> tuple[Iterable[Any], bool]:
        for polled in values:
            if polled:
                self.partition = polled[0].partition
            for msg in polled:
                if msg.is_idle_marker:
                    self.idle = True
                    self._flush()
                    continue
                self.idle = False
                self._take(msg)
        for collector, n in self.counts.items():  # one metrics update per poll, not per post
            metrics.posts_in(collector, n)
        self.counts.clear()
        if self.buffered >= self.cfg.chunk_rows:
            self._flush()
        return self._drain(), StatefulBatchLogic.RETAIN

    def _dead(self, msg: Message, reason: str, fmt: str = "", collector: str = "") -> None:
        metrics.dead()
        at = datetime.fromtimestamp(max(msg.timestamp_ms, 0) / 1000, UTC).replace(microsecond=0)
        self.out.append(DeadLetter(reason, _origin(msg, self.cfg.topic), msg.value or b"", fmt,
                                   collector, at.isoformat(),
                                   input=_headers(msg).get("source", "")))

    def _relayed(self, msg: Message, collector: str) -> None:
        """A dead letter a collector found: filed on disk like the flow's own."""
        metrics.dead()
        at = datetime.fromtimestamp(max(msg.timestamp_ms, 0) / 1000, UTC).replace(microsecond=0)
        try:
            rec = orjson.loads(msg.value or b"")
            letter = DeadLetter(str(rec["reason"]), str(rec["source"]), str(rec.get("raw", "")),
                                str(rec.get("format", "")), collector, at.isoformat(),
                                published=True, raw_bytes=int(rec.get("raw_bytes") or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            letter = DeadLetter(f"invalid dead-letter message: {exc}",
                                _origin(msg, self.cfg.topic), msg.value or b"", DEADLETTER_FORMAT,
                                collector, at.isoformat())
        self.out.append(letter)

    @staticmethod
    def _from_the_future(created: datetime, post: dict[str, Any], retrieved: str) -> bool:
        """Was the post created more than :data:`FUTURE_SLACK` after it was retrieved?

        Impossible, and harmful: the partition's event time would jump there, and every post
        of the hours between would count as late (and, live, hours would seal early). Asked
        only of a post that would move the event time that far ahead, so the hot path pays
        nothing: a parse of the retrieval time costs 2.5 µs, some 5 % of the stage.
        """
        try:
            got = parse_iso(str(post.get("retrieved_at") or retrieved))
        except ValueError:
            return False  # no retrieval time to judge by (partition_by retrieved says so)
        return int(created.timestamp()) > int(got.timestamp()) + FUTURE_SLACK

    def _take(self, msg: Message) -> None:
        h = _headers(msg)
        fmt = h.get("format", "")
        collector = self.names.get(h.get("collector", ""))
        if collector is None:
            # Another producer may send any header: encode what would break reports.
            collector = self.names[h.get("collector", "")] = safe_collector(
                h.get("collector", ""))
        if fmt == DEADLETTER_FORMAT:
            return self._relayed(msg, collector)
        self.counts[collector] = self.counts.get(collector, 0) + 1
        retrieved = h.get("retrieved_at") or datetime.fromtimestamp(
            max(msg.timestamp_ms, 0) / 1000, UTC
        ).replace(microsecond=0).isoformat()
        if not msg.value:
            return self._dead(msg, "empty message", fmt, collector)
        try:
            payload = orjson.loads(msg.value)
        except orjson.JSONDecodeError as exc:
            return self._dead(msg, f"invalid JSON: {exc}", fmt, collector)
        if not isinstance(payload, dict):
            return self._dead(msg, f"payload is a JSON {type(payload).__name__}, not an object",
                              fmt, collector)
        try:
            norm = normalise(fmt, payload, retrieved)
        except BadPost as exc:
            return self._dead(msg, str(exc), fmt, collector)
        except Exception as exc:  # a normaliser bug must not stop the stream: quarantine it
            return self._dead(msg, f"normaliser error: {type(exc).__name__}: {exc}", fmt, collector)
        when = norm.created_at
        if self.cfg.flow.partition_by == "retrieved":
            try:
                when = parse_iso(norm.post.get("retrieved_at") or retrieved)
            except ValueError:
                return self._dead(msg, f"bad retrieval time {retrieved!r}", fmt, collector)
        ts = int(when.timestamp())
        if ts > self.watermark + FUTURE_SLACK and self._from_the_future(norm.created_at,
                                                                       norm.post, retrieved):
            return self._dead(msg, f"created after it was retrieved: created_at "
                              f"{norm.created_at.isoformat()}, retrieved_at "
                              f"{norm.post.get('retrieved_at') or retrieved}", fmt, collector)
        if self.cfg.from_time and when < self.cfg.from_time:
            return None
        if self.cfg.until_time and when >= self.cfg.until_time:
            return None
        start = hour_start(when, self.tz)
        key = (norm.platform, start)
        # Late by this partition's own event time: a function of the message order alone,
        # so a replay or a restart after a crash counts exactly the same posts late.
        # A post rebuilt from the raw archive says so itself (``late`` header): it was late
        # when first processed, and a rebuild must count it the same.
        late = start + HOUR + self.cfg.flow.lateness <= self.watermark or "late" in h
        self.watermark = max(self.watermark, ts)
        seen = self.seen.setdefault(key, {})
        have = seen.get(norm.id)
        buf = self.buffers.setdefault(key, [])
        rows = [m.row() for m in norm.media]
        content = _content(msg.value, fmt, retrieved)
        if have is None:
            seen[norm.id] = _Copies(content, collector)
            self.remembered += 1
            if self.remembered > self.cfg.seen_posts + self.cfg.seen_posts // 4:
                self._forget()
            if rows and self.media_kinds:
                query = norm.post.get("query", "")
                self.out.extend(MediaJob(norm.platform, start, row, query, collector)
                                for m, row in zip(norm.media, rows, strict=True)
                                if m.type in self.media_kinds)
            news = 2
        else:
            news = have.take(content, collector)
        if news == 2:
            # One line per post, its author and media rows with it: the sealer decodes one
            # JSON document per post instead of three. The message value rides along for the
            # raw archive, spliced in as it came.
            body = chunks.post_body(norm.post, user=norm.user, media=rows, fmt=fmt,
                                    retrieved=retrieved)
            buf.append(chunks.line_of_body(collector, body, late=late, raw=msg.value))
            self.buffered += 1
        elif news == 1:
            buf.append(chunks.seen_line(norm.id, collector))
        return None

    def _forget(self) -> None:
        """Forget the posts remembered longest, down to ``cfg.seen_posts``: oldest hour
        first, and within an hour in the order they came. Called a quarter of the cap over
        it, so the copying costs O(1) a post."""
        self.remembered = sum(map(len, self.seen.values()))
        count = self.remembered - self.cfg.seen_posts
        for key in sorted(self.seen, key=lambda k: (k[1], k[0])):
            if count <= 0:
                break
            posts = self.seen[key]
            if len(posts) <= count:
                del self.seen[key]
                count -= len(posts)
                self.remembered -= len(posts)
            else:
                self.seen[key] = dict(itertools.islice(posts.items(), count, None))
                self.remembered -= count
                count = 0

    # -- output
    def _flush(self) -> None:
        for (platform, start), lines in self.buffers.items():
            if lines:
                write_chunk(self.cfg.data_dir, platform, start, f"p{self.partition}", lines)
                self.written.add((platform, start))
                faults.point("chunk")  # some chunks of this flush on disk, others not
        self.buffers.clear()
        self.buffered = 0
        news = self.watermark != self.reported_wm or self.idle != self.reported_idle
        if self.written or news:
            self.out.append(
                ChunkFact(self.partition, self.watermark, tuple(sorted(self.written)), self.idle)
            )
            self.written = set()
            self.reported_wm = self.watermark
            self.reported_idle = self.idle
        horizon = self.watermark - int(self.cfg.flow.lateness) - 2 * HOUR
        for key in [k for k in self.seen if k[1] + HOUR < horizon]:
            self.remembered -= len(self.seen.pop(key))
        self.next_flush = datetime.now(UTC) + timedelta(seconds=self.cfg.flush_interval)

    def _drain(self) -> list[Any]:
        out, self.out = self.out, []
        return out

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        self._flush()
        return self._drain(), self._fate()

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        self._flush()
        return self._drain(), self._fate()

    def _key(self) -> str:
        return self.cfg.stage_keys.get(self.partition, str(self.partition))

    def _fate(self) -> bool:
        return StatefulBatchLogic.DISCARD if self.retired else StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.next_flush

    def snapshot(self) -> StageSnapshot:
        # Rows already consumed must be on disk before the offsets past them are saved.
        self._flush()
        return (self.partition, self.watermark, self._key())
