"""``shoal fetch``: download the URLs of a CSV column, minet-style, with shoal's engine.

The report joins back to the input: every input row appears in it, with its cells exactly as
they were, once per URL of its cell (or once with empty fetch columns when it has none), and
the fetch's own columns, all named ``fetch_*``, say which row (``fetch_original_index``) and
which URL of the cell (``fetch_position``) a line and its file belong to. ``--resume`` goes
on from an interrupted report by those two keys, so a URL shared by two rows keeps both
lines, and the finished report has the lines an uninterrupted run would have written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import errno
import io
import os
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shoal.app.config import add_options, resolve
from shoal.errors import UserError
from shoal.fetch.policy import FetchConfig, FetchResult, fetch_config, row_fields, row_values
from shoal.options import Settings

if TYPE_CHECKING:
    from connectors.fetch.ledger import FetchLedger

# Every column the fetch adds starts with ``fetch_``: minet and twitwi exports have ``url``,
# ``id``, ``position``... of their own, and the report must keep them untouched.
FETCH_COLUMNS = (
    "fetch_original_index",  # the input row, 0-based, header not counted (minet's original_index)
    "fetch_position",  # the URL's place in its cell once split on --explode (0 without)
    "fetch_url", "fetch_resolved_url", "fetch_http_status", "fetch_error", "fetch_path",
    "fetch_mimetype", "fetch_bytes", "fetch_sha256", "fetch_datetime_utc",
    # How the file's URL was found when the URL was not downloadable as it was (a TikTok
    # video page resolved by yt-dlp): "page from https://www.tiktok.com/...", else empty.
    # fetch_resolved_url is then the file's URL.
    "fetch_resolved",
)
LINE_END = "\n"  # minet's and twitwi's: the input cells of a report line keep their bytes

Key = tuple[int, int | None]  # (input row, position); position None: a row without URL


# The top-level MIME types (RFC 6838), which --mime-types takes alone ("image": every image).
TOP_TYPES = frozenset({"application", "audio", "example", "font", "haptics", "image", "message",
                       "model", "multipart", "text", "video"})
# The dataflow's media kinds, which its --media-types takes: the same words mean the files
# they are here, so that the flag both commands share does not refuse every download.
# (Twitter's GIFs are MP4 videos; elsewhere a GIF is image/gif.)
KIND_TYPES = {"photo": ("image",), "video": ("video",), "gif": ("video", "image/gif")}


def mime_types(text: str) -> frozenset[str]:
    """``--mime-types``: comma-separated ``type/subtype`` or ``type``; a typo (``imgae``)
    refused every download, so an unknown word is a one-line error."""
    out: set[str] = set()
    for item in (t.strip().lower() for t in text.split(",")):
        if not item:
            continue
        if item in KIND_TYPES:
            out.update(KIND_TYPES[item])
            continue
        top, slash, sub = item.partition("/")
        if top not in TOP_TYPES or (slash and not sub):
            raise UserError(f"--mime-types: {item!r} is not a MIME type (e.g. image, video/mp4; "
                            f"known top-level types: {', '.join(sorted(TOP_TYPES))})")
        out.add(item)
    return frozenset(out)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fetch",
        help="download the URLs of a CSV column",
        description="Download the URLs of COLUMN of a CSV file politely and write a report "
        "CSV with a line per URL and per row without one: the input row's cells untouched, "
        "then the fetch's columns (" + ", ".join(FETCH_COLUMNS) + ").",
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
                   "all); photo, video and gif, the dataflow's media kinds, mean image, "
                   "video, and video or image/gif")
    p.add_argument("--resume", action="store_true",
                   help="skip the (row, position) pairs already in the -o report and append "
                   "to it")
    p.add_argument("--resolve", action="append", default=[], metavar="HOST=IP",
                   help="answer HOST with IP without DNS (trusted even if private; for tests "
                   "and benchmarks)")
    p.add_argument("--silent", action="store_true", help="no progress bar")
    p.add_argument("--window", type=int, default=10_000, metavar="N",
                   help="URLs in the engine at once (bounds memory; default: 10000)")
    add_options(p, "fetch")  # politeness and safety: [media] in the configuration
    p.set_defaults(func=run)
    return p


# A local write refused for one of these is a path the user can fix (exit 2, like a bad
# option); a full disk or an I/O error is not (exit 1).
USER_PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES,
                              errno.EPERM, errno.EROFS})


def run(args: argparse.Namespace) -> int:
    from connectors.fetch.store import LocalStorageError

    try:
        return _run(args)
    except UserError as exc:
        print(f"shoal fetch: error: {exc}", file=sys.stderr)
        return 2
    except ReportError as exc:
        print(f"shoal fetch: error: {exc}", file=sys.stderr)
        return 1
    except LocalStorageError as exc:
        # Not a URL's fate: the URL under way has no report line, so --resume fetches it.
        again = "run again with --resume" if args.output else "run again"
        print(f"shoal fetch: error: -O {args.output_dir}: {exc}; fix it and {again}",
              file=sys.stderr)
        return 2 if exc.errno in USER_PATH_ERRNOS else 1


class ReportError(Exception):
    """The report could not be written (a full disk, a closed pipe): one line naming it."""


def report_name(args: argparse.Namespace) -> str:
    return f"-o {args.output}" if args.output else "stdout"


def emit(out: TextIO, text: str, args: argparse.Namespace) -> None:
    """Write ``text`` to the report and flush it: a kill leaves whole lines but the last."""
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        again = "; free space and run again with --resume" if args.output else ""
        raise ReportError(f"cannot write the report ({report_name(args)}): "
                          f"{exc.strerror or exc}{again}") from None


def config_from_args(args: argparse.Namespace) -> FetchConfig:
    resolve_map: dict[str, str] = {}
    for item in args.resolve:
        host, sep, ip = item.partition("=")
        if not sep or not host or not ip:
            raise UserError(f"--resolve wants HOST=IP, not {item!r}")
        resolve_map[host.lower().rstrip(".")] = ip.strip("[]")
    types = mime_types(args.mime_types or "")
    # From the full CLI the settings are resolved already; called on its own (tests, other
    # programs) the flags are read over the defaults here, with the same checks.
    settings = getattr(args, "settings", None) or resolve(args, Settings())
    try:
        return fetch_config(settings.media, mime_types=types, compress=args.compress,
                            resolve=resolve_map)
    except ValueError as exc:
        raise UserError(str(exc)) from None


# --- the input ------------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One line of the report to come: an input row, and one URL of its cell or none."""

    index: int
    position: int | None
    url: str
    cells: list[str]
    template: dict[str, str] = field(default_factory=dict)  # the row's template values

    @property
    def key(self) -> Key:
        return (self.index, self.position)


