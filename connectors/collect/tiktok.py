"""TikTok per hashtag (the Research API) and per user (yt-dlp), for batches that run for days.

The people this is for kept, per hashtag, the posts and the videos, lists of IDs already
downloaded so nothing was fetched twice, and a log of how many posts each run got. So here:

* hashtags go through the **Research API**: an OAuth client-credentials token (fetched again
  before it expires, and at once when a query answers 401 ``access_token_invalid``), then
  ``/v2/research/video/query/`` per hashtag in windows of at most 30 days (the API refuses
  longer ones), paged by ``cursor``/``search_id`` while ``has_more``;
* the daily quota (429 ``daily_quota_limit_exceeded``) is waited out until the next UTC day
  (``--quota-wait`` replaces that wait, for tests), logged once with the time it resumes;
  other 429s, 5xx and dropped connections are tried again after a backoff, never sooner
  than the answer's ``Retry-After``;
* ``--state`` keeps, per hashtag, the finished windows and the cursor and search_id of the
  window under way, saved after every page once Kafka has the page's posts; a restart goes
  on from there. Search ids expire: a resumed one the API refuses restarts its window, and
  the ID lists keep that from publishing anything twice;
* per query (``london``, ``@alice``) the IDs of posts published are a file,
  ``IDS_DIR/<query>_post_ids.txt``, one id a line, appended once Kafka has the post; every
  list is read at start, so a video found by two hashtags is published once (and listed in
  both);
* a run log (``--run-log``, JSON lines) gets one line per hashtag or user per run.

``--users`` lists accounts with yt-dlp's TikTok user extractor (flat: no download here);
yt-dlp cannot resume a listing half-way, so a user is listed whole each run and the ID lists
drop what was published before.

Each video is published as a ``tiktok-research`` post whose payload records the query that
found it (``query``); its media URL is its web page, which the dataflow's fetch step gets.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import requests
from kafka.errors import KafkaError

from connectors.collect import resolve
from connectors.collect.live import (
    Backoff,
    ConnectorError,
    Outlet,
    Stopper,
    add_common_options,
    append_line,
    check_writable,
    iso,
    load_state,
    run_sync,
    save_state,
    warn,
)
from connectors.kafka.publisher import now_iso
from shoal.batch import BatchProgress
from shoal.errors import UserError
from shoal.fetch.policy import parse_retry_after
from shoal.hours import parse_day
from shoal.logs import event
from shoal.model import BadPost, DeadLetter, RawPost
from shoal.names import hashtag_name, hashtags_in_text
from shoal.normalise.tiktok import RESEARCH, research_id

log = logging.getLogger("shoal.collect")
FORMAT = RESEARCH
WINDOW_DAYS = 30  # the Research API's longest start_date..end_date
FIELDS = ("id,create_time,username,region_code,video_description,music_id,like_count,"
          "comment_count,share_count,view_count,hashtag_names,effect_ids,playlist_id,"
          "voice_to_text,video_duration")
QUOTA = "daily_quota_limit_exceeded"
TOKEN_INVALID = "access_token_invalid"
RETRY_AFTER_MAX = 3600.0
_USER = re.compile(r"[\w.]*\w[\w.]*")


class ApiError(Exception):
    """The API refused a query for good (bad parameters, a refused hashtag): that hashtag's
    outcome, not the batch's end."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}"[:300])
        self.status = status
        self.code = code


# --------------------------------------------------------------------------- the API


def _body(resp: requests.Response) -> dict[str, Any]:
    try:
        value = resp.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error(body: dict[str, Any]) -> tuple[str, str]:
    """``(code, message)`` of an answer; ``("ok", "")`` when it has no error."""
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("code") or "ok"), str(err.get("message") or "")
    if isinstance(err, str):  # the OAuth endpoint: {"error": "invalid_client", ...}
        return err, str(body.get("error_description") or "")
    return "ok", ""


