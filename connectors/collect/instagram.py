"""Instagram profiles and hashtags through instaloader, for batches that run for days.

The people this is for downloaded a list of profiles over ten days under about 20 API calls an
hour, and their batch tool died on the first timeout, private profile or rate limit. So here:

* every target ends with an *outcome* (ok, private, not-found, login-required, timeout, error)
  and the batch goes on; only a refused session (or no targets) stops it, as one line;
* pacing is instaloader's own :class:`instaloader.RateController`, subclassed (its documented
  extension point) to add a ``--calls-per-hour`` ceiling over the whole batch, to wait out a
  429 for ``--rate-limit-wait`` seconds (logged once, with the time it resumes) instead of
  instaloader's printed guess, and to sleep through :class:`Stopper` so SIGTERM ends a wait;
* a restart resumes at the target and the page where the last run was, with instaloader's
  resumable iterators (``NodeIterator.freeze``/``thaw``, kept in ``--state``), and a post
  already published is never published again: its id goes to an archive file (``STATE.ids``)
  once Kafka has acknowledged it;
* a run log (``--run-log``, JSON lines) gets one line per target per run.

Posts are published as private-API Media objects (``instagram-media``, what Zeeschuimer
captures and what instaloader's feed pages hold), so the existing normaliser and media
extraction read them, carousel children and videos included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import instaloader
import requests
from instaloader import exceptions as ie
from instaloader.nodeiterator import FrozenNodeIterator, NodeIterator
from kafka.errors import KafkaError

from connectors.collect import resolve
from connectors.collect.live import (
    ConnectorError,
    Outlet,
    Stopper,
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
from shoal.logs import event
from shoal.media.platforms import instagram_media
from shoal.model import RawPost
from shoal.names import hashtag_name, is_utf8

log = logging.getLogger("shoal.collect")
FORMAT = "instagram-media"
HOUR = 3600.0
# Outcomes that a restart does not try again; the others (timeout, error) it does.
FINAL = {"ok", "private", "not-found", "login-required"}
# How instaloader words a rate limit it could not get through: "429 Too Many Requests when
# accessing URL", or Instagram's own "Please wait a few minutes". A bare "429" is not enough:
# a profile named bob429 that does not exist is no rate limit.
RATE_WORDS = re.compile(r"(?<!\d)429 Too Many Requests|Please wait a few minutes")


# --------------------------------------------------------------------------- pacing


class BatchRateController(instaloader.RateController):
    """instaloader's pacing, plus a per-hour ceiling across every kind of query.

    ``calls`` are wall-clock times of the last hour's queries, and ``resume_at`` the end of
    a rate-limit wait under way; both are saved in the state, so a restart neither starts a
    fresh hour nor asks Instagram inside a block it was told to wait out.
    """

    def __init__(self, context: instaloader.InstaloaderContext, *, stopper: Stopper,
                 calls_per_hour: int, rate_limit_wait: float, calls: list[float],
                 progress: BatchProgress | None = None, resume_at: float = 0.0) -> None:
        super().__init__(context)
        self.stopper = stopper
        self.progress = progress if progress is not None else BatchProgress("instagram")
        self._said_until = 0.0
        self.calls_per_hour = calls_per_hour
        self.rate_limit_wait = rate_limit_wait
        self.calls = [t for t in calls if t > time.time() - HOUR]
        self.resume_at = resume_at  # wall clock: no query before this (after a 429)
        self.rate_limited = 0
        # Saves the pacing as it changes: a call counted, a rate limit begun. The batch
        # spends most of its days waiting, which is where a kill -9 lands; what it did just
        # before the wait must be on disk, or the restarted batch asks once too often.
        self.on_change: Callable[[], None] = lambda: None
        if resume_at > time.time():
            warn("still rate limited", kind="instagram", resumes_at=iso(resume_at),
                 wait_seconds=round(resume_at - time.time(), 2))

    def sleep(self, secs: float) -> None:
        self.stopper.sleep(secs)

    def hourly_wait(self, now: float) -> float:
        """Seconds until one more call fits in the ceiling (0 when it does now)."""
        self.calls = [t for t in self.calls if t > now - HOUR]
        if self.calls_per_hour <= 0 or len(self.calls) < self.calls_per_hour:
            return 0.0
        return self.calls[-self.calls_per_hour] + HOUR - now

    def query_waittime(self, query_type: str, current_time: float,
                       untracked_queries: bool = False) -> float:
        # Never instaloader's untracked branch: it would push every later query 11 minutes out
        # on its own estimate; ours is --rate-limit-wait, through resume_at.
        base = super().query_waittime(query_type, current_time, False)
        now = time.time()
        return max(base, self.hourly_wait(now), self.resume_at - now)

    def wait_before_query(self, query_type: str) -> None:
        now = time.time()
        hourly = self.hourly_wait(now)
        if hourly > 0:
            until = now + hourly
            if until > self._said_until + 1.0:  # once per wait, not once per retry
                self._said_until = until
                warn("hourly ceiling reached", kind="instagram", query=query_type,
                     calls_per_hour=self.calls_per_hour, resumes_at=iso(until),
                     wait_seconds=round(hourly, 2))
            self.progress.waiting(until, "calls per hour")
        super().wait_before_query(query_type)
        self.progress.resumed()
        self.calls.append(time.time())
        self.on_change()

    def handle_429(self, query_type: str) -> None:
        self.wait_out(query_type)

    def wait_out(self, what: str) -> None:
        """Sleep until Instagram may be asked again; say so once, with the time."""
        self.rate_limited += 1
        self.resume_at = max(self.resume_at, time.time() + self.rate_limit_wait)
        self.on_change()
        warn("rate limited", kind="instagram", query=what, resumes_at=iso(self.resume_at),
             wait_seconds=round(self.resume_at - time.time(), 2))
        self.progress.waiting(self.resume_at, "rate limit")
        self.stopper.sleep(self.resume_at - time.time())
        self.progress.resumed()


# --------------------------------------------------------------------------- targets


# Instagram's own rules: a user name is 1 to 30 letters, digits, '.' and '_'; a hashtag is
# letters (with their marks), digits and '_' of any script (shoal.names.hashtag_name). Both
# are case-insensitive (Instagram shows them in lower case).
USERNAME = re.compile(r"[a-z0-9._]{1,30}")


def _listed(path: Path) -> list[str]:
    """The names of a ``--profiles`` FILE: one a line, UTF-8 with or without a BOM; blank
    lines and ``#`` comments (whole lines or after a name) are no names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConnectorError(f"profiles file {path} is not UTF-8 text (byte {exc.start})"
                             ) from None
    except OSError as exc:
        raise ConnectorError(f"cannot read profiles file {path}: {exc.strerror}") from None
    return [line.split("#", 1)[0] for line in text.splitlines()]


