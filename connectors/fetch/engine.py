"""The fetch engine: aiohttp behind per-key gates, so politeness holds by construction.

Every HTTP request, first try, retry or redirect hop, waits at the gate of its politeness
key (``connectors.fetch.gate``) and connects only through the guarded resolver and socket
factory (``connectors.fetch.safety``); bodies go to the store through ``connectors.fetch.store``.
``FetchService`` puts the engine behind a synchronous face for Bytewax operators.

A media URL that cannot be downloaded as it is (a TikTok video page, a signed CDN URL past
its expiry or refused with 403/410) is first resolved from its post by a library
(``connectors.fetch.resolvers``, planned by ``shoal.fetch.resolve``), under the page host's
gate, and the file it names is then downloaded like any URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from connectors.fetch.gate import SENDING, Gate, Scheduler, Ticket
from connectors.fetch.ledger import FetchLedger
from connectors.fetch.phash import image_phash
from connectors.fetch.resolvers import Resolvers
from connectors.fetch.safety import GuardedResolver, guarded_socket_factory, unsafe_reason
from connectors.fetch.store import CHUNK, HEAD, LocalStorageError, Sink, local_writes, place
from shoal.fetch.data_url import DataUrlTooLarge, decode_data_url
from shoal.fetch.policy import (
    FetchConfig,
    FetchResult,
    backoff_delay,
    budget_key,
    check_url,
    key_for,
    ledger_refusal,
    parse_retry_after,
    sniff_type,
    status_class,
    type_allowed,
    url_host,
    utc_now_iso,
)
from shoal.fetch.resolve import Plan, ResolveError, plan_after, plan_before

Job = tuple[str, str, Mapping[str, Any] | None]  # (job_id, url, meta)


class _Refused(Exception):
    """A response the engine will not store (too large, unwanted type): permanent."""


@dataclass(slots=True)
class _Outcome:
    kind: str  # done | redirect | retry
    location: str = ""
    retry_after: float | None = None
    block_key: bool = False


_DONE = _Outcome("done")

# Successes that carry no file: storing their (empty or partial) body as the URL's content
# would report a file that is not the media.
NO_FILE = {
    204: "no content",
    205: "no content",
    206: "partial content, though no range was asked for",
}


# --- the engine ---------------------------------------------------------------------------

PART = re.compile(r"[0-9a-f]{32}\.part")  # the temp files of Sink, and nothing else


def hold_tmp_dir(tmp: Path) -> int:
    """Take a shared lock on ``tmp`` for as long as the engine runs, removing first the
    partial downloads a killed run left there when no other engine uses the folder.

    Several engines may share one folder (two ``shoal fetch`` into one ``-O``, the processes
    of a dataflow cluster): a ``.part`` is stale only when nobody holds the lock, which an
    exclusive ``flock`` that does not wait tells. Only our own names go (``PART``).
    Returns the lock's file descriptor; closing it lets the lock go.
    """
    fd = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # in use: its parts may be live; a later lone start removes stale ones
        else:
            for entry in os.scandir(tmp):
                if PART.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Fetcher:
    """Downloads URLs into ``root`` under ``config``; use as ``async with Fetcher(...)``.

    ``fetch`` never raises for a URL's sake: every fate ends in the returned FetchResult.
    It raises :class:`LocalStorageError` when our own disk refuses a write (the file, its
    folder, the ledger): that is no fate of the URL, and reporting it as one ("failed")
    would keep ``--resume`` and restarts from ever fetching it again.
    """

    def __init__(
        self,
        config: FetchConfig,
        root: Path,
        ledger: FetchLedger | None = None,
        trace_configs: list[aiohttp.TraceConfig] | None = None,
    ) -> None:
        self.config = config
        self.root = Path(root)
        self.ledger = ledger
        self._trace_configs = trace_configs
        self._session: aiohttp.ClientSession | None = None
        self._gates: dict[str, Gate] = {}
        self._sched: Scheduler | None = None
        self._rng = random.Random()
        self._tmp = self.root / ".tmp"
        # Perceptual hashes of stored images are computed here, beside the downloads: off the
        # event loop and off the dataflow's thread (Pillow releases the GIL while decoding).
        self._hasher: ThreadPoolExecutor | None = None
        self._resolvers: Resolvers | None = None
        self._tmp_lock: int | None = None  # fd of the shared lock on .tmp (hold_tmp_dir)

    async def __aenter__(self) -> Fetcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        cfg = self.config
        with local_writes(self._tmp):
            self._tmp.mkdir(parents=True, exist_ok=True)
            self._tmp_lock = hold_tmp_dir(self._tmp)
        self._sched = Scheduler(cfg.max_connections)
        if cfg.resolve_media:
            self._resolvers = Resolvers(cfg)
        connector = aiohttp.TCPConnector(
            limit=0,  # the gates limit; a second queue here would break the spacing
            # The trust store as the environment says now (SSL_CERT_FILE: a proxy's or a
            # test CA), as yt-dlp and instaloader see it when they resolve a page: a file
            # must be downloadable from wherever its page was read. aiohttp's own default
            # context is made once, at import, and would miss a setting made later.
            ssl=ssl.create_default_context(),
            resolver=GuardedResolver(cfg),
            socket_factory=guarded_socket_factory(cfg),
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": cfg.user_agent, "Accept": "*/*"},
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,  # an environment proxy would bypass the address checks
            trace_configs=self._trace_configs,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None
        if self._resolvers is not None:
            self._resolvers.close()
            self._resolvers = None
        if self.ledger is not None:
            self.ledger.flush()
        if self._tmp_lock is not None:
            os.close(self._tmp_lock)  # which lets the lock go
            self._tmp_lock = None

    def _gate(self, url: str) -> Gate:
        key = budget_key(key_for(url, self.config))
        gate = self._gates.get(key)
        if gate is None:
            if len(self._gates) >= 4096:
                self._gates = {k: g for k, g in self._gates.items() if not g.idle()}
            p, t = self.config.limits(key)
            assert self._sched is not None
            gate = Gate(p, t, self.config.throttle_margin, self._sched)
            self._gates[key] = gate
        return gate

    async def fetch(self, url: str, meta: Mapping[str, Any] | None = None) -> FetchResult:
        res = FetchResult(url=url, final_url=url)
        try:
            await self._fetch(url, meta or {}, res)
        except (asyncio.CancelledError, LocalStorageError):
            raise
        except Exception as exc:  # a bug must not lose the URL's fate
            res.error = f"internal error: {exc!r}"
        res.fetched_at = res.fetched_at or utc_now_iso()
        if res.ok and not res.phash and res.path and res.mimetype.startswith("image/"):
            res.phash = await self._phash(res.path)
        if res.ok and res.attempts and self.ledger is not None:
            with local_writes(self.ledger.path):
                self.ledger.record(res)
        return res

    async def _phash(self, rel: str) -> str:
        """The stored image's perceptual hash, computed in the engine's hashing thread."""
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="shoal-phash")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._hasher, image_phash, self.root / rel, self.config.compress
        )

    async def fetch_many(
        self, jobs: Iterable[Job], window: int = 10_000
    ) -> AsyncGenerator[tuple[str, Mapping[str, Any] | None, FetchResult], None]:
        """Results in completion order, with at most ``window`` jobs taken from the iterator
        at once, so an input of any length costs bounded memory."""
        it = iter(jobs)
        running: set[asyncio.Task[tuple[str, Mapping[str, Any] | None, FetchResult]]] = set()

        async def one(job: Job) -> tuple[str, Mapping[str, Any] | None, FetchResult]:
            return job[0], job[2], await self.fetch(job[1], job[2])

        def refill() -> None:
            for job in it:
                running.add(asyncio.ensure_future(one(job)))
                if len(running) >= window:
                    return

        refill()
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running.difference_update(done)
                # Every finished task's exception is looked at (none is left "never
                # retrieved"); the results come out first, then the first storage error.
                errors = [e for t in done if (e := t.exception()) is not None]
                for task in done:
                    if task.exception() is None:
                        yield task.result()
                if errors:
                    raise errors[0]
                refill()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _fetch(self, url: str, meta: Mapping[str, Any], res: FetchResult) -> None:
        cfg = self.config
        res.error = check_url(url, cfg)
        if res.error:
            return
        if self.ledger is not None:
            prev = self.ledger.get(url)
            if prev is not None and (self.root / prev.path).exists():
                for name in FetchResult.__dataclass_fields__:
                    setattr(res, name, getattr(prev, name))
                res.attempts = 0
                refusal = ledger_refusal(prev, cfg)
                if refusal:
                    # What fetching it again would give, without asking the server: the
                    # earlier run's file stays, this run does not report it as its own.
                    res.error, res.fetched_at = refusal, ""
                    res.path = res.sha256 = res.mimetype = res.phash = ""
                    res.bytes = 0
                return
        if url[:5].lower() == "data:":
            self._fetch_data(url, meta, res)
            return
        plan = plan_before(url, meta, time.time()) if self._resolvers else None
        if plan is None:
            await self._download(url, meta, res)
            # A signed URL refused (403/410) is asked for again from its post, once.
            if not res.error or not self._resolvers:
                return
            plan = plan_after(res.http_status, meta)
            if plan is None:
                return
        await self._resolve_and_download(plan, meta, res)

    async def _resolve_and_download(
        self, plan: Plan, meta: Mapping[str, Any], res: FetchResult
    ) -> None:
        """Ask the post's page for the file, then download it; at most once per URL's fate.

        The resolution is a request against the page's host, so it waits at that host's
        gate and holds the ticket until the library returns. The library's sockets are not
        ours to stamp, so the ticket counts as started when it is released, at the end: the
        next start on that host is then at least T after this resolution ended, which is
        later than T after it began. The promise holds whatever the thread's timing was,
        at the price of one resolution at a time per host when T > 0.
        """
        assert self._resolvers is not None
        res.resolved = plan.note()
        gate = self._gate(plan.page)
        ticket = await gate.acquire()
        try:
            res.attempts += 1
            resolved = await self._resolvers.resolve(plan)
        except ResolveError as exc:
            res.error = f"resolve failed: {exc}"
            return
        finally:
            gate.release(ticket)
        reason = check_url(resolved.url, self.config)
        if not reason and resolved.url[:5].lower() == "data:":
            reason = "refused: not an http(s) URL"
        if reason:
            res.error = f"resolved URL {reason}"
            res.final_url = resolved.url
            return
        res.error, res.http_status, res.final_url = "", 0, resolved.url
        await self._download(resolved.url, meta, res, resolved.headers)

    async def _download(
        self, url: str, meta: Mapping[str, Any], res: FetchResult,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Request ``url`` through its gates, following redirects and retrying, into the store.

        ``headers`` (a resolved file's Referer, cookies...) go with requests to ``url``'s own
        host only: a redirect elsewhere must not carry the page's cookies.
        """
        cfg = self.config
        home = url_host(url)
        current, failures, hops = url, 0, 0
        clock = asyncio.get_running_loop().time
        deadline = math.inf  # set by the first request: waiting for the host's turn is free
        while True:
            gate = self._gate(current)
            try:
                # After the first request, the host's turn (a Retry-After block included)
                # is waited for only as long as the URL's deadline leaves.
                async with asyncio.timeout_at(None if deadline == math.inf else deadline):
                    ticket = await gate.acquire()
            except TimeoutError:
                res.error = self._past_deadline(res)
                return
            if deadline == math.inf and cfg.url_deadline:
                deadline = clock() + cfg.url_deadline
            left = deadline - clock()
            if left <= 0:
                gate.release(ticket)
                res.error = self._past_deadline(res)
                return
            res.attempts += 1
            res.error = ""
            try:
                extra = headers if headers and url_host(current) == home else None
                outcome = await self._request(ticket, current, url, meta, res,
                                              min(cfg.total_timeout, left), extra)
            finally:
                gate.release(ticket)
            if outcome.kind == "done":
                return
            if outcome.kind == "redirect":
                hops += 1
                res.final_url = outcome.location
                if hops > cfg.max_redirects:
                    res.error = f"too many redirects (> {cfg.max_redirects})"
                    return
                reason = check_url(outcome.location, cfg)
                if not reason and outcome.location[:5].lower() == "data:":
                    reason = "refused: redirect to a data: URL"
                if reason:
                    res.error = f"redirect {reason}"
                    return
                current = outcome.location
                continue
            failures += 1
            delay = backoff_delay(failures, cfg.backoff_base, cfg.backoff_max, self._rng.random())
            if outcome.retry_after is not None:
                blocked = min(outcome.retry_after, cfg.retry_after_max)
                gate.block(blocked)  # the host's block holds for every URL of it
                delay = 0.0
                if failures <= cfg.retries and clock() + blocked >= deadline:
                    # Waiting out the block would pass the deadline: give up now, not
                    # after the wait (up to an hour).
                    res.error = self._past_deadline(
                        res, f"Retry-After {outcome.retry_after:g}s would pass")
                    return
            elif outcome.block_key:
                gate.block(delay)
                delay = 0.0
            if failures > cfg.retries:
                return
            if clock() + delay >= deadline:
                res.error = self._past_deadline(res)
                return
            if delay:
                await asyncio.sleep(delay)

    def _past_deadline(self, res: FetchResult, why: str = "") -> str:
        """The error of a URL given up at its deadline, after what the last attempt said;
        ``why`` when it is given up before the deadline is reached."""
        last = f"{res.error}; " if res.error else ""
        limit = f"--url-deadline {self.config.url_deadline:g}s"
        what = f"{why} {limit}" if why else f"{limit} reached"
        return (f"{last}gave up: {what} after "
                f"{res.attempts} attempt{'s' if res.attempts != 1 else ''}")

    async def _request(
        self, ticket: Ticket, url: str, original: str, meta: Mapping[str, Any],
        res: FetchResult, limit: float, headers: Mapping[str, str] | None = None,
    ) -> _Outcome:
        """One attempt, cut at ``limit`` seconds (the per-attempt timeout, or what is left
        of the URL's deadline when that is less)."""
        cfg = self.config
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout
        )
        try:
            async with asyncio.timeout(limit):
                token = SENDING.set(ticket)
                try:
                    resp = await self._session.get(url, allow_redirects=False, timeout=timeout,
                                                   headers=headers)
                finally:
                    SENDING.reset(token)
                async with resp:
                    res.http_status = resp.status
                    kind = status_class(resp.status)
                    if kind == "redirect":
                        location = resp.headers.get("Location", "")
                        if not location:
                            res.error = f"http {resp.status} without Location"
                            return _DONE
                        try:
                            target = str(resp.url.join(URL(location)))
                        except ValueError:
                            res.error = f"invalid redirect location {location[:200]!r}"
                            return _DONE
                        return _Outcome("redirect", location=target)
                    if resp.status in NO_FILE:
                        res.error = f"http {resp.status} ({NO_FILE[resp.status]})"
                        return _DONE
                    if kind != "ok":
                        res.error = f"http {resp.status}"
                        if kind == "permanent":
                            return _DONE
                        ra = parse_retry_after(resp.headers.get("Retry-After"))
                        return _Outcome(
                            "retry", retry_after=ra, block_key=resp.status in (429, 503)
                        )
                    await self._store_response(resp, original, meta, res)
                    return _DONE
        except _Refused as exc:
            res.error = str(exc)
            return _DONE
        except aiohttp.ConnectionTimeoutError:
            res.error = "timeout (connect)"
        except aiohttp.SocketTimeoutError:
            res.error = "timeout (read)"
        except TimeoutError:
            res.error = (f"timeout (total {cfg.total_timeout:g}s)" if limit >= cfg.total_timeout
                         else f"timeout (--url-deadline {cfg.url_deadline:g}s)")
        except aiohttp.ClientConnectorDNSError as exc:
            res.error = unsafe_reason(exc) or f"unknown host ({exc.os_error})"
            return _DONE
        except aiohttp.ClientConnectorError as exc:
            res.error = unsafe_reason(exc) or f"connection failed ({exc.os_error})"
            if res.error.startswith("refused:"):
                return _DONE
        except aiohttp.InvalidURL as exc:
            res.error = f"invalid URL ({exc})"
            return _DONE
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            res.error = f"connection error ({type(exc).__name__}: {exc})".replace("\n", " ")
        except aiohttp.ClientError as exc:
            res.error = f"http error ({type(exc).__name__}: {exc})".replace("\n", " ")
            return _DONE
        return _Outcome("retry")

    # --- storage ---------------------------------------------------------------------------

    async def _store_response(
        self, resp: aiohttp.ClientResponse, url: str, meta: Mapping[str, Any], res: FetchResult
    ) -> None:
        cfg = self.config
        length = resp.content_length
        if length is not None and length > cfg.max_bytes:
            raise _Refused(f"too large (Content-Length {length} > {cfg.max_bytes} bytes)")
        ctype = resp.headers.get("Content-Type", "")
        # Only our own writes are under local_writes: an error reading the response is the
        # URL's (aiohttp's connection errors are OSErrors too).
        with local_writes(self._tmp):
            sink = Sink(self._tmp, cfg.compress)
        try:
            checked = False
            async for chunk in resp.content.iter_chunked(CHUNK):
                if sink.size + len(chunk) > cfg.max_bytes:
                    raise _Refused(f"too large (> {cfg.max_bytes} bytes)")
                with local_writes(sink.path):
                    sink.write(chunk)
                if not checked and len(sink.head) >= HEAD:
                    checked = True
                    self._check_type(sink.head, ctype)
            self._check_type(sink.head, ctype)
            if not sink.size:
                raise _Refused("empty body")
            with local_writes(self.root):
                sink.close()
                place(sink, self.root, self.config, ctype, url, meta, res)
        finally:
            sink.discard()

    def _fetch_data(self, url: str, meta: Mapping[str, Any], res: FetchResult) -> None:
        cfg = self.config
        try:
            ctype, data = decode_data_url(url, cfg.max_bytes)
        except DataUrlTooLarge:
            res.error = f"too large (> {cfg.max_bytes} bytes)"
            return
        except ValueError as exc:
            res.error = f"invalid data: URL ({exc})"
            return
        with local_writes(self._tmp):
            sink = Sink(self._tmp, cfg.compress)
        try:
            with local_writes(self.root):
                sink.write(data)
                sink.close()
                if not sink.size:
                    raise _Refused("empty body")
                self._check_type(sink.head, ctype)
                place(sink, self.root, self.config, ctype, url, meta, res)
        except _Refused as exc:
            res.error = str(exc)
        finally:
            sink.discard()

    def _check_type(self, head: bytes, ctype: str) -> None:
        mimetype, _ = sniff_type(head, ctype)
        if not type_allowed(mimetype, self.config.mime_types):
            raise _Refused(f"unwanted media type {mimetype}")