def retry_after(resp: requests.Response | None) -> float:
    """Seconds an answer's ``Retry-After`` (seconds or an HTTP date) asks us to wait, at
    most RETRY_AFTER_MAX (a header far in the future is a broken gateway, not a plan);
    0 without one."""
    if resp is None:
        return 0.0
    return min(parse_retry_after(resp.headers.get("Retry-After")) or 0.0, RETRY_AFTER_MAX)


def next_utc_day(now: float) -> float:
    """When the daily quota comes back: the next UTC midnight, plus a minute for clock skew."""
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    return midnight.timestamp() + 60.0


class ResearchClient:
    """The two endpoints we use, with the token, retries and quota waits around them.

    ``on_wait`` runs before any long wait, so the state is on disk while we sleep.
    """

    def __init__(self, args: argparse.Namespace, key: str, secret: str, stopper: Stopper,
                 on_wait: Any = None, progress: BatchProgress | None = None) -> None:
        self.base = args.settings.collectors.tiktok_api_url.rstrip("/")
        self.key = key
        self.secret = secret
        self.stopper = stopper
        c = args.settings.collectors
        self.timeout = c.tiktok_timeout
        self.retries = c.tiktok_retries
        self.quota_wait: float | None = c.tiktok_quota_wait
        self.backoff = Backoff.from_args(args)
        self.on_wait = on_wait
        self.progress = progress if progress is not None else BatchProgress("tiktok")
        self.session = requests.Session()
        self.token = ""
        self.expires_at = 0.0  # monotonic
        self.tokens = 0
        self.quota_hits = 0

    def _post(self, url: str, **kwargs: Any) -> requests.Response:
        with self.stopper.blocking():
            return self.session.post(url, timeout=self.timeout, **kwargs)

    def access_token(self) -> str:
        if self.token and time.monotonic() < self.expires_at:
            return self.token
        url = f"{self.base}/v2/oauth/token/"
        for attempt in range(self.retries + 1):
            try:
                resp = self._post(url, data={"client_key": self.key,
                                             "client_secret": self.secret,
                                             "grant_type": "client_credentials"})
            except requests.RequestException as exc:
                if attempt == self.retries:
                    raise ConnectorError(f"cannot reach {url}: {type(exc).__name__}") from None
                self._pause("token request failed", error=type(exc).__name__)
                continue
            body = _body(resp)
            if (resp.status_code >= 500 or resp.status_code == 429) and attempt < self.retries:
                # Busy, not a refusal: like a query, tried again after a backoff.
                self._pause("token request failed", resp, status=resp.status_code)
                continue
            token = body.get("access_token")
            if resp.status_code != 200 or not isinstance(token, str) or not token:
                code, message = _error(body)
                raise ConnectorError(f"TikTok refused the client key/secret: HTTP "
                                     f"{resp.status_code} {code} {message}".strip()[:300])
            try:
                expires_in = float(body.get("expires_in") or 7200)
            except (TypeError, ValueError):
                expires_in = 7200.0
            # A tenth early: a token must not die between our check and the server's.
            self.token, self.expires_at = token, time.monotonic() + expires_in * 0.9
            self.tokens += 1
            self.backoff.reset()
            event(log, "token", kind="tiktok", expires_in=expires_in)  # never the token
            return token
        raise ConnectorError("no token")  # unreachable: the loop returns or raises

    def _pause(self, msg: str, resp: requests.Response | None = None, **fields: Any) -> None:
        """Wait before trying again: the backoff, or the answer's ``Retry-After`` when that
        is longer (a gateway that says when it is ready is not asked sooner: asking at the
        backoff's pace spent every retry inside its window, and the hashtag failed)."""
        delay = max(self.backoff.next(), retry_after(resp))
        if resp is not None and resp.headers.get("Retry-After"):
            fields["retry_after"] = resp.headers["Retry-After"][:40]
        warn(f"{msg}; trying again", kind="tiktok", retry_in=round(delay, 2), **fields)
        self.progress.waiting(time.time() + delay, "backoff")
        self.stopper.sleep(delay)
        self.progress.resumed()

    def wait_quota(self) -> None:
        """Sleep until the quota is back; said once, with the time."""
        self.quota_hits += 1
        now = time.time()
        until = now + self.quota_wait if self.quota_wait is not None else next_utc_day(now)
        warn("daily quota reached", kind="tiktok", resumes_at=iso(until),
             wait_seconds=round(until - now, 2))
        if self.on_wait is not None:
            self.on_wait()
        self.progress.waiting(until, "daily quota")
        self.stopper.sleep(until - time.time())
        self.progress.resumed()

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        """One page: ``data`` of a successful answer; ApiError for a refusal retrying
        cannot fix."""
        url = f"{self.base}/v2/research/video/query/"
        refreshed = False
        failures = 0
        while True:
            token = self.access_token()
            try:
                resp = self._post(url, params={"fields": FIELDS}, json=body,
                                  headers={"Authorization": f"Bearer {token}"})
            except requests.RequestException as exc:
                failures += 1
                if failures > self.retries:
                    raise ApiError(0, type(exc).__name__, "no answer") from None
                self._pause("query failed", error=type(exc).__name__)
                continue
            answer = _body(resp)
            code, message = _error(answer)
            if resp.status_code == 200 and code == "ok":
                data = answer.get("data")
                if isinstance(data, dict):
                    self.backoff.reset()
                    return data
                # A captive portal's page, a proxy's, a body cut short: no page at all.
                # Read as an empty last page it closed the window with nothing in it, for
                # good; tried again like a 5xx, it is this hashtag's error at worst, and
                # the window stays to be asked by the next run.
                failures += 1
                what = "answer without data" if answer else "answer is not JSON"
                if failures > self.retries:
                    raise ApiError(200, "unexpected_answer", what)
                self._pause("query failed", resp, status=200, error=what)
                continue
            if resp.status_code == 401 or code == TOKEN_INVALID:
                if refreshed:
                    raise ConnectorError(f"TikTok refused a fresh token: {code} {message}"[:300])
                event(log, "token refused; fetching another", kind="tiktok", code=code)
                self.token, refreshed = "", True
                continue
            if code == QUOTA:
                self.wait_quota()
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                failures += 1
                if failures > self.retries:
                    raise ApiError(resp.status_code, code, message)
                self._pause("query failed", resp, status=resp.status_code, code=code)
                continue
            raise ApiError(resp.status_code, code, message)