@dataclass(slots=True)
class Input:
    """What the run reads of ``FILE.csv``: checked once, before anything is downloaded.

    ``path`` is the file read (a spooled copy of a pipe, see :func:`readable_input`),
    ``name`` what the user called it, for messages."""

    path: Path
    name: str
    header: list[str]
    column: int
    explode: str | None
    fields: dict[str, str]  # template field -> input column (``row_fields``)

    def lines(self) -> Iterator[Line]:
        """Every report line of the input, in input order."""
        width = len(self.header)
        first = {name: i for i, name in reversed(list(enumerate(self.header)))}
        with _open_input(self.path) as fh:
            reader = csv.reader(fh)
            next(reader, None)
            index = -1
            for cells in reader:
                if not cells:
                    # A blank line is no row, as for csv.DictReader and pandas: not
                    # counted, so that indices are the row numbers they give.
                    continue
                index += 1
                if len(cells) > width:
                    raise UserError(
                        f"{self.name}: row {index} (line {reader.line_num}) has {len(cells)} "
                        f"cells, the header {width}"
                    )
                cells += [""] * (width - len(cells))
                urls = _urls(cells[self.column], self.explode)
                if not urls:
                    yield Line(index, None, "", cells)
                    continue
                row = {c: cells[first[c]] for c in self.fields.values()}
                for position, url in urls:
                    yield Line(index, position, url, cells, dict(row))


def _open_input(path: Path, name: str | None = None) -> TextIO:
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"input file not found: {name or path}") from None
    except OSError as exc:
        raise UserError(f"cannot read {name or path}: {exc.strerror or exc}") from None


STDIN = Path("-")


def input_name(path: Path) -> str:
    return "stdin (-i -)" if path == STDIN else str(path)


def needs_spool(path: Path) -> bool:
    """Is the input read only once (``-``, a pipe, ``<(...)``, a device)? The run reads it
    three times (header, the check of every row, the fetch): such an input gave an empty
    report on the second read."""
    if path == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # opening it says why, in one line
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


