"""The shoal dataflow, top to bottom.

    shoal.posts (Kafka) -> parse and normalise -> dedupe by (platform, id) within each Kafka
    partition and assign the hour -> write the hour's rows to chunks -> seal hours the stream
    has moved past (merge chunks into hourly xz files and Parquet) -> log what was sealed

Every copy of a post carries the same Kafka key, so it lands in the same partition: keying the
stage step by partition dedupes across collectors and keeps one event-time clock per partition
(a single global clock would make a replay look late). The seal step sees every partition's
watermark and seals an hour once the slowest partition is past the hour's end plus the allowed
lateness. Rows never live in Bytewax state; only offsets and watermarks are snapshotted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from threading import Event
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from connectors.kafka.publisher import POSTS_TOPIC
from connectors.kafka.source import Message, PostsSource, list_partitions
from connectors.ops import metrics
from connectors.store.catalog import Catalog
from connectors.store.deadletters import DeadLetterSink
from connectors.store.hourly_files import (
    HourSummary,
    pending_hours,
    recover_staged,
    stamp_seal,
    write_chunk,
)
from connectors.store.seal_worker import InlineSealer, SealWorker
from flows.media import FetchLogic, MediaFact, MediaJob
from shoal import faults
from shoal.fetch.policy import FetchConfig, key_for
from shoal.hours import HOUR, hour_start, parse_iso, zone
from shoal.model import BadPost, DeadLetter
from shoal.normalise import normalise
from shoal.panics import rust_panics_hidden

log = logging.getLogger("shoal.flow")


@dataclass
class FlowConfig:
    data_dir: Path
    brokers: str
    topic: str = POSTS_TOPIC
    tz: str = "UTC"
    partition_by: str = "created"  # or "retrieved"
    lateness: float = 300.0
    idle_exit: float | None = None
    producers_done: Event | None = None
    flush_interval: float = 1.0
    chunk_rows: int = 50_000
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    from_time: datetime | None = None
    until_time: datetime | None = None
    deadletter_topic: bool = True
    partitions: int = 0  # of the topic; filled in by build_flow
    on_sealed: Callable[[HourSummary], None] | None = None
    media: bool = True
    media_types: frozenset[str] = frozenset({"photo", "video", "gif"})
    fetch: FetchConfig | None = None
    reseal_interval: float = 10.0  # a sealed hour is redone at most this often (late, media)
    seal_processes: int = 2  # helper processes sealing hours (store.seal_worker); 0: inline


@dataclass(frozen=True, slots=True)
class ChunkFact:
    """A stage partition's news for the sealer: its watermark and the hours it wrote to."""

    partition: int
    watermark: int
    hours: tuple[tuple[str, int], ...]
    idle: bool = False


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


def _origin(msg: Message, topic: str) -> str:
    return f"{topic}/{msg.partition}/{msg.offset}"