# --------------------------------------------------------------------------- what to ask


def windows(since: date, until: date, days: int = WINDOW_DAYS) -> list[tuple[date, date]]:
    """``since..until`` (both included) cut into spans of at most ``days`` days."""
    out = []
    start = since
    while start <= until:
        end = min(start + timedelta(days=days - 1), until)
        out.append((start, end))
        start = end + timedelta(days=1)
    return out


def range_of(args: argparse.Namespace) -> tuple[date, date]:
    """``[collectors] tiktok_since..tiktok_until`` (``--since``/``--until``), defaults
    filled in: the last 30 days to today (UTC)."""
    c = args.settings.collectors
    try:
        until = parse_day(c.tiktok_until) if c.tiktok_until else datetime.now(UTC).date()
        since = (parse_day(c.tiktok_since) if c.tiktok_since
                 else until - timedelta(days=WINDOW_DAYS - 1))
    except ValueError as exc:
        raise ConnectorError(str(exc)) from None
    if since > until:
        raise ConnectorError(f"--since {since} is after --until {until}")
    return since, until


def names(values: list[str], strip: str) -> list[str]:
    """Hashtags without '#' or users without '@', in lower case (TikTok's own: ``#London``
    and ``#london`` are one hashtag, ``@Alice`` and ``@alice`` one account), each once.
    A hashtag is letters (with their marks), digits and ``_`` of any script, in NFC
    (:func:`shoal.names.hashtag_name`); a user name may hold ``.`` too, but not only
    dots (``..`` is no account, and must not become a path or a URL)."""
    out: list[str] = []
    for value in values:
        name: str | None = value.strip().lstrip(strip).lower()
        if not name:
            continue
        if strip == "#":
            name = hashtag_name(name)
        elif not _USER.fullmatch(name):
            name = None
        if name is None:
            kind = "hashtag" if strip == "#" else "user name"
            raise ConnectorError(f"not a TikTok {kind}: {value!r}")
        if name not in out:
            out.append(name)
    return out