@contextlib.contextmanager
def readable_input(path: Path) -> Iterator[Path]:
    """A path the run may read as often as it needs: ``path`` itself for a regular file,
    else a temporary copy of what ``path`` (or stdin) gives, removed at the end."""
    if not needs_spool(path):
        yield path
        return
    name = input_name(path)
    fd, spool = tempfile.mkstemp(prefix="shoal-fetch-input-", suffix=".csv")
    try:
        try:
            src = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UserError(f"cannot read {name}: {exc.strerror or exc}") from None
        with src, os.fdopen(fd, "wb") as out:
            while True:
                try:
                    block = src.read(1 << 20)
                except OSError as exc:
                    raise UserError(f"cannot read {name}: {exc.strerror or exc}") from None
                if not block:
                    break
                try:
                    out.write(block)
                    out.flush()
                except OSError as exc:
                    raise UserError(f"cannot copy {name} to a temporary file in "
                                    f"{tempfile.gettempdir()} ({exc.strerror}): set TMPDIR "
                                    "to a folder with room") from None
        yield Path(spool)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spool)


def _urls(cell: str, explode: str | None) -> list[tuple[int, str]]:
    """(position, URL) of a cell; a position counts the empty items it skips, so that it
    stays the index in ``cell.split(SEP)``."""
    values = cell.split(explode) if explode else [cell]
    return [(pos, v.strip()) for pos, v in enumerate(values) if v.strip()]


def read_input(args: argparse.Namespace, template: str | None, path: Path | None = None
               ) -> Input:
    """The input's header and URL column, and the template's columns, all checked; every
    error is one line, raised before the first request. ``path`` is the file to read when
    it is not ``args.input`` (a spooled pipe)."""
    name = input_name(args.input)
    path = path or args.input
    try:
        with _open_input(path, name) as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError:
        raise UserError(not_utf8(path, name)) from None
    except csv.Error as exc:
        raise UserError(f"cannot read {name}: {exc}") from None
    if args.column not in header:
        raise UserError(
            f"no column {args.column!r} in {name} (columns: {', '.join(header)})"
        )
    clash = [c for c in header if c in FETCH_COLUMNS]
    if clash:
        raise UserError(
            f"{name} has a column {clash[0]!r}, a name shoal fetch gives its own "
            "columns (fetch_*); rename it in the input"
        )
    fields: dict[str, str] = {}
    if template:
        try:
            fields = row_fields(template, header)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return Input(path, name, header, header.index(args.column), args.explode, fields)


def check_lines(source: Input, done: set[Key]) -> int:
    """Read the whole input once: every row's template values are there (an empty one is an
    error now, not a file named ``_0.png`` later); return the count of lines to write."""
    total = 0
    try:
        for line in source.lines():
            if line.url and source.fields:
                try:
                    row_values(source.fields, line.template)
                except ValueError as exc:
                    raise UserError(f"{source.name}: row {line.index}: {exc}") from None
            total += line.key not in done
    except UnicodeDecodeError:
        raise UserError(not_utf8(source.path, source.name)) from None
    except csv.Error as exc:
        raise UserError(f"cannot read {source.name}: {exc}") from None
    return total


