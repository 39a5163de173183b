"""Twitter API v2 through twarc2: the sampled stream, and sliced, resumable search.

twarc builds every URL from the constant ``https://api.twitter.com`` and sends every request
through two public methods, ``connect`` (the HTTP session) and ``get``. :class:`LiveTwarc`
overrides just those two, so that

* ``--api-url`` can point twarc at a proxy or a local test server (the URL prefix is
  rewritten; nothing else of twarc is touched),
* waits are ours: bounded backoff with jitter, 429s that sleep until ``x-rate-limit-reset``,
  and all of them interruptible by SIGTERM (twarc's own ``time.sleep`` calls are not),
* the bearer token is never logged (twarc's ``connect`` logs it at debug level),
* a malformed stream line becomes a dead letter and the stream goes on (twarc's ``json.loads``
  would end the generator and so drop the connection).

Everything else — fields and expansions (twarc's defaults, which include media), pagination,
``__twarc`` metadata — is twarc's, and pages are flattened by the v2 file reader so a live
post and a replayed file give the same messages.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import requests
from twarc.client2 import Twarc2
from twarc.version import version as twarc_version

from connectors.collect.live import (
    Backoff,
    ConnectorError,
    Outlet,
    Stopper,
    add_common_options,
    failure,
    iso,
    load_state,
    run_sync,
    save_state,
    warn,
)
from shoal import __version__
from shoal.formats import twitter_v2
from shoal.logs import event
from shoal.model import DeadLetter, RawPost
from shoal.options import finite_float

log = logging.getLogger("shoal.collect")

API_URL = "https://api.twitter.com"
TOKEN_ENV = "TWITTER_BEARER_TOKEN"
USER_AGENT = f"shoal/{__version__} twarc/{twarc_version}"
TIMEOUT = (10.0, 90.0)  # connect, read: the stream sends a keep-alive every 20 s
RESET_MARGIN = 0.5  # seconds after x-rate-limit-reset before asking again
RECENT_WINDOW = timedelta(days=7) - timedelta(minutes=5)
UNTIL_MARGIN = timedelta(seconds=30)  # end_time must be at least 10 s in the past
DEFAULT_SLICE_HOURS = 24.0


class LiveTwarc(Twarc2):
    """Twarc2 with our transport: see the module docstring for why."""

    client: requests.Session | None
    last_response: requests.Response | None

    def __init__(self, bearer_token: str, *, api_url: str, stopper: Stopper, backoff: Backoff,
                 max_rate_wait: float, kind: str) -> None:
        self.api_url = api_url.rstrip("/")
        self.stopper = stopper
        self.backoff = backoff
        self.max_rate_wait = max_rate_wait
        self.kind = kind
        self.connections = 0  # stream connections answered with 200
        self.dead: list[DeadLetter] = []  # malformed lines, for the caller to publish
        self.gaps = 0
        self._last_data: tuple[float, float, int] | None = None  # wall, monotonic, connection
        super().__init__(bearer_token=bearer_token)

    def connect(self) -> None:
        if self.last_response is not None:
            self.last_response.close()
        if self.client is not None:
            self.client.close()
        session = requests.Session()
        session.headers.update(
            {"Authorization": f"Bearer {self.bearer_token}", "User-Agent": USER_AGENT}
        )
        self.client = session

    def session(self) -> requests.Session:
        if self.client is None:
            self.connect()
        assert self.client is not None
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def get(self, url: str, params: Any = None, stream: bool = False,  # type: ignore[override]
            **kwargs: Any) -> requests.Response:
        if url.startswith(API_URL):
            url = self.api_url + url[len(API_URL):]
        if stream and self.connections:
            # twarc reconnects at once after a clean close; pace it.
            self.stopper.sleep(self.backoff.next())
        while True:
            try:
                with self.stopper.blocking():
                    resp = self.session().get(url, params=params, stream=stream,
                                              timeout=TIMEOUT, **kwargs)
            except requests.RequestException as exc:
                delay = self.backoff.next()
                warn("request failed", kind=self.kind, **failure(exc, url),
                     retry_in=round(delay, 2))
                self.stopper.sleep(delay)
                continue
            self.last_response = resp
            if resp.status_code == 200:
                if stream:
                    self.connections += 1
                    event(log, "stream connected", kind=self.kind, connection=self.connections)
                    self._check_lines(resp, self.connections)
                else:
                    self.backoff.reset()
                return resp
            detail = _problem(resp)
            if resp.status_code == 429:
                self._wait_for_reset(resp)
            elif resp.status_code >= 500:
                delay = self.backoff.next()
                warn("server error", kind=self.kind, status=resp.status_code, detail=detail,
                     retry_in=round(delay, 2))
                self.stopper.sleep(delay)
            else:
                raise ConnectorError(
                    f"{resp.status_code} from {url.split('?')[0]}: {detail}"
                    + (" (check the bearer token)" if resp.status_code in (401, 403) else "")
                )

    def _wait_for_reset(self, resp: requests.Response) -> None:
        now = time.time()
        try:
            reset = float(resp.headers["x-rate-limit-reset"])
            remaining = int(resp.headers.get("x-rate-limit-remaining", "0"))
        except (KeyError, ValueError):
            reset, remaining = 0.0, 0
        if remaining or reset <= now:
            # Not the 15-minute window (search/all's 1 request/s limit, or no usable header).
            wait = self.backoff.next()
        else:
            wait = min(reset - now + RESET_MARGIN, self.max_rate_wait)
        warn("rate limited", kind=self.kind, reset=iso(reset) if reset else None,
             wait_seconds=round(wait, 2))
        self.stopper.sleep(wait)

    def _check_lines(self, resp: requests.Response, connection: int) -> None:
        """Vet each line before twarc parses it; note when data resumes after a reconnect."""
        lines = resp.iter_lines

        def checked(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            for number, line in enumerate(lines(*args, **kwargs), 1):
                if line:
                    self._data_arrived(connection)
                    reason = _bad_line(line)
                    if reason:
                        source = f"{self.kind}:{connection}:{number}"
                        self.dead.append(DeadLetter(reason, source, line, twitter_v2.NAME))
                        line = b""  # what twarc takes for a keep-alive: it goes on reading
                yield line

        resp.iter_lines = checked  # type: ignore[method-assign]

    def _data_arrived(self, connection: int) -> None:
        wall, mono = time.time(), time.monotonic()
        last = self._last_data
        if last is not None and last[2] != connection:
            self.gaps += 1
            warn("stream gap", kind=self.kind, start=iso(last[0]), end=iso(wall),
                 seconds=round(mono - last[1], 3), connection=connection)
        self._last_data = (wall, mono, connection)
        self.backoff.reset()


def _bad_line(line: bytes) -> str:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON line: {exc}"
    return "" if isinstance(value, dict) else f"not a JSON object: {type(value).__name__}"


def _problem(resp: requests.Response) -> str:
    """The API's own words for an error response (its ``title``/``detail``), kept short."""
    try:
        body = resp.json()
    except ValueError:
        return resp.reason or ""
    finally:
        resp.close()
    if isinstance(body, dict):
        errors = body.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else body
        if isinstance(first, dict):
            text = first.get("detail") or first.get("message") or first.get("title")
            if text:
                return str(text)[:300]
    return resp.reason or ""