def credentials(args: argparse.Namespace) -> tuple[str, str]:
    c = args.settings.collectors
    key, secret = c.tiktok_client_key.strip(), c.tiktok_client_secret.strip()
    if not key or not secret:
        raise ConnectorError("no TikTok Research API credentials: set TIKTOK_CLIENT_KEY and "
                             "TIKTOK_CLIENT_SECRET (or [collectors] tiktok_client_key/secret)")
    return key, secret


# --------------------------------------------------------------------------- the batch


ID_LIST = "_post_ids.txt"
NAME_MAX = 255  # bytes in a file name, on every common file system


def id_list_name(query: str) -> str:
    """The file name of a query's ID list: ``<query>_post_ids.txt``, unless that is longer
    than a file name may be (a long hashtag: 85 letters of an Indic script are 255 bytes),
    when the query's beginning (cut at a character) and 16 hex digits of its hash stand for
    it. Writing the full name failed after the first page was published, every run."""
    name = f"{query}{ID_LIST}"
    if len(name.encode()) <= NAME_MAX:
        return name
    digest = hashlib.sha256(query.encode()).hexdigest()[:16]
    room = NAME_MAX - len(ID_LIST) - len(digest) - 1
    head = query.encode()[:room].decode("utf-8", "ignore")
    return f"{head}-{digest}{ID_LIST}"


