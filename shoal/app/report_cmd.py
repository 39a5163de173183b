"""``shoal report hashtags|day|images``: what spreads, as tables, pictures and pages.

Each report reads the DuckDB catalog read-only (``connectors.store.report_data``), hands
plain rows to a pure module (``shoal.hashtags``, ``shoal.day_report``, ``shoal.spread``) and
prints the result; ``--png`` and ``--html`` write the picture (``shoal.charts``) and a
self-contained page beside it. User mistakes are one line (``shoal: error: ...``, exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import wraps
from pathlib import Path
from typing import Any

import duckdb
import orjson

from shoal.app.config import add_options
from shoal.errors import UserError

Command = Callable[[argparse.Namespace], int]


def one_line_errors(func: Command) -> Command:
    """User mistakes and failed queries end as one line and exit 2, like the rest of shoal."""

    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UserError as exc:
            print(f"shoal: error: {exc}", file=sys.stderr)
            return 2
        except duckdb.Error as exc:
            print(f"shoal: error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2

    return run


def data_dir_of(args: argparse.Namespace) -> Path:
    path: Path = args.data_dir
    if not path.is_dir():
        raise UserError(f"no such data dir: {path}")
    return path


def sealed_dir_of(args: argparse.Namespace) -> Path:
    """The data dir a report reads, refused in one line when no hour was sealed there yet.

    Such a folder has no views: without this check the user got DuckDB's ``Catalog Error:
    Table with name posts does not exist!`` instead of the reason. (``shoal serve`` takes an
    empty data dir: its page fills in once collection seals hours.)
    """
    from connectors.store.catalog import has_sealed

    path = data_dir_of(args)
    if not has_sealed(path):
        raise UserError(f"nothing is sealed in {path} yet: no hour has been written there "
                        "(`shoal up` or `shoal process` with this --data-dir seal hours)")
    return path


def check_platform(con: duckdb.DuckDBPyConnection, platform: str | None) -> None:
    """``--platform`` must name a platform of the data dir: a typo (``twiter``) selected no
    post and printed an empty table with exit 0, like a platform with nothing to show."""
    from connectors.store import report_data

    if platform is None:
        return
    known = report_data.platforms(con)
    if platform not in known:
        raise UserError(f"--platform {platform!r}: no hour of it is sealed here (platforms: "
                        f"{', '.join(known) or 'none'})")


def _time(value: str | None, flag: str) -> datetime | None:
    from shoal.hours import parse_iso

    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise UserError(f"{flag}: {value!r} is not an ISO 8601 time (e.g. "
                        "2021-05-11T18:00:00Z)") from None


def window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    since, until = _time(args.since, "--from"), _time(args.until, "--until")
    if since and until and since >= until:
        raise UserError("--from must be before --until")
    return since, until


def write_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def note_glyphs(texts: Sequence[str]) -> None:
    """One line on stderr for the characters the chart draws as boxes (emoji, CJK, controls),
    in place of matplotlib's two-line warning per character (see ``shoal.charts``)."""
    from shoal.charts import missing_glyphs

    missing = missing_glyphs(texts)
    if missing:
        print(f"note: the chart's font has no glyph for {missing} (drawn as boxes; the tables "
              "have them)", file=sys.stderr)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            sys.stdout.write(orjson.dumps(dict(zip(header, row, strict=True))).decode() + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*header)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)


# --------------------------------------------------------------------------- hashtags


@one_line_errors
def cmd_hashtags(args: argparse.Namespace) -> int:
    from connectors.store import report_data
    from shoal.app import report_html as html
    from shoal.charts import hashtag_chart
    from shoal.hashtags import cooccurrence

    data_dir = sealed_dir_of(args)
    since, until = window(args)
    if args.exclude_with_hashtag and not args.with_hashtag:
        raise UserError("--exclude-with-hashtag needs --with-hashtag")
    selection = report_data.PostFilter(platform=args.platform, since=since, until=until)
    con = report_data.readonly(data_dir)
    try:
        check_platform(con, args.platform)
        posts = report_data.hashtag_posts(con, selection, with_text=bool(args.query))
        try:
            result = cooccurrence(posts, top=args.top, with_tag=args.with_hashtag,
                                  exclude_with_tag=args.exclude_with_hashtag, query=args.query)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    finally:
        con.close()
    rows = [(r.hashtag, r.posts, round(r.ratio, 6)) for r in result.rows]
    print_table(("hashtag", "posts", "ratio"), rows, args.format)
    if args.format == "table":
        print(f"{result.selected} posts selected", file=sys.stderr)
    title = describe(args)
    if args.png or args.html:
        png = hashtag_chart(result, title)
        note_glyphs([title, *(r.hashtag for r in result.rows)])
        if args.png:
            write_file(args.png, png)
        if args.html:
            body = (f'<p><img alt="chart" src="{html.data_uri(png, "image/png")}"></p>'
                    + html.hashtag_table(result))
            write_file(args.html, html.page(title, body).encode())
    return 0


def describe(args: argparse.Namespace) -> str:
    """The selection in words, for titles."""
    parts = ["Top co-occurring hashtags"]
    if args.with_hashtag:
        parts.append(f"with #{args.with_hashtag.lstrip('#')}")
    if args.query:
        parts.append(f"matching {args.query!r}")
    if args.platform:
        parts.append(f"on {args.platform}")
    return " ".join(parts)


# --------------------------------------------------------------------------- day


