"""What every live connector shares: options, stopping, backoff, state files, publishing.

Live connectors run for weeks. What matters is that a stop (SIGTERM from systemd or Docker,
Ctrl-C) never loses what was already received: the producer is flushed first, and a resume
point (a cursor, a last id, a search slice) is saved only after the posts it covers are in
Kafka. A duplicate after a restart is harmless (the dataflow dedupes); a hole is not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from connectors.collect.files import publish_records
from connectors.kafka.publisher import Publisher, ensure_topics, now_iso
from connectors.store.disk import atomic_write
from shoal.batch import BatchProgress
from shoal.errors import UserError, chain
from shoal.fetch.policy import parse_retry_after
from shoal.logs import event
from shoal.model import Control, DeadLetter, RawPost
from shoal.options import finite_float

if TYPE_CHECKING:  # only the websocket/SSE connectors need aiohttp, and they import it
    import aiohttp

log = logging.getLogger("shoal.collect")

Record = RawPost | DeadLetter | Control
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PROGRESS_SECONDS = 60.0
FLUSH_SECONDS = 60.0


class ConnectorError(UserError):
    """A problem retrying cannot fix (a refused token, contradictory options): one line, exit 2."""


class Shutdown(BaseException):
    """Raised out of a blocking call when a stop signal arrives.

    A BaseException so that libraries' broad ``except Exception`` retry loops let it through,
    as they do for KeyboardInterrupt.
    """


def warn(msg: str, **fields: Any) -> None:
    log.warning(msg, extra={"fields": fields})


def failure(exc: BaseException, url: str) -> dict[str, str]:
    """Which host failed and why, for a log line: the innermost cause says it best
    ("[Errno 111] Connection refused", "Name or service not known") where the outer
    exception only says ``ConnectionError``."""
    deepest = chain(exc)[-1]
    why = str(deepest) or type(deepest).__name__
    if ": " in why and why.startswith("<"):  # urllib3's "<conn object>: Failed to ..."
        why = why.split(": ", 1)[1]
    return {"host": urlsplit(url).netloc, "error": type(exc).__name__, "why": why[:200]}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- options


def add_common_options(p: argparse.ArgumentParser) -> None:
    """What every live collector takes besides the declared options (``--brokers``,
    ``--collector``, ``--metrics-port``..., which the CLI adds from ``shoal.options``)."""
    p.add_argument("--backoff-base", type=finite_float, default=1.0, metavar="SECONDS",
                   help="first reconnection delay, doubled per failure (default 1)")
    p.add_argument("--backoff-max", type=finite_float, default=120.0, metavar="SECONDS",
                   help="longest reconnection delay (default 120)")


class Backoff:
    """Exponential, capped, with jitter: a fleet of collectors cut off by the same outage must
    not come back in lockstep."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = max(base, 0.001)
        self.cap = max(cap, self.base)
        self.failures = 0
        self.at_least = 0.0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        delay = max(ceiling / 2 + self._rng.random() * ceiling / 2, self.at_least)
        self.at_least = 0.0
        return delay

    def hold(self, retry_after: str | None) -> None:
        """The server's ``Retry-After`` (seconds or an HTTP date): the next delay is at least
        that long, whatever the backoff says (asking sooner is asking to be refused again;
        at most a day, against a header gone wrong)."""
        seconds = parse_retry_after(retry_after)
        if seconds is not None:
            self.at_least = min(max(seconds, 0.0), 86400.0)

    def reset(self) -> None:
        self.failures = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Backoff:
        return cls(args.backoff_base, args.backoff_max)


# --------------------------------------------------------------------------- stopping


class Stopper:
    """SIGTERM/SIGINT -> a stop flag; inside :meth:`blocking` sections also :class:`Shutdown`.

    Blocking reads (a stream that sends a keep-alive every 20 s, twarc's own sleeps) cannot
    poll a flag, so the signal handler raises out of them; everywhere else (publishing) it
    only sets the flag, so a message is never cut in half. ``is_set`` makes it usable where
    twarc expects a ``threading.Event``. No locks are taken in the handler.
    """

    def __init__(self) -> None:
        self._stopped = False
        self._blocking = 0
        self._previous: dict[signal.Signals, Any] = {}
        self.reason = ""

    def is_set(self) -> bool:
        return self._stopped

    def set(self, reason: str = "requested") -> None:
        self._stopped = True
        self.reason = self.reason or reason

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.set(signal.Signals(signum).name)
        if self._blocking:
            raise Shutdown(self.reason)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded in another program's thread: it owns the signals
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        if self._stopped:
            raise Shutdown(self.reason)
        self._blocking += 1
        try:
            if self._stopped:  # the signal came between the check above and the increment
                raise Shutdown(self.reason)
            yield
        finally:
            self._blocking -= 1

    def sleep(self, seconds: float) -> None:
        with self.blocking():
            time.sleep(max(0.0, seconds))