class IdLists:
    """``<query>_post_ids.txt`` per query, appended and synced as posts are acknowledged;
    kept by file name (:func:`id_list_name`), which is what a restart reads back."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.lists: dict[str, set[str]] = {}
        self.published: set[str] = set()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob(f"*{ID_LIST}")):
                ids = set(path.read_text().split())
                self.lists[path.name] = ids
                self.published |= ids

    def path(self, query: str) -> Path | None:
        return self.folder / id_list_name(query) if self.folder is not None else None

    def add(self, query: str, ids: list[str]) -> None:
        known = self.lists.setdefault(id_list_name(query), set())
        fresh = [i for i in dict.fromkeys(ids) if i not in known]
        known.update(fresh)
        self.published.update(fresh)
        path = self.path(query)
        if fresh and path is not None:
            with open(path, "a") as fh:
                fh.write("".join(f"{i}\n" for i in fresh))
                fh.flush()
                os.fsync(fh.fileno())


class TikTokCollector:
    def __init__(self, args: argparse.Namespace, outlet: Outlet, stopper: Stopper) -> None:
        self.args = args
        self.outlet = outlet
        self.stopper = stopper
        self.path: Path | None = args.state
        self.state = load_state(self.path)
        self.tags: dict[str, dict[str, Any]] = self.state.setdefault("hashtags", {})
        folder = args.ids_dir or (self.path.parent if self.path is not None else None)
        self.ids = IdLists(folder)
        self.run_log: Path | None = args.run_log or (
            Path(f"{self.path}.runs.jsonl") if self.path is not None else None)
        self.client: ResearchClient | None = None

    def save(self) -> None:
        save_state(self.path, self.state)

    def record(self, line: dict[str, Any]) -> None:
        event(log, "target done", kind="tiktok", **line)
        if self.run_log is not None:
            append_line(self.run_log, line)

    def run(self) -> None:
        try:
            tags = names(self.args.hashtags, "#")
            self.outlet.progress.begin(len(tags) + len(names(self.args.users, "@")))
            if tags:
                key, secret = credentials(self.args)
                self.client = ResearchClient(self.args, key, secret, self.stopper,
                                             on_wait=self._checkpoint,
                                             progress=self.outlet.progress)
            for tag in tags:
                if self.stopper.is_set():
                    break
                self.target(f"#{tag}", lambda counts, tag=tag: self.hashtag(tag, counts))
            for user in names(self.args.users, "@"):
                if self.stopper.is_set():
                    break
                self.target(f"@{user}", lambda counts, user=user: self.user(user, counts))
        finally:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self.outlet.publisher.flush(30)
        self.save()

    def target(self, target: str, body: Any) -> None:
        started = now_iso()
        self.outlet.progress.start(target)
        counts = {"posts": 0, "videos": 0, "seen": 0, "pages": 0}
        outcome, error = "ok", ""
        try:
            finished = body(counts)
            if not finished:
                outcome = "interrupted"
        except ApiError as exc:
            outcome, error = "error", str(exc)
        except _ListingError as exc:
            outcome, error = exc.outcome, str(exc)[:300]
        except (UserError, KafkaError):
            raise  # a refused token, Kafka gone: the batch's end, not this target's fault
        except Exception as exc:  # a library's surprise or an answer of an odd shape
            outcome, error = "error", f"{type(exc).__name__}: {exc}"[:300]
        finally:
            if self.stopper.is_set() and outcome == "ok":
                outcome = "interrupted"
            self._checkpoint()
            line: dict[str, Any] = {"target": target, "outcome": outcome, **counts,
                                    "started": started, "ended": now_iso()}
            if target.startswith("#"):
                line["hashtag"] = target[1:]
            if error:
                line["error"] = error
            self.record(line)
            if outcome != "interrupted":
                self.outlet.progress.finish(outcome)

    def publish(self, query: str, kind: str, videos: list[Any],
                counts: dict[str, int]) -> None:
        """Publish what is new, then (acknowledged) list it; list what another query
        already published without publishing it again. An item that cannot be a post (no
        object, no usable id) is a dead letter with its reason and content: it used to be
        a warning line, and gone."""
        found_at = now_iso()
        posts: list[RawPost] = []
        dead: list[DeadLetter] = []
        seen: list[str] = []
        for video in videos:
            try:
                if not isinstance(video, dict):
                    raise BadPost(f"TikTok video is a JSON {type(video).__name__}, "
                                  "not an object")
                vid = research_id(video)
            except BadPost as exc:
                dead.append(DeadLetter(str(exc), f"tiktok:{kind}:{query}",
                                       orjson.dumps(video, default=str), FORMAT))
                continue
            if vid in self.ids.published or any(p.id == vid for p in posts):
                seen.append(vid)
                continue
            payload = {**video, "id": vid, "query": query, "query_kind": kind,
                       "found_at": found_at}
            posts.append(RawPost("tiktok", vid, FORMAT, payload, source=f"tiktok:{kind}"))
        if posts or dead:
            self.outlet.emit([*posts, *dead])
            # Acknowledged before listed: a crash in between repeats a post (the dataflow
            # dedupes it), never loses one.
            self.outlet.publisher.flush(30)
        self.ids.add(query, [p.id for p in posts] + seen)
        counts["posts"] += len(posts)
        counts["videos"] += len(posts)  # one video each; the fetch step downloads it
        counts["seen"] += len(seen)

    # ------------------------------------------------------------------ hashtags

    def hashtag(self, tag: str, counts: dict[str, int]) -> bool:
        entry = self.tags.setdefault(tag, {})
        done: list[str] = entry.setdefault("windows_done", [])
        most = self.args.settings.collectors.tiktok_max_posts
        for start, end in windows(*range_of(self.args)):
            key = f"{start:%Y%m%d}-{end:%Y%m%d}"
            if key in done:
                continue
            if most and int(entry.get("taken") or 0) >= most:
                break  # --max-posts reached, in this run or an earlier one
            if not self.window(tag, entry, key, counts):
                return False
            done.append(key)
            for k in ("window", "cursor", "search_id"):
                entry.pop(k, None)
            self.save()
        return True

    def window(self, tag: str, entry: dict[str, Any], key: str, counts: dict[str, int]) -> bool:
        """Page through one window from where the state says; False if stopped in it."""
        assert self.client is not None
        if entry.get("window") != key:
            entry.update(window=key, cursor=0, search_id="")
        start, end = key.split("-")
        while not self.stopper.is_set():
            body: dict[str, Any] = {
                "query": {"and": [{"operation": "EQ", "field_name": "hashtag_name",
                                   "field_values": [tag]}]},
                "start_date": start, "end_date": end,
                "max_count": self.args.settings.collectors.tiktok_page_size,
                "cursor": int(entry.get("cursor") or 0),
            }
            if entry.get("search_id"):
                body["search_id"] = entry["search_id"]
            try:
                data = self.client.query(body)
            except ApiError as exc:
                if entry.get("search_id") and exc.status == 400:
                    # A search id of a run long ago has expired: the window again from its
                    # start; the ID lists keep it from publishing twice.
                    warn("search id refused; window restarted", kind="tiktok", hashtag=tag,
                         window=key, error=str(exc))
                    entry.update(cursor=0, search_id="")
                    continue
                raise
            found = data.get("videos") or []
            cursor = data.get("cursor") or 0
            if not isinstance(found, list) or not _is_count(cursor):
                # Paging on a cursor we cannot read could loop or skip: the hashtag's error.
                raise ApiError(200, "unexpected_answer",
                               f"videos {type(found).__name__}, cursor {cursor!r}"[:120])
            videos: list[Any] = list(found)  # an item that is no video: a dead letter
            # --max-posts: videos this hashtag listed over all its windows and runs (what
            # another hashtag published first counts too: it is listed under this one).
            most = self.args.settings.collectors.tiktok_max_posts
            taken = int(entry.get("taken") or 0)
            if most:
                videos = videos[:max(0, most - taken)]
            counts["pages"] += 1
            self.publish(tag, "hashtag", videos, counts)
            entry["taken"] = taken + len(videos)
            cursor = int(cursor)
            more = bool(data.get("has_more")) and cursor > int(entry.get("cursor") or 0)
            entry.update(cursor=cursor, search_id=str(data.get("search_id") or
                                                       entry.get("search_id") or ""))
            self.save()
            if not more or (most and entry["taken"] >= most):
                return True
        return False

    # ------------------------------------------------------------------ users

    def user(self, name: str, counts: dict[str, int]) -> bool:
        videos = list(user_videos(name, self.args, self.stopper))
        for n in range(0, len(videos), 100):
            self.publish(f"@{name}", "user", videos[n:n + 100], counts)
        return True


def _is_count(value: object) -> bool:
    """A cursor the API could have meant: a whole number >= 0 (as a number or digits)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