def bearer_token(args: argparse.Namespace | None = None) -> str:
    """``[collectors] twitter_bearer_token`` (file, SHOAL_ or TWITTER_BEARER_TOKEN environment,
    ``--bearer-token``), else TWITTER_BEARER_TOKEN, else what ``twarc2 configure`` saved."""
    settings = getattr(args, "settings", None)
    configured = settings.collectors.twitter_bearer_token if settings is not None else ""
    token = configured.strip() or os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    import click
    import configobj

    path = Path(click.get_app_dir("twarc")) / "config"
    if path.is_file():
        value = configobj.ConfigObj(str(path), unrepr=True).get("bearer_token")
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ConnectorError(f"no bearer token: set {TOKEN_ENV} or run `twarc2 configure`")


def _client(args: argparse.Namespace, stopper: Stopper, kind: str) -> LiveTwarc:
    return LiveTwarc(bearer_token(args), api_url=args.api_url, stopper=stopper,
                     backoff=Backoff.from_args(args), max_rate_wait=args.max_rate_wait, kind=kind)


def _publish_dead(client: LiveTwarc, outlet: Outlet) -> None:
    if client.dead:
        letters, client.dead = client.dead, []
        outlet.emit(letters)


# --------------------------------------------------------------------------- sampled stream


def run_sample(args: argparse.Namespace) -> int:
    return run_sync(args, "twitter-sample", lambda outlet, stopper: _sample(args, outlet, stopper),
                    preflight=lambda: bearer_token(args))