# A link to a profile, as a browser copies it: instagram.com/NAME, with or without the
# scheme, www. or m., a trailing slash or a query string. Other pages (a post /p/..., a reel,
# explore) are no profile and stay as they were given.
PROFILE_LINK = re.compile(r"(?:https?://)?(?:www\.|m\.)?instagram\.com/([^/?#]+)/?(?:[?#].*)?",
                          re.IGNORECASE)
NOT_PROFILES = {"p", "reel", "reels", "tv", "explore", "stories", "accounts", "direct"}


def profile_name(text: str) -> str:
    """The name a ``--profiles`` item stands for: ``alice`` for ``@alice`` and for a link to
    the profile (``https://www.instagram.com/alice/``), in lower case. A list copied from a
    browser holds links, and each was recorded ``not-found`` without a query."""
    text = text.strip()
    m = PROFILE_LINK.fullmatch(text)
    if m and m.group(1).lower() not in NOT_PROFILES:
        text = m.group(1)
    return text.lstrip("@").lower()


def query_of(target: str) -> tuple[str, str]:
    """A target (``profile:alice``, ``hashtag:london``) as a query and its kind:
    ``("@alice", "profile")``, ``("london", "hashtag")``."""
    kind, _, name = target.partition(":")
    return (f"@{name}" if kind == "profile" else name), kind