@one_line_errors
def cmd_day(args: argparse.Namespace) -> int:
    from connectors.store import report_data
    from shoal.app import report_html as html
    from shoal.charts import day_chart
    from shoal.day_report import build

    data_dir = sealed_dir_of(args)
    try:
        # strptime takes 2021-5-1 too: written back zero-padded, as the data dir names days
        # (the query found no hour of '2021-5-1', and the chart's hours failed on it).
        args.day = datetime.strptime(args.day, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise UserError(f"DAY must look like 2021-05-11, not {args.day!r}") from None
    con = report_data.readonly(data_dir)
    try:
        check_platform(con, args.platform)
        hours = report_data.day_hours(con, args.day, args.platform)
    finally:
        con.close()
    report = build(args.day, hours, report_data.deadletters_by_reason(data_dir, args.day),
                   tz=args.settings.flow.tz)
    print_table(report.header(), report.values() if args.format == "json" else report.table(),
                args.format)
    dead = (f"# dead letters {report.day} (inputs that became no post, all platforms): "
            f"{report.deadletter_total}")
    # On stderr in every format: on stdout, this comment line made `--format csv` no CSV
    # (csv.reader and pandas read it as a row whose hour was "# dead letters ...").
    print(dead, file=sys.stderr)
    if report.misnamed(args.settings.flow.tz):
        print(f"note: these hours were not named in {args.settings.flow.tz}: give report day the "
              "--tz they were sealed with, for the chart's hours", file=sys.stderr)
    if not hours:
        print(f"no hour of {args.day} is sealed"
              + (f" for {args.platform}" if args.platform else ""), file=sys.stderr)
    if args.png or args.html:
        png = day_chart(report)
        note_glyphs(report.collectors)
        if args.png:
            write_file(args.png, png)
        if args.html:
            body = (f'<p><img alt="chart" src="{html.data_uri(png, "image/png")}"></p>'
                    + html.day_table(report))
            write_file(args.html, html.page(f"Day report {args.day}", body).encode())
    return 0


# --------------------------------------------------------------------------- images


@one_line_errors
def cmd_images(args: argparse.Namespace) -> int:
    from connectors.store import report_data
    from connectors.store.thumbs import thumbnail
    from shoal.app import report_html as html
    from shoal.spread import MAX_DISTANCE, image_groups

    data_dir = sealed_dir_of(args)
    since, until = window(args)
    if not 0 <= args.distance <= MAX_DISTANCE:
        raise UserError(f"--distance must be between 0 and {MAX_DISTANCE}")
    if args.top < 1:
        raise UserError("--top must be at least 1")
    con = report_data.readonly(data_dir)
    try:
        uses = report_data.image_uses(con, report_data.PostFilter(since=since, until=until))
    finally:
        con.close()
    groups = image_groups(uses, args.distance, args.top)
    print_table(html.GROUP_HEADER, html.group_rows(groups), args.format)
    if args.html:
        thumbs = {}
        for g in groups:
            data = thumbnail(data_dir, g.representative)
            if data is not None:
                thumbs[g.representative_sha256] = html.data_uri(data, "image/jpeg")
        body = (f'<p class="muted">{len(uses)} fetched images, grouped within '
                f"{args.distance} bits</p>" + html.gallery(groups, thumbs)
                + html.table(html.GROUP_HEADER, html.group_rows(groups), "groups"))
        write_file(args.html, html.page("Images that spread", body).encode())
    return 0


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, command: str, formats: bool = True) -> None:
    add_options(p, command)  # --data-dir, also from [flow] data_dir or SHOAL_FLOW_DATA_DIR
    if formats:
        p.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="since", metavar="TIME",
                   help="posts created at or after (ISO 8601)")
    p.add_argument("--until", dest="until", metavar="TIME",
                   help="posts created before (ISO 8601)")


def add_parser(sub: Any) -> None:
    report = sub.add_parser("report", help="hashtags, day and image-spread reports")
    kinds = report.add_subparsers(dest="report", metavar="REPORT", required=True)

    p = kinds.add_parser("hashtags", help="top co-occurring hashtags with their ratios")
    _common(p, "report hashtags")
    p.add_argument("--top", type=int, default=20, help="hashtags listed (default 20)")
    p.add_argument("--platform", default=None, help="only this platform's posts")
    p.add_argument("--with-hashtag", metavar="TAG", default=None,
                   help="only posts carrying this hashtag (case-insensitive)")
    p.add_argument("--exclude-with-hashtag", action="store_true",
                   help="leave the --with-hashtag one out of the table")
    p.add_argument("--query", metavar="TEXT", default=None,
                   help="only posts whose full text contains TEXT (case-insensitive)")
    _window(p)
    p.add_argument("--png", type=Path, default=None, help="write a bar chart here")
    p.add_argument("--html", type=Path, default=None, help="write a page with chart and table")
    p.set_defaults(func=cmd_hashtags)

    p = kinds.add_parser("day", help="posts per hour per collector, diff, late, dead letters")
    _common(p, "report day")
    p.add_argument("day", metavar="DAY", help="YYYY-mm-dd, as the data dir names days")
    p.add_argument("--platform", default=None, help="only this platform")
    p.add_argument("--png", type=Path, default=None, help="write the chart here")
    p.add_argument("--html", type=Path, default=None, help="write a page with chart and table")
    p.set_defaults(func=cmd_day)

    p = kinds.add_parser("images", help="groups of near-identical fetched images")
    _common(p, "report images")
    p.add_argument("--top", type=int, default=20, help="groups listed (default 20)")
    p.add_argument("--distance", type=int, default=8,
                   help="most differing bits of two 64-bit hashes in one group (default 8)")
    _window(p)
    p.add_argument("--html", type=Path, default=None, help="write a page with thumbnails")
    p.set_defaults(func=cmd_images)