def _sample(args: argparse.Namespace, outlet: Outlet, stopper: Stopper) -> None:
    client = _client(args, stopper, "twitter-sample")
    try:
        while not stopper.is_set():
            stream = client.sample(event=stopper, record_keepalive=True)
            while True:
                with stopper.blocking():
                    item = next(stream, None)
                _publish_dead(client, outlet)
                if item is None or stopper.is_set():
                    break
                if isinstance(item, dict):
                    source = f"twitter-sample:{client.connections}"
                    outlet.emit(twitter_v2._value(item, source))
            if not stopper.is_set():  # twarc gave up after its own retries: start over
                delay = client.backoff.next()
                warn("stream ended", kind="twitter-sample", retry_in=round(delay, 2))
                stopper.sleep(delay)
    finally:
        _publish_dead(client, outlet)
        event(log, "stream summary", kind="twitter-sample", connections=client.connections,
              gaps=client.gaps)
        client.close()


# --------------------------------------------------------------------------- search


def parse_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SearchPlan:
    """Which slices of a search are done, and where the current one stopped.

    Saved as JSON after every page, once that page's posts are flushed to Kafka: a rerun
    with the same state file asks for the page after the last one saved, never a hole.
    """

    def __init__(self, args: argparse.Namespace, state: dict[str, Any]) -> None:
        endpoint = "all" if args.archive else "recent"
        if state and (state.get("query"), state.get("endpoint")) != (args.query, endpoint):
            raise ConnectorError(
                f"state file {args.state} is for {state.get('endpoint')} search "
                f"{state.get('query')!r}; use another --state for this search"
            )
        now = datetime.now(UTC).replace(microsecond=0)
        self.query = args.query
        self.endpoint = endpoint
        self.since = self._pick(args.since, state.get("since"), "--since", args.state)
        self.until = self._pick(args.until, state.get("until"), "--until", args.state)
        if self.until is None:
            self.until = now - UNTIL_MARGIN
        if self.since is None:
            if args.archive:
                raise ConnectorError("--archive needs --since (the full archive goes back to 2006)")
            self.since = now - RECENT_WINDOW
        if self.since >= self.until:
            raise ConnectorError(f"--since {_stamp(self.since)} is not before --until "
                                 f"{_stamp(self.until)}")
        saved = state.get("slice_hours")
        if saved is not None and args.slice_hours is not None and args.slice_hours != saved:
            raise ConnectorError(f"state file {args.state} was made with --slice-hours {saved:g}")
        given = args.slice_hours if args.slice_hours is not None else saved
        self.slice_hours = float(given if given is not None else DEFAULT_SLICE_HOURS)
        self.done: list[str] = list(state.get("done", []))
        self.current: str | None = state.get("current")
        self.next_token: str | None = state.get("next_token")
        self.published = int(state.get("published", 0))

    @staticmethod
    def _pick(given: datetime | None, saved: Any, option: str, path: Any) -> datetime | None:
        if isinstance(saved, str):
            saved_time = parse_time(saved)
            if given is not None and given != saved_time:
                raise ConnectorError(f"state file {path} has {option} {saved}; "
                                     "use another --state for another time range")
            return saved_time
        return given

    def slices(self) -> Iterator[tuple[datetime, datetime]]:
        """Oldest first, so hours fill in the order the dataflow seals them."""
        assert self.since is not None and self.until is not None
        whole = self.until - self.since
        step = timedelta(hours=self.slice_hours) if self.slice_hours > 0 else whole
        start = self.since
        while start < self.until:
            end = min(start + step, self.until)
            yield start, end
            start = end

    def as_json(self) -> dict[str, Any]:
        return {
            "query": self.query, "endpoint": self.endpoint,
            "since": _stamp(self.since) if self.since else None,
            "until": _stamp(self.until) if self.until else None,
            "slice_hours": self.slice_hours, "done": self.done, "current": self.current,
            "next_token": self.next_token, "published": self.published,
        }