@contextlib.contextmanager
def async_stop_signals(on_signal: Callable[[str], None]) -> Iterator[None]:
    """The asyncio side of :class:`Stopper`: signals call ``on_signal(name)`` in the loop."""
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            installed[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        yield
    finally:
        for sig, previous in installed.items():
            loop.remove_signal_handler(sig)
            # remove_signal_handler installs SIG_DFL, not what was there before us.
            signal.signal(sig, previous)


# --------------------------------------------------------------------------- state


def load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        value = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConnectorError(f"state file {path} is not valid JSON ({exc}); move it away") from None
    if not isinstance(value, dict):
        raise ConnectorError(f"state file {path} does not hold a JSON object")
    return value


def check_writable(path: Path | None, what: str, folder: bool = False) -> None:
    """One line (ConnectorError) before a batch starts when ``path``, a file it will write
    (``folder``: a folder it will write in), cannot be one: a folder where a file goes, a
    file where a folder goes. Found at the first write instead, the batch died after its
    first target, with that target's posts published and its run-log line lost."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        raise ConnectorError(f"{what} {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise ConnectorError(f"{what} {path} is a folder, not a file")
    above = path if folder else path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ConnectorError(f"{what} {path} cannot be made: {above} is a file, not a folder")


def append_line(path: Path, line: dict[str, Any]) -> None:
    """One JSON line at the end of a run log, its folder made first: ``--run-log`` (or a
    ``--state`` beside which it goes by default) may name a folder that does not exist yet,
    as ``--state`` itself may."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(orjson.dumps(line) + b"\n")


def save_state(path: Path | None, state: dict[str, Any]) -> None:
    """Atomically: a crash mid-write must leave the previous resume point, never half of one."""
    if path is not None:
        data = orjson.dumps({**state, "saved_at": now_iso()}, option=orjson.OPT_INDENT_2)
        atomic_write(path, data)


class Checkpoint:
    """A resume point saved every few seconds and at the end, each time after a flush.

    ``snapshot`` is read before the flush: whatever it covers was handed to the publisher
    before, so once the flush returns it is in Kafka (or in the publisher's disk spool) and
    the point may be written. The flush runs in the posting thread: the publisher is not
    thread-safe, and a flush is short (acknowledged or spooled).
    """

    def __init__(self, path: Path | None, publisher: Publisher, every: float,
                 snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.publisher = publisher
        self.every = every
        self.snapshot = snapshot
        self._saved: dict[str, Any] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            state = self.snapshot()
            if state == self._saved:
                continue
            try:
                self.publisher.flush(30)
            except Exception as exc:  # Kafka away: keep the old point, try again later
                warn("flush failed; resume point not saved", error=type(exc).__name__)
                continue
            save_state(self.path, state)
            self._saved = state

    def final(self) -> None:
        state = self.snapshot()
        self.publisher.flush()
        save_state(self.path, state)
        self._saved = state


# --------------------------------------------------------------------------- streaming


async def keep_connected(
    kind: str,
    open_session: Callable[[], aiohttp.ClientSession],
    connect_once: Callable[[aiohttp.ClientSession], Awaitable[None]],
    backoff: Backoff,
    checkpoint: Checkpoint,
    position: Callable[[], dict[str, Any]],
) -> None:
    """Connect again after every disconnection, the backoff's delay later, until cancelled.

    run_async stops a connector by cancelling it; the resume point is saved on the
    checkpoint's schedule meanwhile and once more in ``finally``, so a stop never loses it.
    ``position`` says where the stream was, for the log line of each disconnection.
    """
    saver = asyncio.ensure_future(checkpoint.run())
    try:
        async with open_session() as session:
            while True:
                await connect_once(session)
                delay = backoff.next()
                warn("disconnected", kind=kind, **position(), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
    finally:
        saver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await saver
        checkpoint.final()


def json_or_dead_letter(data: bytes, what: str, source: str, fmt: str) -> Any:
    """The JSON value of ``data``, or a DeadLetter keeping it (``invalid JSON {what}: ...``).

    A broken frame or page costs one dead letter; the connection goes on.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return DeadLetter(f"invalid JSON {what}: {exc}", source, data, fmt)


# --------------------------------------------------------------------------- publishing


class Outlet:
    """The publisher, plus a progress line now and then so a silent collector is noticed.

    ``progress`` is where a batch collector says where it is (targets, waits); a terminal
    display draws it (``shoal.app.progress.BatchDisplay``). Posts published through
    :meth:`emit` are counted there.
    """

    def __init__(self, publisher: Publisher, kind: str,
                 progress: BatchProgress | None = None) -> None:
        self.publisher = publisher
        self.kind = kind
        self.filtered = 0
        self.progress = progress if progress is not None else BatchProgress(kind)
        self.progress.kind = self.progress.kind or kind
        self._next_progress = time.monotonic() + PROGRESS_SECONDS

    def emit(self, records: Iterable[Record], retrieved_at: str | None = None) -> None:
        records = list(records)
        publish_records(records, self.publisher, retrieved_at or now_iso())
        self.progress.published(sum(isinstance(r, RawPost) for r in records))
        if time.monotonic() >= self._next_progress:
            self._next_progress = time.monotonic() + PROGRESS_SECONDS
            event(log, "progress", **self.counts())

    def counts(self) -> dict[str, Any]:
        c = self.publisher.counts
        return {"kind": self.kind, "collector": self.publisher.collector, "posts": c.posts,
                "dead": c.dead, "control": dict(c.control), "filtered": self.filtered}


def _open(args: argparse.Namespace, kind: str) -> Outlet:
    kafka = args.settings.kafka
    ensure_topics(args.brokers, kafka.partitions, kafka.topic)
    outlet = Outlet(Publisher.for_settings(args.brokers, args.collector, kafka), kind,
                    getattr(args, "progress", None))
    event(log, "collector started", kind=kind, collector=args.collector)
    return outlet


def _close(outlet: Outlet | None, stopped_by: str) -> None:
    if outlet is not None:
        # Bounded: what Kafka does not take in time stays in the publisher's disk spool.
        outlet.publisher.close(FLUSH_SECONDS)
        event(log, "collector stopped", stopped_by=stopped_by or "end", **outlet.counts())


def _failed(kind: str, exc: ConnectorError) -> int:
    log.error("collector failed", extra={"fields": {"kind": kind, "error": str(exc)}})
    return 2


def run_sync(args: argparse.Namespace, kind: str, body: Callable[[Outlet, Stopper], None],
             preflight: Callable[[], object] | None = None) -> int:
    """Run a blocking connector until it ends or a signal stops it; exit code 0 either way.

    ``preflight`` checks what can be checked offline (credentials, state file) before Kafka
    is contacted, so that a missing token is one clear error, not a half-started collector.
    """
    stopper = Stopper()
    stopper.install()
    outlet = None
    try:
        if preflight is not None:
            preflight()
        outlet = _open(args, kind)
        with contextlib.suppress(Shutdown):
            body(outlet, stopper)
        return 0
    except ConnectorError as exc:
        return _failed(kind, exc)
    finally:
        try:
            _close(outlet, stopper.reason)
        finally:
            stopper.restore()


def run_async(args: argparse.Namespace, kind: str, body: Callable[[Outlet], Awaitable[None]],
              preflight: Callable[[], object] | None = None) -> int:
    """Run an asyncio connector until it ends or a signal cancels it; exit code 0 either way.

    Cancellation reaches the body at whatever it awaits (a websocket read, a backoff sleep);
    its ``finally`` flushes and saves its resume point synchronously, so nothing there can be
    cancelled half-way.
    """
    outlet = None
    reason = ""

    async def main(out: Outlet) -> None:
        stop = asyncio.Event()

        def on_signal(name: str) -> None:
            nonlocal reason
            reason = reason or name
            stop.set()

        with async_stop_signals(on_signal):
            task = asyncio.ensure_future(body(out))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                task.cancel()
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    try:
        if preflight is not None:
            preflight()
        outlet = _open(args, kind)
        asyncio.run(main(outlet))
        return 0
    except ConnectorError as exc:
        return _failed(kind, exc)
    finally:
        _close(outlet, reason)
