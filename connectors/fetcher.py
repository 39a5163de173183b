"""The fetch engine: aiohttp behind per-key gates, so politeness holds by construction.

Every HTTP request, first try, retry or redirect hop, passes through the gate of its own
politeness key, which grants at most P requests in flight and starts at least T apart, and
stays shut while a server's Retry-After runs. Safety is checked three times: on the URL
(scheme, literal address), on every DNS answer (resolver), and on the socket address just
before connecting (socket factory), so no private address is contacted unless allowed.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import gzip
import hashlib
import os
import random
import socket
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote_to_bytes

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from connectors.fetch_ledger import FetchLedger
from shoal.fetch.policy import (
    FetchConfig,
    FetchResult,
    backoff_delay,
    budget_key,
    check_resolved,
    check_url,
    classify_ip,
    key_for,
    parse_retry_after,
    sniff_type,
    status_class,
    storage_path,
    template_fields,
    type_allowed,
    utc_now_iso,
)

CHUNK = 64 * 1024
HEAD = 512
Job = tuple[str, str, Mapping[str, Any] | None]  # (job_id, url, meta)


class UnsafeAddress(OSError):
    """A name or socket address that policy forbids; raised before any packet is sent."""


class _Refused(Exception):
    """A response the engine will not store (too large, unwanted type): permanent."""


# --- safety hooks -------------------------------------------------------------------------


class GuardedResolver(AbstractResolver):
    """Answers static overrides itself and refuses names that resolve to private addresses,
    so ``evil.example -> 127.0.0.1`` is stopped at the resolver, before connecting."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._inner: ThreadedResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        addr = self._config.resolve.get(name)
        if addr is not None:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            return [
                {"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}
            ]
        if self._inner is None:
            self._inner = ThreadedResolver()
        infos = await self._inner.resolve(host, port, family)
        reason = check_resolved(name, [i["host"] for i in infos], self._config)
        if reason:
            raise UnsafeAddress(reason)
        return infos

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_socket_factory(config: FetchConfig) -> Any:
    """The last check, on the very address about to be connected: it also covers literal
    addresses, which aiohttp never sends through the resolver."""
    trusted = set(config.resolve.values())

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = str(sockaddr[0]).split("%", 1)[0]
        if not config.allow_private_networks and ip not in trusted:
            verdict = classify_ip(ip)
            if verdict is not None:
                raise UnsafeAddress(f"refused: {verdict} address {ip}")
        sock = _StampedSocket(family=family, type=type_, proto=proto)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return factory


_SENDING: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar(
    "shoal_fetch_ticket", default=None
)


class _StampedSocket(socket.socket):
    """Tells the gate the moment a request's first bytes went to the kernel: its start.

    The request's task sets ``_SENDING``; asyncio writes a fresh request (and a TLS
    handshake) synchronously from that task, so the context reaches here.
    """

    def send(self, data: Any, flags: int = 0) -> int:
        n = super().send(data, flags)
        ticket = _SENDING.get()
        if ticket is not None:
            ticket.mark_sent()
        return n


def _unsafe_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UnsafeAddress) or str(e).startswith("refused:"):
            return str(e)
        todo += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
        todo += list(getattr(e, "exceptions", ()))
    return ""


# --- politeness gates ---------------------------------------------------------------------


