"""``shoal fetch``: download the URLs of a CSV column, minet-style, with shoal's engine.

The report has one row per URL whatever happened to it, so that a run can be audited,
resumed (``--resume`` skips the URLs already in ``-o``) and joined back to the input.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shoal.app.config import add_options, resolve
from shoal.errors import UserError
from shoal.fetch.policy import FetchConfig, FetchResult, fetch_config
from shoal.options import Settings

REPORT_COLUMNS = (
    "url", "http_status", "fetch_error", "path", "mimetype", "bytes", "sha256", "datetime_utc",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fetch",
        help="download the URLs of a CSV column",
        description="Download the URLs of COLUMN of a CSV file politely and write a report "
        "CSV with one row per URL (the input row's columns plus the fetch's outcome).",
    )
    p.add_argument("column", help="the column holding URLs")
    p.add_argument("-i", "--input", required=True, type=Path, metavar="FILE.csv")
    p.add_argument("--explode", metavar="SEP", help="split each cell on SEP (e.g. '|')")
    p.add_argument("-O", "--output-dir", type=Path, default=Path("downloaded"), metavar="DIR",
                   help="where files go (under DIR/media) and the fetch ledger (default: "
                   "downloaded)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.csv",
                   help="report file (default: stdout)")
    p.add_argument("--compress", action="store_true",
                   help="store files gzip-compressed (name + .gz); sha256 and bytes stay those "
                   "of the original content")
    p.add_argument("--mime-types", "--media-types", dest="mime_types", metavar="TYPES",
                   help="comma-separated MIME types to keep, e.g. image,video/mp4 (default: "
                   "all)")
    p.add_argument("--resume", action="store_true",
                   help="skip URLs already in the -o report and append to it")
    p.add_argument("--resolve", action="append", default=[], metavar="HOST=IP",
                   help="answer HOST with IP without DNS (trusted even if private; for tests "
                   "and benchmarks)")
    p.add_argument("--silent", action="store_true", help="no progress bar")
    p.add_argument("--window", type=int, default=10_000, metavar="N",
                   help="URLs in the engine at once (bounds memory; default: 10000)")
    add_options(p, "fetch")  # politeness and safety: [media] in the configuration
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UserError as exc:
        print(f"shoal fetch: error: {exc}", file=sys.stderr)
        return 2


def config_from_args(args: argparse.Namespace) -> FetchConfig:
    resolve_map: dict[str, str] = {}
    for item in args.resolve:
        host, sep, ip = item.partition("=")
        if not sep or not host or not ip:
            raise UserError(f"--resolve wants HOST=IP, not {item!r}")
        resolve_map[host.lower().rstrip(".")] = ip.strip("[]")
    types = frozenset(t.strip() for t in (args.mime_types or "").split(",") if t.strip())
    # From the full CLI the settings are resolved already; called on its own (tests, other
    # programs) the flags are read over the defaults here, with the same checks.
    settings = getattr(args, "settings", None) or resolve(args, Settings())
    try:
        return fetch_config(settings.media, mime_types=types, compress=args.compress,
                            resolve=resolve_map)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    except FileNotFoundError:
        raise UserError(f"input file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _jobs(
    path: Path, column: str, explode: str | None, skip: set[str]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(job id, url, input row) for every URL of the column, exploded cells in order."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.DictReader(fh)):
            cell = (row.get(column) or "").strip()
            values = cell.split(explode) if explode else [cell]
            for pos, value in enumerate(v.strip() for v in values):
                if value and value not in skip:
                    meta: dict[str, Any] = {k: v for k, v in row.items() if k is not None}
                    if explode:
                        meta.setdefault("position", pos)
                    yield f"{n}:{pos}", value, meta


def _already_reported(report: Path) -> set[str]:
    try:
        with open(report, newline="", encoding="utf-8") as fh:
            return {row.get("url") or "" for row in csv.DictReader(fh)} - {""}
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read the report to resume {report}: {exc}") from None


def report_row(row: dict[str, Any], url: str, result: FetchResult) -> dict[str, Any]:
    return {
        **row, "url": url, "http_status": result.http_status or "",
        "fetch_error": result.error, "path": result.path, "mimetype": result.mimetype,
        "bytes": result.bytes if result.ok else "", "sha256": result.sha256,
        "datetime_utc": result.fetched_at,
    }


def _run(args: argparse.Namespace) -> int:
    csv.field_size_limit(2**31 - 1)
    config = config_from_args(args)
    header = _header(args.input)
    if args.column not in header:
        raise UserError(
            f"no column {args.column!r} in {args.input} (columns: {', '.join(header)})"
        )
    if args.explode == "":
        raise UserError("--explode needs a non-empty separator")
    if args.resume and not args.output:
        raise UserError("--resume needs -o REPORT.csv")
    if args.window < 1:
        raise UserError("--window must be >= 1")
    skip = _already_reported(args.output) if args.resume else set()
    total = sum(1 for _ in _jobs(args.input, args.column, args.explode, skip))
    fields = header + [c for c in REPORT_COLUMNS if c not in header]
    appending = bool(args.resume and args.output and args.output.exists()
                     and args.output.stat().st_size)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        out: TextIO = (
            open(args.output, "a" if appending else "w", newline="", encoding="utf-8")  # noqa: SIM115
            if args.output else sys.stdout
        )
    except OSError as exc:
        raise UserError(str(exc)) from None
    try:
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        if not appending:
            writer.writeheader()
        jobs = _jobs(args.input, args.column, args.explode, skip)
        return asyncio.run(_fetch(config, args, jobs, total, writer, out))
    except KeyboardInterrupt:
        print("shoal fetch: interrupted; rerun with --resume to go on", file=sys.stderr)
        return 130
    finally:
        if out is not sys.stdout:
            out.close()


async def _fetch(
    config: FetchConfig, args: argparse.Namespace, jobs: Iterator[tuple[str, str, dict[str, Any]]],
    total: int, writer: csv.DictWriter[str], out: TextIO,
) -> int:
    from connectors.fetch.engine import Fetcher
    from connectors.fetch.ledger import FetchLedger

    ledger = FetchLedger.in_root(args.output_dir)
    progress = Progress(
        TextColumn("fetch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=args.silent,
    )
    failed = 0
    try:
        with progress:
            task = progress.add_task("fetch", total=total, bad="")
            async with Fetcher(config, args.output_dir, ledger) as fetcher:
                async for _job_id, meta, result in fetcher.fetch_many(jobs, args.window):
                    writer.writerow(report_row(dict(meta or {}), result.url, result))
                    out.flush()
                    failed += not result.ok
                    progress.update(task, advance=1, bad=f"{failed} failed" if failed else "")
    finally:
        ledger.close()
    return 0
