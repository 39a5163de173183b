"""The keyed per-domain fetch operator: one logic per politeness key.

Keying by host (or registered domain) puts every URL of a host on one worker, so the host's
budget (P requests at once, T seconds between starts, Retry-After blocks) is enforced in one
place however many workers run. Bytewax has no async operator: each logic hands URLs to a
per-process aiohttp loop (``connectors.fetch.engine.FetchService``) and harvests what finished on
``notify_at`` ticks. The backlog beyond a small in-memory window waits in a spill file on disk,
so a million pending URLs cost disk, not RAM; the snapshot is the window, the in-flight jobs
and the spill file's two offsets, and on resume the spill file is cut back to its snapshot
length (so nothing is queued twice) and in-flight jobs are submitted again (at-least-once on
the wire; the ledger and content addressing make it exactly-once in the outputs).

Results go back to the hour's chunks as fetched media rows; the sealer merges them into the
hour's ``_media.csv.xz`` and the ``media`` view.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from bytewax.operators import StatefulBatchLogic

from connectors.fetch.store import query_copy
from connectors.ops import metrics
from connectors.store.chunks import write_chunk
from shoal import chunks, faults
from shoal.fetch.policy import FetchConfig, FetchResult, url_host

WINDOW = 500  # jobs kept in memory per key; the rest wait in the spill file
TICK = timedelta(milliseconds=100)


@dataclass(frozen=True, slots=True)
class MediaJob:
    platform: str
    start: int  # the post's hour
    row: dict[str, Any]  # the media row (MEDIA_COLUMNS)
    query: str = ""  # what found the post (a keyword, a hashtag), for {query} folders
    collector: str = ""


@dataclass(frozen=True, slots=True)
class MediaFact:
    """Hours that got fetched media rows: the sealer re-seals them (rate-limited)."""

    hours: tuple[tuple[str, int], ...]


@dataclass
class FetchSnapshot:
    window: list[tuple[Any, ...]]  # MediaJob fields (3-tuples from older snapshots)
    spill_read: int
    spill_size: int
    spill_path: str | None = None


def _template_meta(job: MediaJob) -> dict[str, Any]:
    """What ``--filename-template`` may name: the post's, and its hour (not the fetch's)."""
    hour = datetime.fromtimestamp(job.start, UTC)
    return {
        "platform": job.platform,
        "post_id": job.row["post_id"],
        "position": job.row["position"],
        "date": hour.strftime("%Y-%m-%d"),
        "hour": hour.strftime("%H"),
        "query": job.query,
        "collector": job.collector,
        "kind": job.row.get("type", ""),
    }


def _to_tuple(job: MediaJob) -> tuple[str, int, dict[str, Any], str, str]:
    # Snapshots and the spill file hold these; older 3-tuples still load (defaults).
    return (job.platform, job.start, job.row, job.query, job.collector)


class FetchLogic(StatefulBatchLogic[MediaJob, MediaFact, FetchSnapshot]):
    def __init__(
        self,
        data_dir: Path,
        config: FetchConfig,
        resume: FetchSnapshot | None,
        service_factory: Any,
    ):
        self.data_dir = data_dir
        self.config = config
        self.service = service_factory()
        self.window: deque[MediaJob] = deque()
        # URL -> the jobs waiting for it: a retweet and its original share media, and one
        # request serves them all.
        self.in_flight: dict[str, list[MediaJob]] = {}
        self.spill: Path | None = None
        self.spill_read = 0
        self.spill_size = 0
        self.done: dict[tuple[str, int], list[bytes]] = {}
        self.spilled = 0  # jobs in the spill file not read back yet
        self.host = ""  # this key's host, named in the pending-URLs metric
        if resume is not None:
            self.window.extend(MediaJob(*t) for t in resume.window)
            self.spill_read, self.spill_size = resume.spill_read, resume.spill_size
            if resume.spill_path:
                self.spill = Path(resume.spill_path)
                if self.spill.exists():
                    # Cut back to the snapshot: jobs spilled after it will be queued again.
                    with open(self.spill, "r+b") as fh:
                        fh.truncate(self.spill_size)
                        fh.seek(self.spill_read)
                        self.spilled = fh.read().count(b"\n")

    # -- queueing
    def _spill_path(self, job: MediaJob) -> Path:
        if self.spill is None:
            key = url_host(job.row["url"]) or "data"
            safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in key)[:80]
            folder = self.data_dir / "_work" / "media-queue"
            folder.mkdir(parents=True, exist_ok=True)
            self.spill = folder / f"{safe}.jsonl"
            self.spill.unlink(missing_ok=True)  # a fresh key: anything there is stale
            self.spill_read = self.spill_size = 0
        return self.spill

    def _enqueue(self, job: MediaJob) -> None:
        if len(self.window) < WINDOW and self.spill_read >= self.spill_size:
            self.window.append(job)
            return
        path = self._spill_path(job)
        line = orjson.dumps(_to_tuple(job)) + b"\n"
        with open(path, "ab") as fh:
            fh.write(line)
        self.spill_size += len(line)
        self.spilled += 1

    def _refill(self) -> None:
        if self.spill_read >= self.spill_size or len(self.window) >= WINDOW // 2:
            return
        if self.spill is None:
            return
        with open(self.spill, "rb") as fh:
            fh.seek(self.spill_read)
            while len(self.window) < WINDOW and self.spill_read < self.spill_size:
                line = fh.readline()
                if not line:
                    break
                self.spill_read += len(line)
                self.spilled -= 1
                self.window.append(MediaJob(*orjson.loads(line)))
        if self.spill_read >= self.spill_size:
            with open(self.spill, "r+b") as fh:
                fh.truncate(0)
            self.spill_read = self.spill_size = self.spilled = 0

    # -- work
    def _submit(self) -> None:
        self._refill()
        while self.window and self.service.capacity() > 0:
            job = self.window.popleft()
            url = job.row["url"]
            waiting = self.in_flight.get(url)
            if waiting is not None:
                waiting.append(job)
            else:
                self.in_flight[url] = [job]
                self.service.submit(url, url, _template_meta(job))
            self._refill()

    def _harvest(self, results: list[tuple[str, FetchResult]]) -> None:
        for url, res in results:
            for job in self.in_flight.pop(url, ()):
                self._done(job, res)
            faults.point("fetch")  # a result in hand, maybe not yet written anywhere

    def _done(self, job: MediaJob, res: FetchResult) -> None:
        path = query_copy(self.service.root, self.service.config, res, job.row["url"],
                          _template_meta(job))
        if path != res.path:  # the same URL for another query: its own folder's copy
            res = replace(res, path=path)
        row = {**job.row, **res.media_cells()}
        outcome = "ok" if res.ok else (res.error.split(":")[0] or "error")
        metrics.fetch_outcome(url_host(job.row["url"]) or "data", outcome)
        self.done.setdefault((job.platform, job.start), []).append(
            chunks.media_line(row)
        )

    def _write(self) -> list[MediaFact]:
        if not self.done:
            return []
        hours = []
        for (platform, start), lines in self.done.items():
            write_chunk(self.data_dir, platform, start, "media", lines)
            hours.append((platform, start))
        self.done.clear()
        return [MediaFact(tuple(sorted(hours)))]

    def on_batch(self, values: list[MediaJob]) -> tuple[Iterable[MediaFact], bool]:
        for job in values:
            self._enqueue(job)
        if values and not self.host:
            self.host = url_host(values[0].row["url"]) or "data"
        self._submit()
        self._report()
        return [], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[MediaFact], bool]:
        self._harvest(self.service.harvest())
        self._submit()
        self._report()
        facts = self._write()
        if self._idle():
            return facts, self._forget()
        return facts, StatefulBatchLogic.RETAIN

    def _idle(self) -> bool:
        return not (self.window or self.in_flight or self.done or self.spilled
                    or self.spill_read < self.spill_size or self.service.pending())

    def _forget(self) -> bool:
        """Nothing left to fetch from this key: drop the logic, so that the operator holds
        logics only for hosts with work (a keyword image search meets thousands of hosts,
        each fetched once). What it knew is not needed again: the host's gate lives in the
        shared engine (``FetchService.release``), so a URL of the host queued a moment later
        by a new logic still waits out the gap; the fetch ledger remembers what was stored.
        """
        self.service.release()
        if self.spill is not None:
            self.spill.unlink(missing_ok=True)
        return StatefulBatchLogic.DISCARD

    def _report(self) -> None:
        waiting = len(self.window) + sum(map(len, self.in_flight.values())) + self.spilled
        if self.host:
            metrics.fetch_pending(self.host, waiting)

    def notify_at(self) -> datetime | None:
        busy = self.window or self.in_flight or self.done or self.spill_read < self.spill_size
        return datetime.now(UTC) + TICK if busy else None

    def on_eof(self) -> tuple[Iterable[MediaFact], bool]:
        # The input is over (idle exit or replay end): finish every URL before exiting.
        while self.window or self.in_flight or self.spill_read < self.spill_size:
            self._submit()
            self._harvest(self.service.drain(timeout=0.5))
        # Nothing comes after the end of the input: the last key to finish stops the shared
        # engine (its HTTP session and loop thread) instead of leaving it to the exit.
        self.service.close()
        self._report()
        return self._write(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> FetchSnapshot:
        # Results harvested but not yet written must be on disk before this snapshot.
        self._write_pending_quietly()
        pending = [*(j for jobs in self.in_flight.values() for j in jobs), *self.window]
        if self.spill is not None and self.spill.exists():
            with open(self.spill, "rb") as fh:
                os.fsync(fh.fileno())
        return FetchSnapshot(
            [_to_tuple(j) for j in pending], self.spill_read, self.spill_size,
            str(self.spill) if self.spill else None,
        )

    def _write_pending_quietly(self) -> None:
        # Written chunks are found by the sealer on its next tick or at restart.
        for (platform, start), lines in self.done.items():
            write_chunk(self.data_dir, platform, start, "media", lines)
        self.done.clear()