def first_bad_utf8(lines: Iterable[bytes]) -> tuple[int, int, str] | None:
    """(line number from 1, byte offset in the line from 1, reason) of the first line that
    is not UTF-8, or None: the decoder reads blocks and cannot say which line it was."""
    for number, raw in enumerate(lines, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return number, exc.start + 1, exc.reason
    return None


def not_utf8(path: Path, name: str) -> str:
    """The one line for an input that is not UTF-8, naming the line where it stops being."""
    with open(path, "rb") as fh:
        bad = first_bad_utf8(fh)
    where = f"line {bad[0]}, byte {bad[1]} ({bad[2]})" if bad else "an invalid byte"
    return f"{name} is not UTF-8 at {where}: save it as UTF-8 (or convert it with iconv)"


# --- the report -----------------------------------------------------------------------------


def report_cells(line: Line, result: FetchResult | None) -> list[str]:
    """The fetch's cells of a report line, in ``FETCH_COLUMNS`` order; a row without URL
    has only its index."""
    if result is None:
        return [str(line.index)] + [""] * (len(FETCH_COLUMNS) - 1)
    return [
        str(line.index), str(line.position), line.url, result.final_url,
        str(result.http_status or ""), result.error, result.path, result.mimetype,
        str(result.bytes) if result.ok else "", result.sha256, result.fetched_at,
        result.resolved,
    ]


def _encode(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=LINE_END).writerow(cells)
    return buf.getvalue()


def read_report(path: Path, fields: list[str]) -> tuple[set[Key], int]:
    """The (row, position) pairs of a report, and the length of its complete part.

    A run stopped by a kill may have left half a line at the end: that line is not
    counted, and the caller cuts it off before appending. Anything else out of shape is an
    error rather than a guess.
    """
    done: set[Key] = set()
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return done, 0
    except OSError as exc:
        raise UserError(f"cannot read the report to resume {path}: {exc}") from None
    offset, ended = 0, True

    def text_lines() -> Iterator[str]:
        # csv.reader asks for lines one at a time, only as a record needs them, so
        # ``offset`` is always the end of the last record it returned.
        nonlocal offset, ended
        for raw in fh:
            offset += len(raw)
            ended = raw.endswith(b"\n")
            yield raw.decode("utf-8", errors="replace")

    with fh:
        size = os.fstat(fh.fileno()).st_size
        reader = csv.reader(text_lines())
        complete = 0
        try:
            header = next(reader, None)
            if header is None or not ended:
                return done, 0  # nothing, or not even a whole header: start afresh
            if header != fields:
                raise UserError(
                    f"cannot resume {path}: its columns are not those this run writes "
                    "(another input, or a report of an older shoal)"
                )
            complete = offset
            at, pos = fields.index("fetch_original_index"), fields.index("fetch_position")
            for record in reader:
                if len(record) != len(fields) or not ended:
                    if offset == size:
                        break  # the half line a kill left
                    raise UserError(f"cannot resume {path}: a malformed line before its end")
                try:
                    done.add((int(record[at]), int(record[pos]) if record[pos] else None))
                except ValueError:
                    raise UserError(
                        f"cannot resume {path}: bad fetch_original_index or fetch_position "
                        f"{record[at]!r}, {record[pos]!r}"
                    ) from None
                complete = offset
        except csv.Error:
            if offset != size:
                raise UserError(f"cannot resume {path}: not a CSV file") from None
            # a quoted cell cut by the end of the file: the half line a kill left
    return done, complete


# --- the run --------------------------------------------------------------------------------


def check_not_input(output: Path | None, input_path: Path) -> None:
    """Refuse a report that is the input file itself: opening it for writing would empty
    the input before its last read (and ``--resume`` would append to it). Checked before
    anything is opened or created."""
    if output is None:
        return
    try:
        if input_path == STDIN:  # ``-i - < REPORT.csv``
            same = os.path.samestat(os.fstat(sys.stdin.fileno()), os.stat(output))
        else:
            same = os.path.samefile(output, input_path)
    except (OSError, ValueError):
        same = False  # one of them does not exist (yet): they cannot be one file
    if same:
        raise UserError(f"-o {output} is the input file (-i {input_name(input_path)}): write "
                        "the report to another file")


def _run(args: argparse.Namespace) -> int:
    csv.field_size_limit(2**31 - 1)
    check_not_input(args.output, args.input)
    config = config_from_args(args)
    if args.explode == "":
        raise UserError("--explode needs a non-empty separator")
    if args.resume and not args.output:
        raise UserError("--resume needs -o REPORT.csv")
    if args.window < 1:
        raise UserError("--window must be >= 1")
    # A pipe is read once, into a temporary file that the run reads as often as it needs.
    with readable_input(args.input) as path:
        return _run_on(args, config, read_input(args, config.filename_template, path))


def check_outputs(output: Path | None, output_dir: Path) -> None:
    """What would stop the run at its first write to ``-o`` or ``-O``, said before either
    is created (each error names its option)."""
    if output is not None:
        folder = output.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise UserError(f"-o {output}: the folder {folder} {what}")
        if output.is_dir():
            raise UserError(f"-o {output} is a folder: name the report file")
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"-O {output_dir} is a file: -O names the folder of the downloads")