class _ListingError(Exception):
    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class _YtLogger:
    """yt-dlp's messages as our JSON log lines (it would print them)."""

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        log.info("yt-dlp", extra={"fields": {"said": msg[:500]}})

    def error(self, msg: str) -> None:
        log.info("yt-dlp", extra={"fields": {"said": msg[:500]}})


def ytdlp_options(args: argparse.Namespace) -> dict[str, Any]:
    """A flat listing, nothing downloaded. yt-dlp trusts certifi's roots unless told
    ``no-certifi``; with ``SSL_CERT_FILE`` set (a proxy's or a test CA) it is told, so the
    system store (which honours that variable) is used instead."""
    c = args.settings.collectors
    opts: dict[str, Any] = {
        "quiet": True, "no_warnings": False, "skip_download": True,
        "extract_flat": "in_playlist", "logger": _YtLogger(), "socket_timeout": c.tiktok_timeout,
        "extractor_retries": c.tiktok_retries, "noprogress": True,
    }
    if c.tiktok_max_posts:
        opts["playlistend"] = c.tiktok_max_posts
    if os.environ.get("SSL_CERT_FILE"):
        opts["compat_opts"] = {"no-certifi"}
    return opts


def listing_outcome(error: str) -> str:
    """A failed user listing's outcome from yt-dlp's words: ``private`` (the profile page
    says so), ``not-found`` (no such account: the page has no ``secUid`` and no embed page
    gives one), ``empty`` (an account without videos), else ``error``. Whole phrases: the
    message names the user, and a missing ``privateer`` is no private account."""
    low = error.lower()
    if "account is private" in low or "account is likely either private" in low:
        return "private"
    if "unable to extract secondary user id" in low:
        return "not-found"
    if "does not have any videos" in low:
        return "empty"
    return "error"