class StageLogic(StatefulBatchLogic[list[Message], Any, tuple[int, int]]):
    """Per Kafka partition: normalise, dedupe within open hours, write rows to chunks."""

    def __init__(self, cfg: FlowConfig, resume: tuple[int, int] | None):
        self.cfg = cfg
        self.tz = zone(cfg.tz)
        # Bytewax does not hand the key to the builder; the first message tells it.
        self.partition, self.watermark = resume or (-1, 0)
        self.buffers: dict[tuple[str, int], list[bytes]] = {}
        self.buffered = 0
        self.counts: dict[str, int] = {}
        self.seen: dict[tuple[str, int], dict[str, set[str]]] = {}
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
                                   collector, at.isoformat()))

    def _take(self, msg: Message) -> None:
        h = _headers(msg)
        fmt, collector = h.get("format", ""), h.get("collector", "unknown")
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
        if self.cfg.partition_by == "retrieved":
            try:
                when = parse_iso(norm.post.get("retrieved_at") or retrieved)
            except ValueError:
                return self._dead(msg, f"bad retrieval time {retrieved!r}", fmt, collector)
        ts = int(when.timestamp())
        if self.cfg.from_time and when < self.cfg.from_time:
            return None
        if self.cfg.until_time and when >= self.cfg.until_time:
            return None
        start = hour_start(when, self.tz)
        key = (norm.platform, start)
        # Late by this partition's own event time: a function of the message order alone,
        # so a replay or a restart after a crash counts exactly the same posts late.
        late = start + HOUR + self.cfg.lateness <= self.watermark
        self.watermark = max(self.watermark, ts)
        seen = self.seen.setdefault(key, {})
        have = seen.get(norm.id)
        buf = self.buffers.setdefault(key, [])
        if have is None:
            seen[norm.id] = {collector}
            # One line per post, its author and media rows with it: the sealer decodes one
            # JSON document per post instead of three.
            rec: dict[str, Any] = {"k": "p", "c": collector, "r": norm.post}
            if late:
                rec["l"] = 1
            if norm.user:
                rec["u"] = norm.user
            if norm.media:
                rows = [m.row() for m in norm.media]
                rec["m"] = rows
                if self.cfg.media:
                    wanted = self.cfg.media_types
                    self.out.extend(MediaJob(norm.platform, start, row)
                                    for m, row in zip(norm.media, rows, strict=True)
                                    if m.type in wanted)
            buf.append(_line(rec))
            self.buffered += 1
        elif collector not in have:
            have.add(collector)
            buf.append(_line({"k": "s", "id": norm.id, "c": collector}))
        return None

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
        horizon = self.watermark - int(self.cfg.lateness) - 2 * HOUR
        for key in [k for k in self.seen if k[1] + HOUR < horizon]:
            del self.seen[key]
        self.next_flush = datetime.now(UTC) + timedelta(seconds=self.cfg.flush_interval)

    def _drain(self) -> list[Any]:
        out, self.out = self.out, []
        return out

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        self._flush()
        return self._drain(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        self._flush()
        return self._drain(), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.next_flush

    def snapshot(self) -> tuple[int, int]:
        # Rows already consumed must be on disk before the offsets past them are saved.
        self._flush()
        return (self.partition, self.watermark)


def _line(rec: dict[str, Any]) -> bytes:
    data = orjson.dumps(rec)
    if b"\\u0000" in data:  # NUL bytes break CSV readers downstream
        data = data.replace(b"\\u0000", b"\\ufffd")
    return data + b"\n"


class SealLogic(StatefulBatchLogic[ChunkFact | MediaFact, HourSummary, dict[int, int]]):
    """One instance for the whole flow: decides which hours are done and seals them."""

    def __init__(self, cfg: FlowConfig, resume: dict[int, int] | None):
        self.cfg = cfg
        self.part_wm: dict[int, int] = dict(resume or {})
        self.idle: set[int] = set()
        recover_staged(cfg.data_dir)
        self.open: set[tuple[str, int]] = pending_hours(cfg.data_dir)
        self.last_sealed: dict[tuple[str, int], float] = {}
        self.started: dict[tuple[str, int], float] = {}
        self.sealer: SealWorker | InlineSealer
        if cfg.seal_processes > 0:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
            self.sealer = SealWorker(cfg.data_dir, cfg.tz, level, cfg.seal_processes)
        else:
            self.sealer = InlineSealer(cfg.data_dir, cfg.tz)

    def on_batch(
        self, values: list[ChunkFact | MediaFact]
    ) -> tuple[Iterable[HourSummary], bool]:
        for fact in values:
            if isinstance(fact, MediaFact):
                self.open.update(fact.hours)
                continue
            self.part_wm[fact.partition] = max(self.part_wm.get(fact.partition, 0), fact.watermark)
            self.open.update(fact.hours)
            if fact.idle:
                self.idle.add(fact.partition)
            else:
                self.idle.discard(fact.partition)
        return self._seal(everything=False), StatefulBatchLogic.RETAIN

    def _seal(self, everything: bool) -> list[HourSummary]:
        """Start the seals that are due; return those that finished (all of them at the end)."""
        if self.open:
            threshold = self._threshold()
            now = time.monotonic()
            busy = self.sealer.in_flight()
            for platform, start in sorted(self.open, key=lambda k: (k[1], k[0])):
                key = (platform, start)
                last = self.last_sealed.get(key)
                if not everything and (
                    key in busy
                    or (last is not None and now - last < self.cfg.reseal_interval)
                ):
                    continue  # redone soon enough: late posts and fetched media are batched
                if everything or start + HOUR <= threshold:
                    self.last_sealed[key] = now
                    self.open.discard(key)
                    self._start(platform, start)
        return self._finished(wait=everything)

    def _start(self, platform: str, start: int) -> None:
        self.started[(platform, start)] = time.perf_counter()
        self.sealer.submit(platform, start)

    def _finished(self, wait: bool) -> list[HourSummary]:
        done = []
        for (platform, start), summary in self.sealer.done(wait):
            t0 = self.started.pop((platform, start), time.perf_counter())
            if summary is None:
                continue
            done.append(summary)
            stamp_seal(self.cfg.data_dir, summary.platform, summary.day)
            metrics.hour_sealed(summary)
            if self.cfg.on_sealed is not None:
                self.cfg.on_sealed(summary)
            log.info(
                "hour sealed",
                extra={"fields": {
                    "platform": platform, "day": summary.day, "hour": summary.label,
                    "total": summary.total, "late": summary.late,
                    "resealed": summary.resealed,
                    "seconds": round(time.perf_counter() - t0, 3),
                }},
            )
        return done

    def _threshold(self) -> float:
        """Event time up to which every hour is complete, as far as the stream can tell.

        The slowest partition that still has data decides; caught-up partitions do not hold
        anything back. Until every partition has spoken, nothing is complete.
        """
        if len(self.part_wm) < self.cfg.partitions:
            return float("-inf")
        busy = [wm for p, wm in self.part_wm.items() if p not in self.idle]
        clock = min(busy) if busy else max(self.part_wm.values())
        return clock - self.cfg.lateness

    def on_notify(self) -> tuple[Iterable[HourSummary], bool]:
        # Chunks written at a snapshot, or by a run that crashed, are found on disk.
        self.open |= pending_hours(self.cfg.data_dir)
        return self._seal(everything=False), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=0.1 if self.sealer.busy else 1.0)

    def on_eof(self) -> tuple[Iterable[HourSummary], bool]:
        self.open |= pending_hours(self.cfg.data_dir)
        if self.cfg.idle_exit is not None or self.cfg.end_offsets:
            done = self._seal(everything=True)
        else:
            done = self._finished(wait=True)  # Ctrl-C: let the seals under way finish
        self.sealer.close()
        return done, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[int, int]:
        return dict(self.part_wm)


