"""What a running command shows: a live display on a terminal, a summary line elsewhere.

On a terminal, ``rich`` redraws a small table (posts in per collector, hours sealed, dead
letters, media fetched and pending per host) a few times a second, and every log line goes
through the same console, printed above the table, so the two never garble each other.
Not on a terminal (a service, a pipe, a file), the same figures are one JSON log line every
``every`` seconds. The figures are this process's metrics (``connectors.ops.metrics``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.ops import metrics
from shoal.batch import BatchProgress
from shoal.logs import event

log = logging.getLogger("shoal.progress")
TOP_HOSTS = 5


def _table(figures: dict[str, Any], started: float) -> Table:
    table = Table(title=f"shoal · {time.monotonic() - started:,.0f} s", title_justify="left",
                  show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, n in sorted(figures["posts_in"].items()):
        table.add_row(f"posts in · {name}", f"{n:,}")
    for name, n in sorted(figures["published"].items()):
        table.add_row(f"published · {name}", f"{n:,}")
    table.add_row("hours sealed (with re-seals)", f"{figures['seals']:,}")
    table.add_row("dead letters", f"{figures['dead']:,}")
    table.add_row("media fetched", f"{figures['fetched']:,} ok, {figures['failed']:,} failed")
    pending = sorted(figures["pending"].items(), key=lambda kv: -kv[1])
    for host, n in pending[:TOP_HOSTS]:
        table.add_row(f"pending · {host}", f"{n:,}")
    if len(pending) > TOP_HOSTS:
        rest = sum(n for _h, n in pending[TOP_HOSTS:])
        table.add_row(f"pending · {len(pending) - TOP_HOSTS} more hosts", f"{rest:,}")
    return table


class _ConsoleStream:
    """A file-like object for logging handlers: each line printed through the console, so a
    live display draws itself again below it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self.console.print(line, markup=False, highlight=False, soft_wrap=True,
                               emoji=False)
        return len(text)

    def flush(self) -> None:
        pass


Handlers = list[tuple[logging.StreamHandler[Any], Any]]


def _logs_through(console: Console) -> Handlers:
    """Log lines go through the live console: printed above the display, never into it.
    Returns what :func:`_logs_back` restores."""
    handlers: Handlers = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handlers.append((handler, handler.stream))
            handler.setStream(_ConsoleStream(console))  # type: ignore[arg-type]
    return handlers


def _logs_back(handlers: Handlers) -> None:
    for handler, stream in handlers:
        handler.setStream(stream)


class ProgressDisplay:
    """``with ProgressDisplay(): run(...)``: the display lives as long as the block."""

    def __init__(self, stream: TextIO | None = None, every: float = 30.0,
                 terminal: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def __enter__(self) -> ProgressDisplay:
        if self.terminal:
            console = Console(file=self.stream, force_terminal=True)
            self._live = Live(_table(metrics.summary(), self.started), console=console,
                              refresh_per_second=2, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
            self._handlers = _logs_through(console)
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        wait = 0.5 if self.terminal else self.every
        while not self._stop.wait(wait):
            self.show()

    def show(self) -> None:
        figures = metrics.summary()
        if self._live is not None:
            self._live.update(_table(figures, self.started))
        else:
            event(log, "progress", seconds=round(time.monotonic() - self.started),
                  posts_in=sum(figures["posts_in"].values()), sealed=figures["seals"],
                  dead=figures["dead"], fetched=figures["fetched"], failed=figures["failed"],
                  pending=sum(figures["pending"].values()))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._live is not None:
            self._live.update(_table(metrics.summary(), self.started))
            self._live.stop()
            _logs_back(self._handlers)


class BatchDisplay:
    """A batch collector's bar on a terminal: targets done of the total, posts published,
    the target under way and, while it waits, until when and why (a :class:`BatchProgress`
    the collector keeps up to date).

    Not on a terminal it draws nothing: the collector's own ``progress`` and ``target done``
    log lines say the same. Log lines go through the bar's console, above it, as with
    :class:`ProgressDisplay`.
    """

    def __init__(self, progress: BatchProgress, stream: TextIO | None = None,
                 terminal: bool | None = None, refresh: float = 0.5) -> None:
        self.progress = progress
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.refresh = refresh
        self._bar: Progress | None = None
        self._task: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: Handlers = []

    def __enter__(self) -> BatchDisplay:
        if not self.terminal:
            return self
        console = Console(file=self.stream, force_terminal=True)
        # markup=False: a target named "[x]" is text, not a style.
        self._bar = Progress(BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.description}", markup=False),
                             TimeElapsedColumn(), console=console, transient=False,
                             refresh_per_second=4)
        self._task = self._bar.add_task(self.progress.line(time.time()), total=None)
        self._bar.start()
        self._handlers = _logs_through(console)
        self._thread = threading.Thread(target=self._loop, name="batch-progress", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            self.show()

    def show(self) -> None:
        if self._bar is not None:
            p = self.progress
            self._bar.update(self._task, description=p.line(time.time()),
                             total=p.total or None, completed=p.done)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._bar is not None:
            self.show()
            self._bar.stop()
            _logs_back(self._handlers)
