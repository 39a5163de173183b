"""Keyword image search through ddgs (DuckDuckGo): each found image is a post to fetch.

A data scientist turned a CSV of keywords into image URLs with a browser and downloaded them
into one folder per keyword. Here each keyword is one ``DDGS().images`` search (ddgs's own
client, request building and result parsing); each result becomes an ``image-search`` post
(platform ``images``, id from the image URL, the keyword in ``query``), and the dataflow
fetches the image like any media, ``data:`` URLs included.

ddgs answers a refused or rate-limited search (DuckDuckGo's 403/418/429) with "No results
found" or a ratelimit error, so a search that fails is tried again after a backoff, and a
keyword that still fails is recorded in the run log and the batch goes on.

ddgs talks through primp, a Rust HTTP client that does its own name resolution and TLS: it
does not see ``SHOAL_RESOLVE`` nor Python's CA settings, only ``--proxy`` (also ``DDGS_PROXY``)
and ``--ca-file`` (its ``verify`` option), which is how it is pointed elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path
from typing import Any

import orjson
from ddgs import DDGS
from ddgs.exceptions import DDGSException

from connectors.collect.live import (
    Backoff,
    ConnectorError,
    Outlet,
    Stopper,
    add_common_options,
    append_line,
    check_writable,
    run_sync,
    warn,
)
from connectors.kafka.publisher import now_iso
from shoal.batch import BatchProgress
from shoal.logs import event
from shoal.model import DeadLetter, RawPost
from shoal.names import is_utf8
from shoal.normalise.images import FORMAT, image_id

log = logging.getLogger("shoal.collect")


def keywords_of(args: argparse.Namespace) -> list[str]:
    """Keywords from the command line, then the first column of ``--keywords-file`` (UTF-8,
    with or without the BOM spreadsheets write; a header named ``keyword`` or ``query`` is
    skipped); repeats dropped, whatever their case (the search does not tell ``Cats`` from
    ``cats``, and two folders differing only in case are one on many disks), first spelling
    and order kept."""
    words = list(args.keywords)
    for word in words:
        if not is_utf8(word):
            raise ConnectorError(f"keyword {word!a} is not UTF-8 text")
    if args.keywords_file:
        try:
            with open(args.keywords_file, newline="", encoding="utf-8-sig") as fh:
                for n, row in enumerate(csv.reader(fh)):
                    if row and not (n == 0 and row[0].strip().lower() in ("keyword", "query")):
                        words.append(row[0])
        except UnicodeDecodeError as exc:
            raise ConnectorError(f"keywords file {args.keywords_file} is not UTF-8 text "
                                 f"(byte {exc.start})") from None
        except csv.Error as exc:
            raise ConnectorError(f"keywords file {args.keywords_file}: {exc}") from None
    out: dict[str, str] = {}
    for word in words:
        word = " ".join(word.split())
        if word:
            out.setdefault(word.casefold(), word)
    return list(out.values())


def result_post(keyword: str, result: Any, found_at: str) -> RawPost | DeadLetter:
    """The post of one search result, or a dead letter with its reason and content when it
    cannot be one (no image URL): dropped without a word before, against the promise that
    every input that cannot become a post is kept."""
    image = result.get("image") if isinstance(result, dict) else None
    if not isinstance(image, str) or not image:
        what = "without an image URL" if isinstance(result, dict) else "that is no object"
        return DeadLetter(f"image search result {what}", f"images:{keyword}",
                          orjson.dumps(result, default=str), FORMAT)
    post_id = image_id(image, keyword)
    payload = {**result, "id": post_id, "query": keyword, "found_at": found_at}
    return RawPost("images", post_id, FORMAT, payload, source=f"images:{keyword}")


def search(args: argparse.Namespace, keyword: str, stopper: Stopper,
           progress: BatchProgress | None = None) -> list[dict[str, Any]]:
    """One keyword's results, tried again ``--retries`` times after a backoff."""
    c = args.settings.collectors
    backoff = Backoff.from_args(args)
    verify: bool | str = c.images_ca_file or True
    for attempt in range(c.images_retries + 1):
        try:
            with stopper.blocking():
                client = DDGS(proxy=c.images_proxy or None, timeout=int(c.images_timeout),
                              verify=verify)
                results: list[dict[str, Any]] = client.images(
                    keyword, max_results=c.images_max_results, backend=c.images_backend,
                    region=c.images_region, safesearch=c.images_safesearch)
            return results
        except DDGSException as exc:
            if attempt == c.images_retries:
                raise
            delay = backoff.next()
            warn("search failed; trying again", kind="images", keyword=keyword,
                 error=str(exc)[:200], retry_in=round(delay, 2))
            if progress is not None:
                progress.waiting(time.time() + delay, "backoff")
            stopper.sleep(delay)
            if progress is not None:
                progress.resumed()
    return []


def collect(args: argparse.Namespace, outlet: Outlet, stopper: Stopper) -> None:
    keywords = keywords_of(args)
    outlet.progress.begin(len(keywords))
    for keyword in keywords:
        if stopper.is_set():
            break
        started = now_iso()
        outlet.progress.start(keyword)
        line: dict[str, Any] = {"target": keyword, "outcome": "ok", "posts": 0}
        try:
            results = search(args, keyword, stopper, outlet.progress)
            found = [result_post(keyword, r, started) for r in results]
            posts = [p for p in found if isinstance(p, RawPost)]
            dead = [p for p in found if isinstance(p, DeadLetter)]
        except DDGSException as exc:
            line.update(outcome="failed", error=str(exc)[:300])
            posts, dead = [], []
        except Exception as exc:  # ddgs's own bug on an odd answer: this keyword's fate only
            line.update(outcome="error", error=f"{type(exc).__name__}: {exc}"[:300])
            posts, dead = [], []
        outlet.emit([*posts, *dead])
        outlet.publisher.flush(30)
        line.update(posts=len(posts), started=started, ended=now_iso())
        event(log, "target done", kind="images", **line)
        outlet.progress.finish(line["outcome"])
        if args.run_log:
            append_line(args.run_log, line)


def run(args: argparse.Namespace) -> int:
    def preflight() -> None:
        if args.keywords_file and not Path(args.keywords_file).is_file():
            raise ConnectorError(f"keywords file {args.keywords_file} does not exist")
        if not keywords_of(args):
            raise ConnectorError("no keywords: give KEYWORD... or --keywords-file F")
        check_writable(args.run_log, "--run-log")

    return run_sync(args, "images", lambda out, stop: collect(args, out, stop), preflight)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("images", help="keyword image search through ddgs")
    p.add_argument("keywords", nargs="*", metavar="KEYWORD")
    p.add_argument("--keywords-file", type=Path, default=None, metavar="F",
                   help="CSV whose first column holds keywords")
    p.add_argument("--run-log", type=Path, default=None, metavar="F",
                   help="JSON lines, one per keyword per run")
    add_common_options(p)
    p.set_defaults(live_run=run)