def open_report(args: argparse.Namespace, keep: int) -> TextIO:
    """The report, opened to append after its first ``keep`` bytes (--resume), else new."""
    if not args.output:
        return sys.stdout
    try:
        if keep:
            out: TextIO = open(args.output, "r+", newline="", encoding="utf-8")  # noqa: SIM115
            out.truncate(keep)  # a half line left by a kill goes
            out.seek(keep)
            return out
        return open(args.output, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"-o {args.output}: {exc.strerror or exc}") from None


def _run_on(args: argparse.Namespace, config: FetchConfig, source: Input) -> int:
    fields = source.header + list(FETCH_COLUMNS)
    done, keep = read_report(args.output, fields) if args.resume else (set(), 0)
    total = check_lines(source, done)
    check_outputs(args.output, args.output_dir)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"-O {args.output_dir}: {exc.strerror or exc}") from None
    out = open_report(args, keep)
    try:
        if not keep:
            emit(out, _encode(fields), args)
        # Ctrl-C and SIGTERM go up to the CLI, which says so in one line and exits 130 or
        # 143 like every command; the report keeps whole lines only, for --resume.
        return asyncio.run(_fetch(config, args, source, done, total, out))
    finally:
        if out is not sys.stdout:
            with contextlib.suppress(OSError):  # emit flushed every line: nothing is left
                out.close()


def open_ledger(output_dir: Path) -> FetchLedger:
    """The ledger of ``-O``, or a one-line error naming its file and what to do."""
    from connectors.fetch.ledger import LEDGER_NAME, FetchLedger

    path = output_dir / LEDGER_NAME
    try:
        return FetchLedger(path)
    except (sqlite3.Error, OSError) as exc:
        raise UserError(
            f"cannot open the fetch ledger {path} ({exc}): it must be the SQLite file shoal "
            "keeps of the URLs fetched; move it away (they are then fetched again) or use "
            "another -O") from None


async def _fetch(
    config: FetchConfig, args: argparse.Namespace, source: Input, done: set[Key], total: int,
    out: TextIO,
) -> int:
    from connectors.fetch.engine import Fetcher, Job
    from connectors.fetch.ledger import RunFailures
    from connectors.fetch.store import local_writes

    ledger = open_ledger(args.output_dir)
    # A URL that failed, found again in a later line (past the window): the same outcome,
    # not a second round of requests and retries. Successes are the ledger's.
    failures = RunFailures()
    progress = Progress(
        TextColumn("fetch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]}"),
        TimeElapsedColumn(), console=Console(stderr=True), disable=args.silent,
    )
    task = progress.add_task("fetch", total=total, bad="")
    failed = 0
    # URL -> the lines waiting for it, first one first. A URL shared by several lines is
    # fetched once, and every line gets its result; the file is named after the first line
    # (with or without an interruption: the ledger keeps that result for a resumed run).
    waiting: dict[str, list[Line]] = {}

    def write(line: Line, result: FetchResult | None) -> None:
        # One write of a whole line: a kill leaves at most half of the last one, which
        # --resume cuts off.
        emit(out, _encode(line.cells + report_cells(line, result)), args)
        progress.update(task, advance=1, bad=f"{failed} failed" if failed else "")

    def jobs() -> Iterator[Job]:
        nonlocal failed
        for line in source.lines():
            if line.key in done:
                continue
            if not line.url:
                write(line, None)
                continue
            if line.url in waiting:
                waiting[line.url].append(line)
                continue
            known = failures.get(line.url)
            if known is not None:
                failed += 1
                write(line, known)
                continue
            waiting[line.url] = [line]
            meta = {"position": line.position, **row_values(source.fields, line.template)}
            yield f"{line.index}:{line.position}", line.url, meta

    try:
        with progress:
            async with Fetcher(config, args.output_dir, ledger) as fetcher:
                results = fetcher.fetch_many(jobs(), args.window)
                async with contextlib.aclosing(results):
                    async for _job_id, _meta, result in results:
                        # The ledger holds a success before the report does: a run killed
                        # after this line finds the file there, for the lines still to come.
                        with local_writes(ledger.path):
                            ledger.flush()
                        lines = waiting.pop(result.url)
                        failures.add(result)
                        failed += len(lines) * (not result.ok)
                        for line in lines:
                            write(line, result)
    finally:
        failures.close()
        with contextlib.suppress(sqlite3.Error):  # what it loses is only fetched again
            ledger.close()
    return 0
