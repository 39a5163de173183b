"""Sealing hours in a child process, so the dataflow keeps consuming while an hour is sealed.

Sealing (merge the chunks, write CSV, xz and Parquet) costs about as much CPU as everything
else the processor does per post; run inline it stalls the stream on one core while the
machine's other core idles. :class:`SealWorker` hands each seal to one child process, in
order, so nothing about *what* is written changes: seals stay sequential, in one place, and
every crash guarantee of :func:`connectors.hourly_files.seal_hour` holds as before.

The child dies with its parent (``PR_SET_PDEATHSIG``), so a killed processor never leaves a
seal running behind a restarted one; and a crash the tests aim at a seal (``faults``) takes
the parent down with it, as a crashed machine would.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from connectors.hourly_files import HourSummary, seal_hour
from shoal.gc_tune import tune_gc

_catalog: Any = None


def _init_child(parent: int, log_level: str) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died while this child was starting
        os._exit(1)
    os.environ["SHOAL_FAULT_KILLS_PARENT"] = "1"
    from shoal.logs import setup

    setup(log_level)
    tune_gc()


def _warm_up() -> None:
    import connectors.catalog  # noqa: F401


def _seal_in_child(data_dir: Path, platform: str, start: int, tz: str) -> HourSummary | None:
    global _catalog
    if _catalog is None:
        from connectors.catalog import Catalog

        _catalog = Catalog(data_dir)
    return seal_hour(data_dir, platform, start, tz, _catalog)


class SealWorker:
    """Seals hours one after the other in a child process; results come back in order."""

    def __init__(self, data_dir: Path, tz: str, log_level: str = "info"):
        self.data_dir = data_dir
        self.tz = tz
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_child,
            initargs=(os.getpid(), log_level),
        )
        self._pending: deque[tuple[tuple[str, int], Future[HourSummary | None]]] = deque()
        # Start the child now: its imports take a while, and the first hour should not wait.
        self._pool.submit(_warm_up)

    def submit(self, platform: str, start: int) -> None:
        fut = self._pool.submit(_seal_in_child, self.data_dir, platform, start, self.tz)
        self._pending.append(((platform, start), fut))

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def in_flight(self) -> set[tuple[str, int]]:
        return {key for key, _ in self._pending}

    def done(self, wait: bool = False) -> list[tuple[tuple[str, int], HourSummary | None]]:
        """Finished seals, oldest first; a seal's exception is raised here, in the parent."""
        out = []
        while self._pending and (wait or self._pending[0][1].done()):
            key, fut = self._pending.popleft()
            out.append((key, fut.result()))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