def run_search(args: argparse.Namespace) -> int:
    def preflight() -> None:
        bearer_token(args)
        SearchPlan(args, load_state(args.state))

    return run_sync(args, "twitter-search", lambda outlet, stopper: _search(args, outlet, stopper),
                    preflight=preflight)


def _search(args: argparse.Namespace, outlet: Outlet, stopper: Stopper) -> None:
    plan = SearchPlan(args, load_state(args.state))
    client = _client(args, stopper, "twitter-search")
    fetch = client.search_all if args.archive else client.search_recent
    limit = args.limit or 0
    try:
        for start, end in plan.slices():
            key = _stamp(start)
            if key in plan.done:
                continue
            token = plan.next_token if plan.current == key else None
            if limit and plan.published >= limit:
                break
            event(log, "slice started", kind="twitter-search", start=key, end=_stamp(end),
                  resumed=token is not None)
            pages = fetch(args.query, start_time=start, end_time=end, next_token=token,
                          max_results=args.max_results)
            number = 0
            while True:
                with stopper.blocking():
                    page = next(pages, None)
                if page is None:
                    break
                number += 1
                records = list(twitter_v2._value(page, f"twitter-search:{key}:{number}"))
                room = limit - plan.published if limit else len(records)
                posts = [r for r in records if isinstance(r, RawPost)]
                if len(posts) > room:
                    keep = {id(p) for p in posts[:room]}
                    records = [r for r in records if not isinstance(r, RawPost) or id(r) in keep]
                outlet.emit(records)
                outlet.publisher.flush()
                plan.published += min(len(posts), room)
                plan.current = key
                if len(posts) > room:  # limit reached inside this page: a rerun asks it again
                    plan.next_token = token
                    save_state(args.state, plan.as_json())
                    event(log, "limit reached", kind="twitter-search", limit=limit)
                    return
                token = page.get("meta", {}).get("next_token")
                plan.next_token = token
                if token is None:
                    plan.done.append(key)
                    plan.current = None
                save_state(args.state, plan.as_json())
                if stopper.is_set():
                    return
            if key not in plan.done:  # ended without a last page holding data
                plan.done.append(key)
                plan.current, plan.next_token = None, None
                save_state(args.state, plan.as_json())
            event(log, "slice done", kind="twitter-search", start=key, posts=plan.published)
        event(log, "search done", kind="twitter-search", posts=plan.published,
              slices=len(plan.done))
    finally:
        client.close()


# --------------------------------------------------------------------------- parsers


def _twitter_options(p: argparse.ArgumentParser) -> None:
    add_common_options(p)  # --api-url is [collectors] twitter_api_url (shoal.options)
    p.add_argument("--max-rate-wait", type=finite_float, default=900.0, metavar="SECONDS",
                   help="longest wait for a rate-limit reset (default 900)")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "twitter-sample", help="the v2 sampled stream (bearer token from $TWITTER_BEARER_TOKEN)"
    )
    _twitter_options(p)
    p.set_defaults(live_run=run_sample)

    p = sub.add_parser("twitter-search", help="v2 recent or full-archive search, resumable")
    p.add_argument("query", help="a v2 search query")
    p.add_argument("--archive", action="store_true", help="full-archive search (/search/all)")
    p.add_argument("--since", type=parse_time, default=None,
                   help="oldest time, ISO (default: 7 days ago for recent search)")
    p.add_argument("--until", type=parse_time, default=None, help="newest time, ISO (default now)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many posts in total")
    p.add_argument("--slice-hours", type=finite_float, default=None,
                   help="split the time range into slices of this many hours (default 24; "
                        "0: one slice)")
    p.add_argument("--state", type=Path, default=None,
                   help="JSON file recording finished slices and the next page, to resume")
    p.add_argument("--max-results", type=int, default=100, help="tweets per page (10-100/500)")
    _twitter_options(p)
    p.set_defaults(live_run=run_search)