def user_videos(name: str, args: argparse.Namespace, stopper: Stopper) -> Iterator[Any]:
    """A user's videos, shaped like Research API videos (the one format we normalise). An
    entry without an id is handed on as it came: :meth:`publish` files it as a dead letter
    (it was skipped without a word)."""
    import yt_dlp
    from yt_dlp.utils import DownloadError

    try:
        with stopper.blocking(), yt_dlp.YoutubeDL(ytdlp_options(args)) as ydl:
            info = ydl.extract_info(f"https://www.tiktok.com/@{name}", download=False)
    except DownloadError as exc:
        text = str(exc)
        raise _ListingError(listing_outcome(text), text.removeprefix("ERROR: ")) from None
    for entry in (info or {}).get("entries") or []:
        if not isinstance(entry, dict) or not entry.get("id"):
            yield entry
            continue
        desc = entry.get("description") or entry.get("title") or ""
        yield {
            "id": str(entry["id"]),
            "username": entry.get("uploader") or name,
            "create_time": entry.get("timestamp"),
            "video_description": desc,
            "view_count": entry.get("view_count"),
            "like_count": entry.get("like_count"),
            "comment_count": entry.get("comment_count"),
            "share_count": entry.get("repost_count"),
            "video_duration": entry.get("duration"),
            "hashtag_names": hashtags_in_text(desc),
        }


# --------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    resolve.install()

    def preflight() -> None:
        tags, users = names(args.hashtags, "#"), names(args.users, "@")
        if not tags and not users:
            raise ConnectorError("no targets: give --hashtags TAG... or --users NAME...")
        if tags:
            credentials(args)
            range_of(args)
        check_writable(args.state, "--state")
        load_state(args.state)
        check_writable(args.ids_dir or (args.state.parent if args.state else None),
                       "--ids-dir", folder=True)
        check_writable(args.run_log or (Path(f"{args.state}.runs.jsonl") if args.state
                                        else None), "--run-log")

    def body(outlet: Outlet, stopper: Stopper) -> None:
        TikTokCollector(args, outlet, stopper).run()

    return run_sync(args, "tiktok", body, preflight)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tiktok", help="TikTok hashtags (Research API) and users (yt-dlp)")
    p.add_argument("--hashtags", nargs="+", default=[], metavar="TAG")
    p.add_argument("--users", nargs="+", default=[], metavar="NAME",
                   help="accounts listed with yt-dlp (no Research API credentials needed)")
    p.add_argument("--state", type=Path, default=None, metavar="F",
                   help="JSON file of the batch's progress (windows done, cursor, search id)")
    p.add_argument("--ids-dir", type=Path, default=None, metavar="DIR",
                   help="where QUERY_post_ids.txt lists go (default: beside --state)")
    p.add_argument("--run-log", type=Path, default=None, metavar="F",
                   help="JSON lines, one per hashtag or user per run "
                        "(default STATE.runs.jsonl)")
    add_common_options(p)
    p.set_defaults(live_run=run)
