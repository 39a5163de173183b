"""The seal step: one logic for the whole flow decides which hours are done and seals them.

It sees every stage partition's watermark and seals an hour once the slowest partition that
still has data is past the hour's end plus the allowed lateness (or at the end of the input).
The sealing itself (merge, compress, Parquet) runs in helper processes
(``connectors.store.seal_worker``), one hour never twice at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from connectors.ops import metrics
from connectors.store.chunks import pending_hours
from connectors.store.reports import stamp_seal
from connectors.store.seal import recover_staged
from connectors.store.seal_worker import InlineSealer, SealWorker
from flows.config import FlowConfig
from flows.media import MediaFact
from flows.stage import ChunkFact
from shoal.hours import HOUR
from shoal.merge import HourSummary

log = logging.getLogger("shoal.flow")


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
        if cfg.flow.seal_processes > 0:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
            self.sealer = SealWorker(cfg.data_dir, cfg.flow.tz, level, cfg.flow.seal_processes)
        else:
            self.sealer = InlineSealer(cfg.data_dir, cfg.flow.tz)

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
            # One info line per hour: re-seals (late posts, fetched media) are routine and
            # frequent, so they are debug lines (and a metric).
            log.log(
                logging.DEBUG if summary.resealed else logging.INFO,
                "hour resealed" if summary.resealed else "hour sealed",
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
        return clock - self.cfg.flow.lateness

    def on_notify(self) -> tuple[Iterable[HourSummary], bool]:
        # Chunks written at a snapshot, or by a run that crashed, are found on disk.
        self.open |= pending_hours(self.cfg.data_dir)
        return self._seal(everything=False), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=0.1 if self.sealer.busy else 1.0)

    def on_eof(self) -> tuple[Iterable[HourSummary], bool]:
        self.open |= pending_hours(self.cfg.data_dir)
        if self.cfg.flow.idle_exit is not None or self.cfg.end_offsets:
            done = self._seal(everything=True)
        else:
            done = self._finished(wait=True)  # Ctrl-C: let the seals under way finish
        self.sealer.close()
        return done, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[int, int]:
        return dict(self.part_wm)
