"""Sealing hours in child processes, so the dataflow keeps consuming while hours are sealed.

Sealing (merge the chunks, write CSV, xz and Parquet) costs more CPU per post than everything
else the processor does; run inline it stalls the stream on one core while the machine's other
core idles. :class:`SealWorker` hands seals to a small pool of child processes. Nothing about
*what* is written changes: one hour is never sealed by two processes at once (a second request
waits for the first to finish), each seal publishes its own hour atomically, and what spans
hours (day reports, the report rows, the known collectors) is rewritten under
:func:`connectors.store.reports.reports_lock` by whichever seal commits last.

The child dies with its parent (``PR_SET_PDEATHSIG``), so a killed processor never leaves a
seal running behind a restarted one; and a crash the tests aim at a seal (``faults``) takes
the parent down with it, as a crashed machine would.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import MutableMapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from connectors.store.seal import refresh_id_lists, seal_hour
from shoal.gc_tune import tune_gc
from shoal.merge import HourSummary
from shoal.panics import unfiltered_stderr

_catalog: Any = None
MAX_RESTARTS = 3  # helpers lost by one run before it gives up
log = logging.getLogger("shoal.seal")


def _init_child(parent: int, log_level: str) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died while this child was starting
        os._exit(1)
    # Ctrl-C and `systemctl stop` signal the whole process group; the parent decides, and
    # lets the seal under way finish before it exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.environ["SHOAL_FAULT_KILLS_PARENT"] = "1"
    from shoal.logs import setup

    setup(log_level)
    tune_gc()


def _warm_up() -> None:
    import connectors.store.catalog  # noqa: F401


def _seal_in_child(data_dir: Path, platform: str, start: int,
                   tz: str) -> tuple[HourSummary | None, float]:
    """The seal's summary and the CPU the seal itself took: the caller paces re-seals by
    it, so the time spent waiting (in the pool's queue, for the reports lock another seal
    holds, for the disk) is left out."""
    global _catalog
    if _catalog is None:
        from connectors.store.catalog import Catalog

        _catalog = Catalog(data_dir)
    t0 = time.thread_time()
    summary = _seal_or_ids(data_dir, platform, start, tz, _catalog)
    return summary, time.thread_time() - t0


# Not an hour: the TikTok ID files' rewrite, queued like a seal (the same helpers, the same
# bookkeeping of what is in flight, the same restart when a helper is lost).
ID_LISTS = ("tiktok", -1)


def _seal_or_ids(data_dir: Path, platform: str, start: int, tz: str,
                 catalog: Any) -> HourSummary | None:
    if (platform, start) == ID_LISTS:
        refresh_id_lists(data_dir)
        return None
    # The ID files are the sealer's to rewrite, once its TikTok seals under way are over.
    return seal_hour(data_dir, platform, start, tz, catalog, id_lists=False, announce=True)


class SealWorker:
    """Seals hours in ``processes`` child processes, never one hour twice at the same time."""

    def __init__(self, data_dir: Path, tz: str, log_level: str = "info", processes: int = 2):
        self.data_dir = data_dir
        self.tz = tz
        self._log_level = log_level
        self._processes = processes
        self.restarts = 0
        self._running: dict[tuple[str, int], Future[tuple[HourSummary | None, float]]] = {}
        self._took: dict[tuple[str, int], float] = {}  # of seals done() returned, until took()
        self._again: deque[tuple[str, int]] = deque()  # asked while already being sealed
        self._start_pool()

    def _start_pool(self) -> None:
        processes = self._processes
        with unfiltered_stderr():
            self._pool = ProcessPoolExecutor(
                max_workers=processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_child,
                initargs=(os.getpid(), self._log_level),
            )
            # Start the children now (and inside ``unfiltered_stderr``): their imports take
            # a while, and the first hour should not wait for them.
            for _ in range(processes):
                self._pool.submit(_warm_up)
        # The helpers, for _restart: a broken pool only sends SIGTERM to the helpers that
        # survived, which they ignore (see _init_child). The executor forgets this dict at
        # shutdown; its own thread and this reference keep it.
        self._helpers: MutableMapping[int, Any] = self._pool._processes or {}

    def submit(self, platform: str, start: int) -> None:
        key = (platform, start)
        if key in self._running:
            if key not in self._again:
                self._again.append(key)
            return
        try:
            self._running[key] = self._pool.submit(
                _seal_in_child, self.data_dir, platform, start, self.tz)
        except BrokenProcessPool as exc:  # a helper vanished while idle
            self._restart(exc, key)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def in_flight(self) -> set[tuple[str, int]]:
        return set(self._running) | set(self._again)

    def done(self, wait: bool = False) -> list[tuple[tuple[str, int], HourSummary | None]]:
        """Finished seals (all of them with ``wait``); a seal's exception is raised here."""
        out = []
        while self._running:
            finished = [k for k, fut in self._running.items() if fut.done()]
            if not finished:
                if not wait:
                    break
                wait_for(list(self._running.values()), return_when=FIRST_COMPLETED)
                continue
            for key in finished:
                try:
                    summary, took = self._running[key].result()
                except BrokenProcessPool as exc:
                    # Every seal under way broke with the pool: they are all submitted again
                    # to new helpers, and ``finished`` now names futures of the old pool.
                    # Look again rather than wait here on a seal the new pool only started.
                    self._restart(exc)
                    break
                del self._running[key]
                self._took[key] = took
                out.append((key, summary))
            for key in [k for k in self._again if k not in self._running]:
                self._again.remove(key)
                self.submit(*key)
        return out

    def took(self, key: tuple[str, int]) -> float | None:
        """CPU seconds the last seal of ``key`` that :meth:`done` returned took, once."""
        return self._took.pop(key, None)

    def _restart(self, exc: BrokenProcessPool, key: tuple[str, int] | None = None) -> None:
        """A helper vanished (killed from outside, out of memory): start new helpers and seal
        again what the old ones had not finished. Sealing is idempotent and staged (a seal cut
        off before its COMMIT left the old files), so redoing it is safe. A seal that ended
        before the break keeps its result (``done`` returns it, or raises its own exception:
        that is not retried). ``key``: a seal the broken pool refused to take."""
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            raise exc
        kept = {k: fut for k, fut in self._running.items()
                if fut.done() and not isinstance(fut.exception(), BrokenProcessPool)}
        lost = [k for k in self._running if k not in kept]
        if key is not None:
            lost.append(key)
        log.warning("seal helper lost; restarting the helpers and sealing again",
                    extra={"fields": {"hours": [list(k) for k in lost], "error": str(exc),
                                      "restart": self.restarts}})
        self._running = kept
        self._pool.shutdown(wait=False, cancel_futures=True)
        # A helper that survived the break may still be sealing an hour that is about to be
        # sealed again: two seals of one hour share its staging folder. Stop it first (it
        # is staged: a seal cut off anywhere leaves the hour whole).
        survivors = list(self._helpers.values())
        for helper in survivors:
            helper.kill()
        for helper in survivors:
            helper.join(timeout=30)
        self._start_pool()
        for again in lost:
            self.submit(*again)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class InlineSealer:
    """:class:`SealWorker`'s interface, sealing in the caller's thread (no helper process)."""

    busy = False  # a seal is over by the time submit returns

    def __init__(self, data_dir: Path, tz: str):
        from connectors.store.catalog import Catalog

        self.data_dir = data_dir
        self.tz = tz
        self._catalog = Catalog(data_dir)
        self._done: list[tuple[tuple[str, int], HourSummary | None]] = []
        self._took: dict[tuple[str, int], float] = {}

    def submit(self, platform: str, start: int) -> None:
        t0 = time.thread_time()  # this thread's CPU, as in a helper (see _seal_in_child)
        summary = _seal_or_ids(self.data_dir, platform, start, self.tz, self._catalog)
        self._took[(platform, start)] = time.thread_time() - t0
        self._done.append(((platform, start), summary))

    def took(self, key: tuple[str, int]) -> float | None:
        return self._took.pop(key, None)

    def in_flight(self) -> set[tuple[str, int]]:
        return set()

    def done(self, wait: bool = False) -> list[tuple[tuple[str, int], HourSummary | None]]:
        out, self._done = self._done, []
        return out

    def close(self) -> None:
        self._catalog.close()