def build_flow(cfg: FlowConfig) -> Dataflow:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    Catalog(cfg.data_dir).ensure()
    cfg.partitions = len(list_partitions(cfg.brokers, cfg.topic))
    flow = Dataflow("shoal")
    msgs = op.input(
        "posts-in",
        flow,
        PostsSource(
            cfg.brokers,
            cfg.topic,
            idle_exit=cfg.idle_exit,
            producers_done=cfg.producers_done,
            start_offsets=cfg.start_offsets,
            end_offsets=cfg.end_offsets,
        ),
    )
    # The source's items are already keyed by partition: one item is one poll's messages.
    staged = op.stateful_batch("stage", msgs, lambda resume: StageLogic(cfg, resume))
    outputs = op.map("drop-key", staged, lambda kv: kv[1])
    dead = op.branch("dead-or-not", outputs, lambda x: isinstance(x, DeadLetter))
    op.output("dead-letters", dead.trues, DeadLetterSink(
        cfg.data_dir, cfg.brokers if cfg.deadletter_topic else None))
    facts_or_jobs = op.branch("facts-or-media", dead.falses, lambda x: isinstance(x, ChunkFact))
    facts: Any = facts_or_jobs.trues
    if cfg.media:
        fetch_cfg = cfg.fetch or FetchConfig()
        by_host = op.key_on("by-host", facts_or_jobs.falses,
                            lambda job: key_for(job.row["url"], fetch_cfg))

        def fetch_service() -> Any:
            from connectors.fetch.engine import FetchService

            return FetchService(cfg.data_dir, fetch_cfg, max_pending=64)

        fetched = op.stateful_batch(
            "fetch", by_host,
            lambda resume: FetchLogic(cfg.data_dir, fetch_cfg, resume, fetch_service),
        )
        facts = op.merge("facts", facts, op.map("media-facts", fetched, lambda kv: kv[1]))
    to_sealer = op.key_on("to-sealer", facts, lambda _f: "sealer")
    sealed = op.stateful_batch("seal", to_sealer, lambda resume: SealLogic(cfg, resume))
    op.inspect("sealed", sealed, lambda _s, _x: None)
    return flow


def run(
    cfg: FlowConfig,
    workers: int = 1,
    recovery: bool = True,
    epoch_seconds: float = 5.0,
    recovery_dir: Path | None = None,
    backup_seconds: float = 0.0,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> None:
    """Run the dataflow in this process until its input ends (idle exit) or Ctrl-C.

    With recovery (the default) Bytewax keeps offsets and watermarks in ``DIR/_recovery``:
    a data dir it has never seen starts from the beginning of the topic, a known one resumes
    where it stopped.

    With ``addresses`` (every process's ``host:port``) and ``process_id`` this process is one
    of a Bytewax cluster: Kafka partitions are shared out among all the cluster's workers,
    and one of them seals. Every process must see the same DIR (one machine, or storage
    shared by all), and all of them are started, stopped and restarted together.
    """
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig, init_db_dir

    flow = build_flow(cfg)
    recovery_config = None
    if recovery:
        db = recovery_dir or cfg.data_dir / "_recovery"
        if not db.exists():
            # Processes of one cluster may all find it missing at once: one rename wins.
            tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            init_db_dir(tmp, 1)
            try:
                tmp.rename(db)
            except OSError:
                if not db.exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        recovery_config = RecoveryConfig(str(db), timedelta(seconds=backup_seconds))
    # An operator's exception reaches the caller chained; Rust's panic report about it would
    # only bury the one line the CLI prints.
    with rust_panics_hidden():
        cli_main(
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=epoch_seconds),
            recovery_config=recovery_config,
        )