# --- the synchronous face -----------------------------------------------------------------


class _Runtime:
    """One loop thread and one engine per process and (root, config): Bytewax workers that
    are threads of one process then share the gates, so a host's budget is not multiplied
    by the number of workers."""

    def __init__(self, root: Path, config: FetchConfig, ledger: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="shoal-fetch",
                                       daemon=True)
        self.thread.start()
        self.ledger = FetchLedger.in_root(root) if ledger else None
        self.fetcher = Fetcher(config, root, self.ledger)
        self.run(self.fetcher.start(), timeout=30)
        self.users = 0

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.fetcher.aclose(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
        if self.ledger is not None:
            self.ledger.close()


_RUNTIMES: dict[tuple[str, str, bool], _Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def close_all() -> None:
    """Stop every shared engine still running (their HTTP sessions, loops and ledgers).

    Normally the last :class:`FetchService` user stops its engine at the end of the input;
    a run stopped early (Ctrl-C, SIGTERM, an error elsewhere) never gets there, and would
    leave unclosed sessions to the interpreter's exit.
    """
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for rt in runtimes:
        rt.run(_cancel_tasks(), timeout=30)
        rt.stop()


async def _cancel_tasks() -> None:
    """Cancel every fetch still running on this loop and wait for them to unwind."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class FetchService:
    """The engine for synchronous callers (a Bytewax operator): ``submit`` hands a URL to
    the background loop and returns at once; ``harvest`` collects what finished.

    The caller keeps the backlog and submits only while ``capacity() > 0``: the service
    holds just the submitted jobs and their unharvested results, so memory stays bounded
    however many URLs wait upstream. In a Bytewax operator, roughly::

        svc = FetchService(data_dir / "media-root", config)      # once per worker
        backlog.extend(refs); while backlog and svc.capacity(): svc.submit(...)
        emit(svc.harvest())                                       # on every batch/tick
    """

    def __init__(
        self,
        root: Path | str,
        config: FetchConfig | None = None,
        *,
        max_pending: int = 1000,
        ledger: bool = True,
    ) -> None:
        self.root = Path(root)
        self.config = config or FetchConfig()
        self.max_pending = max_pending
        self._key = (str(self.root.resolve()), repr(self.config), ledger)
        with _RUNTIMES_LOCK:
            rt = _RUNTIMES.get(self._key)
            if rt is None:
                rt = _RUNTIMES[self._key] = _Runtime(self.root, self.config, ledger)
            rt.users += 1
        self._rt = rt
        self._cond = threading.Condition()
        self._results: deque[tuple[str, FetchResult]] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # touched only on the loop thread
        self._closed = False
        # Our disk refused a write: raised to the caller at its next harvest, so that the
        # dataflow stops with its disk-trouble line and the job stays pending (its snapshot
        # still holds it) instead of becoming a failed media row.
        self._storage_error: LocalStorageError | None = None

    def submit(self, job_id: str, url: str, meta: Mapping[str, Any] | None = None) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("FetchService is closed")
            self._running += 1
        self._rt.loop.call_soon_threadsafe(self._start, job_id, url, meta)

    def pending(self) -> int:
        """Jobs submitted and not finished yet."""
        with self._cond:
            return self._running

    def capacity(self) -> int:
        """How many more jobs may be submitted now (finished but unharvested ones count)."""
        with self._cond:
            return max(0, self.max_pending - self._running - len(self._results))

    def harvest(self) -> list[tuple[str, FetchResult]]:
        """The results finished since the last harvest; raises :class:`LocalStorageError`
        once our disk refused a write (the jobs it hit have no result)."""
        with self._cond:
            if self._storage_error is not None:
                raise self._storage_error
            out = list(self._results)
            self._results.clear()
        return out

    def drain(self, timeout: float | None = None) -> list[tuple[str, FetchResult]]:
        """Wait until every submitted job has finished (or ``timeout``), then harvest."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._running == 0 or self._storage_error is not None, timeout)
        return self.harvest()

    def close(self) -> None:
        """Cancel unfinished jobs (their results are not reported; ``drain`` first to keep
        them) and let the last user of the shared engine stop it."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._rt.run(self._cancel_all(), timeout=30)
        with _RUNTIMES_LOCK:
            self._rt.users -= 1
            if self._rt.users == 0:
                del _RUNTIMES[self._key]
                self._rt.stop()

    def release(self) -> None:
        """Let go of an idle service without stopping the shared engine.

        A keyed operator drops the logic of a host it has nothing left to fetch from (else
        a stream that meets a million hosts keeps a million logics). The engine, and with it
        every host's gate, stays up: a new URL of that host a moment later still waits out
        the host's gap. The engine stops with the last :meth:`close`, or at
        :func:`close_all` when the run ends.
        """
        with self._cond:
            if self._closed:
                return
            if self._running or self._results:
                raise RuntimeError("FetchService.release with jobs unfinished or unharvested")
            self._closed = True
        with _RUNTIMES_LOCK:
            self._rt.users -= 1

    def __enter__(self) -> FetchService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, job_id: str, url: str, meta: Mapping[str, Any] | None) -> None:
        task = self._rt.loop.create_task(self._run(job_id, url, meta))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, url: str, meta: Mapping[str, Any] | None) -> None:
        try:
            result = await self._rt.fetcher.fetch(url, meta)
        except asyncio.CancelledError:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            raise
        except LocalStorageError as exc:
            with self._cond:
                self._storage_error = self._storage_error or exc
                self._running -= 1
                self._cond.notify_all()
            return
        with self._cond:
            self._results.append((job_id, result))
            self._running -= 1
            self._cond.notify_all()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