def targets_of(args: argparse.Namespace) -> list[str]:
    """``profile:NAME`` and ``hashtag:TAG`` in the order given, each once whatever its case
    (``Alice`` and ``alice`` are one account); a FILE lists one name (or profile link) a
    line. A name given with a path separator that is neither a file nor a profile link is a
    one-line error: it was meant as a file."""
    names: list[str] = []
    for item in args.profiles or ():
        path = Path(item)
        if path.is_file():
            names += _listed(path)
        elif ("/" in item or os.sep in item) and not PROFILE_LINK.fullmatch(item.strip()):
            raise ConnectorError(f"profiles file {item} does not exist")
        elif not is_utf8(item):
            raise ConnectorError(f"profile name {item!a} is not UTF-8 text")
        elif item.strip().startswith("#"):
            # In a file a '#' starts a comment; here it was meant as a hashtag, and dropped.
            raise ConnectorError(f"{item.strip()} is a hashtag, not a profile: give it with "
                                 f"--hashtags")
        else:
            names.append(item)
    for tag in args.hashtags or ():
        if not is_utf8(tag):
            raise ConnectorError(f"hashtag {tag!a} is not UTF-8 text")
    out: list[str] = []
    for name in names:
        name = profile_name(name)
        if name and not name.startswith("#") and f"profile:{name}" not in out:
            out.append(f"profile:{name}")
    for tag in args.hashtags or ():
        tag = tag.strip().lstrip("#")
        tag = hashtag_name(tag) or tag.lower()  # NFC: both spellings of café are one tag
        if tag and f"hashtag:{tag}" not in out:
            out.append(f"hashtag:{tag}")
    return out


def valid_target(target: str) -> bool:
    """Whether Instagram could have such a profile or hashtag (else it is not asked)."""
    kind, _, name = target.partition(":")
    if kind == "profile":
        return bool(USERNAME.fullmatch(name))
    return hashtag_name(name) == name


def outcome_of(exc: BaseException) -> str:
    if isinstance(exc, ie.ProfileNotExistsException | ie.QueryReturnedNotFoundException):
        return "not-found"
    if isinstance(exc, ie.PrivateProfileNotFollowedException):
        return "private"
    if isinstance(exc, ie.LoginRequiredException):
        return "private" if "private" in str(exc) else "login-required"
    if "timed out" in str(exc).lower() or "timeout" in type(exc.__cause__).__name__.lower():
        return "timeout"
    return "error"


def rate_limited(exc: BaseException) -> bool:
    if isinstance(exc, ie.TooManyRequestsException):
        return True
    if isinstance(exc, ie.ProfileNotExistsException | ie.QueryReturnedNotFoundException
                  | ie.PrivateProfileNotFollowedException):
        return False  # an answer, whatever the name or URL in its message holds
    return bool(RATE_WORDS.search(str(exc)))


class _LogLines(io.TextIOBase):
    """instaloader prints its errors to stderr; they become our JSON log lines instead."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.info("instaloader", extra={"fields": {"said": line.strip()[:500]}})
        return len(text)


# --------------------------------------------------------------------------- the batch


class Batch:
    """The state file, the archive of published ids and the run log, together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.path: Path | None = args.state
        self.state = load_state(self.path)
        self.targets: dict[str, dict[str, Any]] = self.state.setdefault("targets", {})
        self.archive_path = (Path(f"{self.path}.ids") if self.path is not None else None)
        self.published: set[str] = set()
        if self.archive_path is not None and self.archive_path.exists():
            self.published = set(self.archive_path.read_text().split())
        self.run_log: Path | None = args.run_log or (
            Path(f"{self.path}.runs.jsonl") if self.path is not None else None)
        if self.archive_path is not None:  # --state may name a folder not made yet
            self.archive_path.parent.mkdir(parents=True, exist_ok=True)
        self._archive = (open(self.archive_path, "a") if self.archive_path is not None  # noqa: SIM115
                         else None)

    def save(self, rc: BatchRateController) -> None:
        """The pacing with the progress: the last hour's calls, and when a rate limit
        being waited out ends."""
        self.state["calls"] = [round(t, 3) for t in rc.calls[-1000:]]
        if rc.resume_at > time.time():
            self.state["resume_at"] = round(rc.resume_at, 3)
        else:
            self.state.pop("resume_at", None)
        save_state(self.path, self.state)

    def archive(self, post_id: str) -> None:
        self.published.add(post_id)
        if self._archive is not None:
            self._archive.write(post_id + "\n")
            self._archive.flush()
            os.fsync(self._archive.fileno())

    def record(self, line: dict[str, Any]) -> None:
        event(log, "target done", **line)
        if self.run_log is not None:
            append_line(self.run_log, line)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()