class _Scheduler:
    """A cap on requests in flight over all keys, applied inside the gates (a semaphore in
    front of them would let a granted request wait, and so bunch its start with the next)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.starved: deque[_Gate] = deque()

    def take(self, gate: _Gate) -> bool:
        if self.in_flight < self.limit:
            self.in_flight += 1
            return True
        if not gate.starved:
            gate.starved = True
            self.starved.append(gate)
        return False

    def give_back(self) -> None:
        self.in_flight -= 1
        while self.starved and self.in_flight < self.limit:
            gate = self.starved.popleft()
            gate.starved = False
            gate.pump()


class _Ticket:
    """One granted request; it counts as started at its first byte to the kernel."""

    __slots__ = ("gate", "sent")

    def __init__(self, gate: _Gate) -> None:
        self.gate = gate
        self.sent = False

    def mark_sent(self) -> None:
        if not self.sent:
            self.sent = True
            self.gate.started()


class _Gate:
    """One politeness key's budget. Waiters are served first come, first served by timers,
    never by polling, so a key with thousands of waiting URLs costs O(1) per grant.

    T is kept between the moments requests really leave, not only between grants: a grant
    is followed by a connection set-up, a pause of the loop or of the collector, any of
    which would otherwise let two requests reach the server closer than T. So while a
    granted request has not gone out, nothing else is granted, and the next start is
    T + margin after it left (the margin absorbs the jitter between our send and the
    server's reading of it).
    """

    def __init__(self, parallelism: int, throttle: float, margin: float, sched: _Scheduler):
        self.parallelism = parallelism
        self.spacing = throttle + margin if throttle > 0 else 0.0
        self.in_flight = 0
        self.unsent = 0
        self.next_start = 0.0
        self.blocked_until = 0.0
        self.starved = False
        self._sched = sched
        self._loop = asyncio.get_running_loop()
        self._waiters: deque[asyncio.Future[_Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> _Ticket:
        fut: asyncio.Future[_Ticket] = self._loop.create_future()
        self._waiters.append(fut)
        self.pump()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())
            raise

    def release(self, ticket: _Ticket) -> None:
        # Not seen leaving (refused before connecting, or a write path we do not see):
        # count it as started now, which can only widen the gap.
        ticket.mark_sent()
        self.in_flight -= 1
        self._sched.give_back()
        self.pump()

    def started(self) -> None:
        self.unsent -= 1
        if self.spacing:
            self.next_start = max(self.next_start, self._loop.time() + self.spacing)
        self.pump()

    def block(self, seconds: float) -> None:
        """Nothing starts on this key for ``seconds`` (Retry-After, back-off of a 429/503)."""
        self.blocked_until = max(self.blocked_until, self._loop.time() + seconds)

    def idle(self) -> bool:
        now = self._loop.time()
        return (
            not self._waiters and self.in_flight == 0
            and now >= self.next_start and now >= self.blocked_until
        )

    def pump(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if self.in_flight >= self.parallelism or self.starved:
                return
            if self.spacing and self.unsent:
                return  # started() pumps again
            now = self._loop.time()
            ready = max(self.next_start, self.blocked_until)
            if now < ready:
                self._arm(ready)
                return
            if not self._sched.take(self):
                return
            self._waiters.popleft()
            self.in_flight += 1
            self.unsent += 1
            self.next_start = now + self.spacing
            head.set_result(_Ticket(self))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.pump()


@dataclass(slots=True)
class _Outcome:
    kind: str  # done | redirect | retry
    location: str = ""
    retry_after: float | None = None
    block_key: bool = False


_DONE = _Outcome("done")


# --- the engine ---------------------------------------------------------------------------


class Fetcher:
    """Downloads URLs into ``root`` under ``config``; use as ``async with Fetcher(...)``.

    ``fetch`` never raises for a URL's sake: every fate ends in the returned FetchResult.
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
        self._gates: dict[str, _Gate] = {}
        self._sched: _Scheduler | None = None
        self._rng = random.Random()
        self._tmp = self.root / ".tmp"

    async def __aenter__(self) -> Fetcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        cfg = self.config
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._sched = _Scheduler(cfg.max_connections)
        connector = aiohttp.TCPConnector(
            limit=0,  # the gates limit; a second queue here would break the spacing
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
        if self.ledger is not None:
            self.ledger.flush()

    def _gate(self, url: str) -> _Gate:
        key = budget_key(key_for(url, self.config))
        gate = self._gates.get(key)
        if gate is None:
            if len(self._gates) >= 4096:
                self._gates = {k: g for k, g in self._gates.items() if not g.idle()}
            p, t = self.config.limits(key)
            assert self._sched is not None
            gate = _Gate(p, t, self.config.throttle_margin, self._sched)
            self._gates[key] = gate
        return gate

    async def fetch(self, url: str, meta: Mapping[str, Any] | None = None) -> FetchResult:
        res = FetchResult(url=url, final_url=url)
        try:
            await self._fetch(url, meta or {}, res)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not lose the URL's fate
            res.error = f"internal error: {exc!r}"
        res.fetched_at = res.fetched_at or utc_now_iso()
        if res.ok and res.attempts and self.ledger is not None:
            self.ledger.record(res)
        return res

    async def fetch_many(
        self, jobs: Iterable[Job], window: int = 10_000
    ) -> AsyncIterator[tuple[str, Mapping[str, Any] | None, FetchResult]]:
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
                for task in done:
                    yield task.result()
                refill()
        finally:
            for task in running:
                task.cancel()

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
                return
        if url[:5].lower() == "data:":
            self._fetch_data(url, meta, res)
            return
        current, failures, hops = url, 0, 0
        while True:
            gate = self._gate(current)
            ticket = await gate.acquire()
            res.attempts += 1
            res.error = ""
            try:
                outcome = await self._request(ticket, current, url, meta, res)
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
                gate.block(min(outcome.retry_after, cfg.retry_after_max))
                delay = 0.0
            elif outcome.block_key:
                gate.block(delay)
                delay = 0.0
            if failures > cfg.retries:
                return
            if delay:
                await asyncio.sleep(delay)

    async def _request(
        self, ticket: _Ticket, url: str, original: str, meta: Mapping[str, Any],
        res: FetchResult,
    ) -> _Outcome:
        cfg = self.config
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout
        )
        try:
            async with asyncio.timeout(cfg.total_timeout):
                token = _SENDING.set(ticket)
                try:
                    resp = await self._session.get(url, allow_redirects=False, timeout=timeout)
                finally:
                    _SENDING.reset(token)
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
            res.error = f"timeout (total {cfg.total_timeout:g}s)"
        except aiohttp.ClientConnectorDNSError as exc:
            res.error = _unsafe_reason(exc) or f"unknown host ({exc.os_error})"
            return _DONE
        except aiohttp.ClientConnectorError as exc:
            res.error = _unsafe_reason(exc) or f"connection failed ({exc.os_error})"
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
        sink = _Sink(self._tmp, cfg.compress)
        try:
            checked = False
            async for chunk in resp.content.iter_chunked(CHUNK):
                if sink.size + len(chunk) > cfg.max_bytes:
                    raise _Refused(f"too large (> {cfg.max_bytes} bytes)")
                sink.write(chunk)
                if not checked and len(sink.head) >= HEAD:
                    checked = True
                    self._check_type(sink.head, ctype)
            self._check_type(sink.head, ctype)
            sink.close()
            self._finish(sink, ctype, url, meta, res)
        finally:
            sink.discard()

    def _fetch_data(self, url: str, meta: Mapping[str, Any], res: FetchResult) -> None:
        cfg = self.config
        header, _, payload = url[5:].partition(",")
        params = header.split(";")
        is_b64 = params[-1].strip().lower() == "base64"
        ctype = params[0].strip() or "text/plain"
        raw = unquote_to_bytes(payload)
        if len(raw) * (3 / 4 if is_b64 else 1) > cfg.max_bytes + 3:
            res.error = f"too large (> {cfg.max_bytes} bytes)"
            return
        try:
            data = base64.b64decode(b"".join(raw.split()) + b"==") if is_b64 else raw
        except ValueError as exc:
            res.error = f"invalid data: URL ({exc})"
            return
        if len(data) > cfg.max_bytes:
            res.error = f"too large (> {cfg.max_bytes} bytes)"
            return
        sink = _Sink(self._tmp, cfg.compress)
        try:
            sink.write(data)
            sink.close()
            self._check_type(sink.head, ctype)
            self._finish(sink, ctype, url, meta, res)
        except _Refused as exc:
            res.error = str(exc)
        finally:
            sink.discard()

    def _check_type(self, head: bytes, ctype: str) -> None:
        mimetype, _ = sniff_type(head, ctype)
        if not type_allowed(mimetype, self.config.media_types):
            raise _Refused(f"unwanted media type {mimetype}")

    def _finish(
        self, sink: _Sink, ctype: str, url: str, meta: Mapping[str, Any], res: FetchResult
    ) -> None:
        """Move the finished temp file into place; identical bytes are stored once."""
        mimetype, ext = sniff_type(sink.head, ctype)
        sha = sink.hash.hexdigest()
        now = utc_now_iso()
        rel = storage_path(self.config, sha, ext, template_fields(url, meta, now))
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and self.config.filename_template and "{sha256}" not in (
            self.config.filename_template
        ) and _file_sha256(final, self.config.compress) != sha:
            # A template that does not name the content: keep both, never overwrite.
            stem, dot, suffix = rel.rpartition("/")[2].partition(".")
            rel = rel.rpartition("/")[0] + f"/{stem}_{sha[:12]}{dot}{suffix}"
            final = self.root / rel
        if not final.exists():
            os.replace(sink.path, final)
            sink.kept = True
        res.bytes, res.sha256, res.mimetype, res.path, res.fetched_at = (
            sink.size, sha, mimetype, rel, now
        )


class _Sink:
    """A temp file beside the store, hashed while written; ``os.replace`` makes it visible
    only once complete, so a reader never sees half a file."""

    def __init__(self, tmp_dir: Path, compress: bool) -> None:
        self.path = tmp_dir / f"{uuid.uuid4().hex}.part"
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close/discard
        self._out: BinaryIO = (
            gzip.GzipFile(fileobj=self._fh, mode="wb", mtime=0)  # type: ignore[assignment]
            if compress else self._fh
        )
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.kept = False

    def write(self, chunk: bytes) -> None:
        if len(self.head) < HEAD:
            self.head += chunk[: HEAD - len(self.head)]
        self.hash.update(chunk)
        self.size += len(chunk)
        self._out.write(chunk)

    def close(self) -> None:
        if self._out is not self._fh:
            self._out.close()
        self._fh.close()

    def discard(self) -> None:
        if not self._fh.closed:
            self.close()
        if not self.kept:
            self.path.unlink(missing_ok=True)


def _file_sha256(path: Path, compressed: bool) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") if compressed else open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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
        with self._cond:
            out = list(self._results)
            self._results.clear()
        return out

    def drain(self, timeout: float | None = None) -> list[tuple[str, FetchResult]]:
        """Wait until every submitted job has finished (or ``timeout``), then harvest."""
        with self._cond:
            self._cond.wait_for(lambda: self._running == 0, timeout)
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
        with self._cond:
            self._results.append((job_id, result))
            self._running -= 1
            self._cond.notify_all()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
