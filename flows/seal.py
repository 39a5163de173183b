"""The seal step: a few logics (shards) share the hours, decide which are done and seal them.

Each shard sees every stage partition's watermark and seals an hour of its own once the
slowest partition that still has data is past the hour's end plus the allowed lateness (or
at the end of the input). The hours are dealt to shards by :func:`flows.route.shard_of`, and
each shard's key lands on a worker of its own (:func:`flows.route.shard_keys`), so a cluster
seals on all its machines. The sealing itself (merge, compress, Parquet) runs in each
shard's helper processes (``connectors.store.seal_worker``), one hour never twice at once:
an hour belongs to one shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from connectors.ops import metrics
from connectors.store.chunks import pending_hours
from connectors.store.reports import stamp_seal
from connectors.store.seal import announced, recover_staged, unannounced
from connectors.store.seal_worker import ID_LISTS, InlineSealer, SealWorker
from flows.config import FlowConfig
from flows.media import MediaFact
from flows.route import shard_of
from flows.stage import ChunkFact
from shoal.hours import HOUR
from shoal.merge import HourSummary

log = logging.getLogger("shoal.flow")

# A sealed hour that gets more rows (fetched media, late posts) is sealed again, whole: at
# most every ``reseal_interval``, and never sooner than this many times the CPU its last seal
# took (a seal that waited for the reports lock or the disk is not held back for it).
# An hour of the 1% sample (180,000 posts) takes some 20 s to seal; redone every 10 s while
# its media trickle in for days, it would keep a helper busy for ever. Waiting ten times the
# seal's cost keeps re-sealing any hour within a tenth of a helper's time, whatever its size.
RESEAL_COST_FACTOR = 10.0
RESEAL_HOLD_MAX = 1800.0  # a big hour's media still reach its files within half an hour
# The TikTok ID files wait for a pause in the shard's TikTok seals, but never longer than
# this (nor than ten times their last rewrite took): helpers kept busy by re-seals of many
# hours would otherwise hold them back for as long as a media backlog lasts.
ID_LISTS_MAX_AGE = 60.0


def reseal_hold(interval: float, seal_seconds: float) -> float:
    """How long after its last seal an hour may be sealed again (see RESEAL_COST_FACTOR)."""
    return max(interval, min(RESEAL_COST_FACTOR * seal_seconds, RESEAL_HOLD_MAX))


Fact = ChunkFact | MediaFact


def fan_out(fact: Fact, keys: tuple[str, ...]) -> list[tuple[str, tuple[int, int, Fact]]]:
    """A fact for every shard (``(key, (shard, shards, fact))``), each with its own hours.

    Watermarks go to every shard (each decides when its hours are done); an hour goes only
    to its shard, and a media fact only where it has hours.
    """
    shards = len(keys)
    if shards == 1:
        return [(keys[0], (0, 1, fact))]
    out: list[tuple[str, tuple[int, int, Fact]]] = []
    for i, key in enumerate(keys):
        hours = tuple(h for h in fact.hours if shard_of(h[0], h[1], shards) == i)
        if isinstance(fact, MediaFact):
            if hours:
                out.append((key, (i, shards, MediaFact(hours))))
        else:
            out.append((key, (i, shards, ChunkFact(fact.partition, fact.watermark, hours,
                                                   fact.idle))))
    return out


class SealLogic(StatefulBatchLogic[tuple[int, int, Fact], HourSummary, dict[str, Any]]):
    """One shard of the sealing: decides which of its hours are done and seals them.

    Bytewax does not tell a logic its key: the shard is learnt from the first fact (or the
    snapshot), and nothing on disk is touched before, since another shard's hours are not
    this one's to recover or seal.
    """

    def __init__(self, cfg: FlowConfig, resume: dict[Any, Any] | None):
        self.cfg = cfg
        state = dict(resume or {})
        if "part_wm" not in state:  # a snapshot from before shards: {partition: watermark}
            state = {"part_wm": state, "shard": None, "shards": 1 if state else None}
        self.part_wm: dict[int, int] = {int(p): wm for p, wm in state["part_wm"].items()}
        self.shard: int | None = state["shard"]
        self.shards: int | None = state["shards"]
        self.idle: set[int] = set()
        self.open: set[tuple[str, int]] = set()
        # hour -> when its last seal started, and how long until it may start again
        self.last_sealed: dict[tuple[str, int], tuple[float, float]] = {}
        self._prune_at = 64  # last_sealed's size that prunes it (doubling: O(1) a seal)
        self.started: dict[tuple[str, int], float] = {}
        # A TikTok hour was sealed since the ID files were last rewritten. They are rewritten
        # once none of this shard's TikTok seals is under way: each rewrite reads every
        # TikTok hour sealed so far, so one per seal made a replay of n hours cost n^2.
        self.ids_due: float | None = None  # since when (monotonic)
        self.ids_hold = ID_LISTS_MAX_AGE
        self.sealer: SealWorker | InlineSealer | None = None
        self.unannounced: list[HourSummary] = []
        # A shard of another sharding (the shard count changed since the snapshot) owns
        # nothing now: its hours belong to the new shards. It lets go of its state at once.
        self.retired = self.shards is not None and self.shards != (
            cfg.flow.seal_shards or cfg.cluster_workers)
        if self.shard is not None and self.shards is not None and not self.retired:
            self._begin(self.shard, self.shards)

    def _begin(self, shard: int, shards: int) -> None:
        """Learn the shard; recover its half-done seals and find its hours left on disk."""
        self.shard, self.shards = shard, shards
        self.retired = False
        recover_staged(self.cfg.data_dir, self._mine)
        self.open = self._pending()
        # Seals a previous run committed but was killed before announcing: announce them now.
        self.unannounced = unannounced(self.cfg.data_dir, self._mine)
        cfg = self.cfg
        if cfg.flow.seal_processes > 0:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
            self.sealer = SealWorker(cfg.data_dir, cfg.flow.tz, level, cfg.flow.seal_processes)
        else:
            self.sealer = InlineSealer(cfg.data_dir, cfg.flow.tz)

    def _mine(self, platform: str, start: int) -> bool:
        return shard_of(platform, start, self.shards or 1) == self.shard

    def _pending(self) -> set[tuple[str, int]]:
        return {h for h in pending_hours(self.cfg.data_dir) if self._mine(*h)}

    def on_batch(
        self, values: list[tuple[int, int, Fact]]
    ) -> tuple[Iterable[HourSummary], bool]:
        for shard, shards, fact in values:
            if self.sealer is None or (shard, shards) != (self.shard, self.shards):
                if self.sealer is not None:  # resumed with another shard count
                    self.sealer.close()
                self._begin(shard, shards)
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
        assert self.sealer is not None
        if self.open:
            threshold = self._threshold()
            now = time.monotonic()
            busy = self.sealer.in_flight()
            for platform, start in sorted(self.open, key=lambda k: (k[1], k[0])):
                key = (platform, start)
                last = self.last_sealed.get(key)
                if not everything and (
                    key in busy or (last is not None and now - last[0] < last[1])
                ):
                    continue  # redone soon enough: late posts and fetched media are batched
                if everything or start + HOUR <= threshold:
                    hold = last[1] if last is not None else self.cfg.reseal_interval
                    self.last_sealed[key] = (now, hold)
                    self.open.discard(key)
                    self._start(platform, start)
            if len(self.last_sealed) > self._prune_at:
                # Only the hours sealed within the interval matter; a processor that runs
                # for months would otherwise keep one entry per hour it ever sealed.
                self.last_sealed = {k: (t, hold) for k, (t, hold) in self.last_sealed.items()
                                    if now - t < hold}
                self._prune_at = max(64, 2 * len(self.last_sealed))
        return self._finished(wait=everything)

    def _start(self, platform: str, start: int) -> None:
        assert self.sealer is not None
        self.started[(platform, start)] = time.perf_counter()
        self.sealer.submit(platform, start)

    def _finished(self, wait: bool) -> list[HourSummary]:
        assert self.sealer is not None
        done = self._reap(wait)
        busy = self.sealer.in_flight()
        if self.ids_due is not None and ID_LISTS not in busy and (
                not any(p == "tiktok" for p, _ in busy)
                or time.monotonic() - self.ids_due >= self.ids_hold):
            # Every shard rewrites after its own last TikTok seal, and a rewrite reads what
            # every seal committed before it: whoever rewrites last has seen every hour.
            self.ids_due = None
            self.sealer.submit(*ID_LISTS)
            if wait:
                done += self._reap(wait)
        return done

    def _reap(self, wait: bool) -> list[HourSummary]:
        assert self.sealer is not None
        done = []
        for left in self.unannounced:
            self._announce(left)
            done.append(left)
        self.unannounced = []
        for (platform, start), summary in self.sealer.done(wait):
            t0 = self.started.pop((platform, start), time.perf_counter())
            took = self.sealer.took((platform, start))
            if (platform, start) == ID_LISTS and took is not None:
                self.ids_hold = max(ID_LISTS_MAX_AGE, RESEAL_COST_FACTOR * took)
            if summary is None:
                continue
            if platform == "tiktok" and self.ids_due is None:
                self.ids_due = time.monotonic()
            seconds = time.perf_counter() - t0 if took is None else took
            # The next seal of this hour waits in proportion (from when this one began; if
            # that was pruned meanwhile, from now).
            began = self.last_sealed.get((platform, start))
            self.last_sealed[(platform, start)] = (
                time.monotonic() if began is None else began[0],
                reseal_hold(self.cfg.reseal_interval, seconds))
            done.append(summary)
            self._announce(summary)
            # One info line per hour: re-seals (late posts, fetched media) are routine and
            # frequent, so they are debug lines (and a metric).
            log.log(
                logging.DEBUG if summary.resealed else logging.INFO,
                "hour resealed" if summary.resealed else "hour sealed",
                extra={"fields": {
                    "platform": platform, "day": summary.day, "hour": summary.label,
                    "total": summary.total, "late": summary.late,
                    "resealed": summary.resealed,
                    "seconds": round(seconds, 3),
                }},
            )
        return done

    def _announce(self, summary: HourSummary) -> None:
        """Tell the world an hour was sealed (stamp, metrics, hooks and alerts), then forget
        the seal's marker: a kill before this point announces it again at the next start."""
        stamp_seal(self.cfg.data_dir, summary.platform, summary.day)
        metrics.hour_sealed(summary)
        if self.cfg.on_sealed is not None:
            self.cfg.on_sealed(summary)
        announced(self.cfg.data_dir, summary.platform, summary.start)

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
        if self.retired:
            return (), StatefulBatchLogic.DISCARD
        if self.sealer is None:
            return (), StatefulBatchLogic.RETAIN
        # Chunks written at a snapshot, or by a run that crashed, are found on disk.
        self.open |= self._pending()
        return self._seal(everything=False), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.retired:
            return datetime.now(UTC)
        if self.sealer is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=0.1 if self.sealer.busy else 1.0)

    def on_eof(self) -> tuple[Iterable[HourSummary], bool]:
        if self.retired:
            return (), StatefulBatchLogic.DISCARD
        if self.sealer is None:
            return (), StatefulBatchLogic.RETAIN
        self.open |= self._pending()
        if self.cfg.flow.idle_exit is not None or self.cfg.end_offsets:
            done = self._seal(everything=True)
        else:
            done = self._finished(wait=True)  # Ctrl-C: let the seals under way finish
        self.sealer.close()
        return done, StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return {"part_wm": dict(self.part_wm), "shard": self.shard, "shards": self.shards}