def saved_resume_at(state: dict[str, Any], wait: float) -> float:
    """The end of the rate-limit wait a stopped run was in, from its state; never further
    than one ``wait`` from now (a clock set back, a hand-edited state), 0 for none."""
    try:
        resume_at = float(state.get("resume_at") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return min(resume_at, time.time() + wait) if resume_at == resume_at else 0.0


class InstagramCollector:
    def __init__(self, args: argparse.Namespace, outlet: Outlet, stopper: Stopper) -> None:
        self.args = args
        self.outlet = outlet
        self.stopper = stopper
        self.c = c = args.settings.collectors
        self.batch = Batch(args)
        calls = [float(t) for t in self.batch.state.get("calls", [])]
        resume_at = saved_resume_at(self.batch.state, c.instagram_rate_limit_wait)
        made: list[BatchRateController] = []

        def controller(ctx: instaloader.InstaloaderContext) -> BatchRateController:
            made.append(BatchRateController(
                ctx, stopper=stopper, rate_limit_wait=c.instagram_rate_limit_wait,
                calls_per_hour=c.instagram_calls_per_hour, calls=calls,
                progress=outlet.progress, resume_at=resume_at))
            return made[-1]

        self.loader = instaloader.Instaloader(
            sleep=c.instagram_pause, quiet=True, max_connection_attempts=c.instagram_attempts,
            request_timeout=c.instagram_request_timeout, rate_controller=controller,
            download_pictures=False, download_videos=False, save_metadata=False)
        self.context = self.loader.context
        self.rc = made[0]
        self.rc.on_change = lambda: self.batch.save(self.rc)

    def login(self) -> None:
        session = self.c.instagram_session_file
        if not session:
            return
        user = self.c.instagram_login
        try:
            self.loader.load_session_from_file(user, session)
        except Exception as exc:  # not instaloader's pickle: any shape
            # (a list, a string, a cookies.txt) fails somewhere inside it.
            raise ConnectorError(f"cannot read session file {session}: "
                                 f"{type(exc).__name__}") from None
        try:
            who = self.loader.test_login()
        except ie.InstaloaderException as exc:
            raise ConnectorError(f"Instagram refused the session: {exc}") from None
        if not who or (user and who.lower() != user.lower()):
            raise ConnectorError(f"Instagram refused the session of {user or 'the session file'}"
                                 " (log in again and save a new session file)")
        event(log, "logged in", kind="instagram", username=who)

    def run(self) -> None:
        with contextlib.redirect_stderr(_LogLines()):
            try:
                self.login()
                targets = targets_of(self.args)
                self.outlet.progress.begin(len(targets))
                for target in targets:
                    if self.stopper.is_set():
                        break
                    if self.batch.targets.get(target, {}).get("outcome") in FINAL:
                        self.outlet.progress.skip()
                        continue
                    self.outlet.progress.start(target)
                    self.one(target)
            finally:
                self.outlet.publisher.flush(30)
                self.batch.save(self.rc)
                self.batch.close()

    def one(self, target: str) -> None:
        started = now_iso()
        entry = self.batch.targets.setdefault(target, {})
        entry.pop("outcome", None)
        counts = {"posts": 0, "media": 0, "skipped": 0}
        outcome = "ok"
        error = ""
        try:
            if not valid_target(target):
                # No such account or tag can exist: Instagram's answer, without asking it.
                raise ie.ProfileNotExistsException(f"{target.partition(':')[2]!r} is not a "
                                                   "valid Instagram name")
            for attempt in range(1, self.c.instagram_rate_limit_retries + 2):
                try:
                    self._collect(target, entry, counts)
                    break
                except ie.InstaloaderException as exc:
                    if rate_limited(exc) and attempt <= self.c.instagram_rate_limit_retries:
                        self.rc.wait_out(target)
                        continue
                    raise
        except ie.AbortDownloadException as exc:
            raise ConnectorError(f"Instagram stopped the session: {exc}") from None
        except (ie.InstaloaderException, requests.RequestException, KeyError, ValueError,
                TypeError) as exc:
            outcome, error = outcome_of(exc), f"{type(exc).__name__}: {str(exc)[:300]}"
            if rate_limited(exc):
                outcome = "rate-limited"
        except (UserError, KafkaError):
            raise  # ours or Kafka's: not this target's fault, and the next would fail too
        except Exception as exc:  # instaloader's surprise on an odd answer: this target's
            outcome, error = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            if self.stopper.is_set() and outcome == "ok" and "done" not in entry:
                outcome = "interrupted"
            entry.pop("done", None)
            if outcome != "interrupted":
                entry["outcome"] = outcome
            if outcome in FINAL:
                entry.pop("frozen", None)
                entry.pop("taken", None)
            self.outlet.publisher.flush(30)
            self.batch.save(self.rc)
            line = {"target": target, "outcome": outcome, **counts, "started": started,
                    "ended": now_iso()}
            if error:
                line["error"] = error
            self.batch.record(line)
            if outcome != "interrupted":
                self.outlet.progress.finish(outcome)

    def _iterator(self, target: str) -> NodeIterator[instaloader.Post]:
        kind, _, name = target.partition(":")
        if kind == "hashtag":
            return instaloader.Hashtag.from_name(self.context, name).get_posts_resumable()
        profile = instaloader.Profile.from_username(self.context, name)
        return profile.get_posts()

    def _collect(self, target: str, entry: dict[str, Any], counts: dict[str, int]) -> None:
        posts = self._iterator(target)
        frozen = entry.get("frozen")
        # Posts of this target taken by the runs before (a kill, a timeout): --max-posts
        # counts over every run of the target, not afresh after each restart.
        taken = 0
        if frozen:
            try:
                posts.thaw(FrozenNodeIterator(**frozen))
                taken = int(entry.get("taken") or 0)
            except (ie.InvalidArgumentException, TypeError) as exc:
                warn("cannot resume; starting the target over", target=target, error=str(exc))
        entry["taken"] = taken
        most = self.c.instagram_max_posts
        last_save = time.monotonic()
        for post in _bounded(posts, self.stopper) if not most or taken < most else ():
            payload = _media_object(post)
            # What found it, the post's query column, spelt as TikTok's are (``london`` for
            # a hashtag, ``@alice`` for a profile): ``WHERE query = 'london'`` finds both.
            payload["query"], payload["query_kind"] = query_of(target)
            post_id = str(payload.get("pk") or post.mediaid)
            if post_id in self.batch.published:
                counts["skipped"] += 1
            else:
                self.outlet.emit([RawPost("instagram", post_id, FORMAT, payload,
                                          source=f"instagram:{target}")])
                # Acknowledged before it is archived: a crash in between repeats one post
                # (the dataflow dedupes it), never loses one.
                self.outlet.publisher.flush(30)
                self.batch.archive(post_id)
                counts["posts"] += 1
                counts["media"] += len(instagram_media(payload, post_id))
            entry["frozen"] = posts.freeze()._asdict()
            # The thawed iterator yields this post again (instaloader freezes at the last
            # one returned), so it is not yet counted among the posts before the position.
            entry["taken"] = taken
            taken += 1
            if time.monotonic() - last_save >= self.c.instagram_save_every:
                self.batch.save(self.rc)
                last_save = time.monotonic()
            if most and taken >= most:
                break
        if not self.stopper.is_set():
            entry["done"] = True


def _bounded(posts: NodeIterator[instaloader.Post], stopper: Stopper
             ) -> Iterator[instaloader.Post]:
    for post in posts:
        yield post
        if stopper.is_set():
            return


def _media_object(post: instaloader.Post) -> dict[str, Any]:
    """The private-API Media object behind a post: the feed's ``iphone_struct`` when logged
    in, the shortcode query's item (plus instaloader's legacy keys) when not."""
    node = post._asdict()
    media = node.get("iphone_struct")
    return dict(media) if isinstance(media, dict) else {
        k: v for k, v in node.items() if k not in ("owner",)}


# --------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    resolve.install()

    def preflight() -> None:
        if not targets_of(args):
            raise ConnectorError("no targets: give --profiles NAME|FILE... or --hashtags TAG...")
        session = args.settings.collectors.instagram_session_file
        if session and not Path(session).is_file():
            raise ConnectorError(f"session file {session} does not exist")
        check_writable(args.state, "--state")
        load_state(args.state)
        if args.state is not None:
            check_writable(Path(f"{args.state}.ids"), "the archive of published ids")
        check_writable(args.run_log or (Path(f"{args.state}.runs.jsonl") if args.state
                                        else None), "--run-log")

    def body(outlet: Outlet, stopper: Stopper) -> None:
        InstagramCollector(args, outlet, stopper).run()

    return run_sync(args, "instagram", body, preflight)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("instagram", help="Instagram profiles and hashtags through instaloader")
    p.add_argument("--profiles", nargs="+", default=[], metavar="NAME|FILE",
                   help="profile names, or files of one name a line")
    p.add_argument("--hashtags", nargs="+", default=[], metavar="TAG")
    p.add_argument("--state", type=Path, default=None, metavar="F",
                   help="JSON file of the batch's progress; STATE.ids archives published ids")
    p.add_argument("--run-log", type=Path, default=None, metavar="F",
                   help="JSON lines, one per target per run (default STATE.runs.jsonl)")
    p.set_defaults(live_run=run)
