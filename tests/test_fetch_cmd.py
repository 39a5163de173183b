"""``shoal fetch`` end to end, through its CLI: a generated CSV and minet's own export of a
search (its media URLs pointed at our loopback server), the report joined back to the input,
--resume after a stop, and template errors caught before any request."""

from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from shoal.app import config, fetch_cmd
from shoal.app.config import ConfigError
from shoal.app.fetch_cmd import FETCH_COLUMNS
from shoal.options import Settings
from tests.conftest import FIXTURES
from tests.test_fetcher import HOSTS, MediaServer
from tests.test_fetcher import server as server  # the fixture, shared by name

RESOLVE = [arg for host, ip in HOSTS.items() for arg in ("--resolve", f"{host}={ip}")]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shoal")
    fetch_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fetch", *argv])


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_fetch_explodes_reports_every_url_and_resumes(
    server: MediaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img1, img2 = server.url("img1.test", "/img/cmd-a"), server.url("img2.test", "/img/cmd-b")
    missing = server.url("img1.test", "/status/cmd?code=404")
    rows = [
        {"post_id": "1", "platform": "twitter", "media_urls": f"{img1}|{img2}"},
        {"post_id": "2", "platform": "twitter", "media_urls": missing},
        {"post_id": "3", "platform": "bluesky", "media_urls": "file:///etc/passwd"},
        {"post_id": "4", "platform": "bluesky", "media_urls": ""},
    ]
    source, report, out = tmp_path / "posts.csv", tmp_path / "report.csv", tmp_path / "dl"
    write_csv(source, rows)
    argv = ["media_urls", "-i", str(source), "--explode", "|", "-O", str(out), "-o", str(report),
            "--throttle", "0.05", "--domain-parallelism", "2", "--retries", "1", *RESOLVE,
            "--filename-template", "{platform}_{post_id}_{position}.{ext}",
            "--folder-strategy", "prefix-2"]
    assert fetch_cmd.run(parse(argv)) == 0

    got = {r["fetch_url"]: r for r in read_csv(report) if r["fetch_url"]}
    assert set(got) == {img1, img2, missing, "file:///etc/passwd"}
    assert list(read_csv(report)[0]) == ["post_id", "platform", "media_urls", *FETCH_COLUMNS]
    for url, position in ((img1, 0), (img2, 1)):
        row = got[url]
        assert (row["post_id"], row["fetch_http_status"], row["fetch_error"]) == ("1", "200", "")
        assert row["fetch_position"] == str(position) and row["fetch_original_index"] == "0"
        assert row["media_urls"] == f"{img1}|{img2}"  # exploded rows repeat the input row
        assert row["fetch_path"].endswith(f"/twitter_1_{position}.jpg")
        assert row["fetch_path"].split("/")[1] == row["fetch_sha256"][:2]  # prefix-2
        assert (out / row["fetch_path"]).read_bytes()[:3] == b"\xff\xd8\xff"
        assert row["fetch_mimetype"] == "image/jpeg" and int(row["fetch_bytes"]) > 0
    assert (got[missing]["fetch_http_status"], got[missing]["fetch_error"]) == ("404", "http 404")
    assert got["file:///etc/passwd"]["fetch_error"].startswith("refused: scheme 'file'")
    # The row without a URL has its line too, with only its index.
    [empty] = [r for r in read_csv(report) if not r["fetch_url"]]
    assert empty["post_id"] == "4" and empty["fetch_original_index"] == "3"
    assert all(empty[c] == "" for c in FETCH_COLUMNS[1:])

    # New rows arrive, one with a URL already reported for row 0: --resume goes by (row,
    # position), so both get their line, and fetches only the new URL (the ledger has img1).
    img3 = server.url("img3.test", "/img/cmd-c")
    write_csv(source, [*rows, {"post_id": "5", "platform": "twitter", "media_urls": img3},
                       {"post_id": "6", "platform": "twitter", "media_urls": img1}])
    before = len(server.hits)
    assert fetch_cmd.run(parse([*argv, "--resume"])) == 0
    again = read_csv(report)
    assert len(again) == 7 and {r["post_id"] for r in again[-2:]} == {"5", "6"}
    assert [r["fetch_url"] for r in again].count(img1) == 2
    assert all(r["fetch_error"] == "" for r in again[-2:])
    assert [h.path for h in server.hits[before:]] == ["/img/cmd-c"]

    # Without -o the report goes to stdout; the ledger answers for what is on disk.
    assert fetch_cmd.run(parse(["media_urls", "-i", str(source), "-O", str(out), *RESOLVE,
                                "--explode", "|"])) == 0
    lines = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {r["fetch_url"] for r in lines} == set(got) | {img3, ""}
    assert len(server.hits) == before + 2  # only the 404 was asked again


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "-i", "{csv}"], "no column 'nope'"),
        (["media_urls", "-i", "{tmp}/missing.csv"], "input file not found"),
        (["media_urls", "-i", "{csv}", "--resume"], "--resume needs -o"),
        (["media_urls", "-i", "{csv}", "--folder-strategy", "weird"], "unknown folder strategy"),
        (["media_urls", "-i", "{csv}", "--filename-template", "{evil.__class__}"],
         "bad filename template"),
        (["media_urls", "-i", "{csv}", "--resolve", "nonsense"], "--resolve wants HOST=IP"),
        # NaN passed every check (--throttle nan: no throttle at all), inf hung the run.
        *((["media_urls", "-i", "{csv}", f"{flag}={value}"], f"{flag}: must be a finite number")
          for flag in ("--throttle", "--timeout", "--url-deadline", "--connect-timeout",
                       "--read-timeout")
          for value in ("nan", "inf", "-inf", "NaN")),
        (["media_urls", "-i", "{csv}", "--host-limit", "img1.test=1,nan"],
         "T must be a finite number"),
        (["media_urls", "-i", "{csv}", "--host-limit", "img1.test=1,inf"],
         "T must be a finite number"),
        # Every URL failed with an internal error (aiohttp refuses the header each time).
        (["media_urls", "-i", "{csv}", "--user-agent", "a\nb"],
         "--user-agent: 'a\\nb' holds the control character '\\n'"),
        (["media_urls", "-i", "{csv}", "--user-agent", "a\rX-Evil: 1"], "--user-agent: "),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    source = tmp_path / "in.csv"
    write_csv(source, [{"media_urls": "http://img1.test/x"}])
    argv = [a.replace("{csv}", str(source)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert fetch_cmd.run(parse([*argv, "-O", str(tmp_path / "o")])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


# --- minet's own export of a search ------------------------------------------------------------

# Read in place, never copied into the repository (conftest: ../shared or $SHOAL_FIXTURES).
MINET_EXPORT = FIXTURES / "minet-csv" / "medialab__twitwi" / "test" / "resources" / (
    "tweet-export.csv")
TEMPLATE = ["--filename-template", "{row.id}_{position}.{ext}"]


def minet_input(
    tmp_path: Path, media: list[str], edit: Callable[[list[str], list[list[str]]], None] = (
        lambda header, rows: None),
) -> Path:
    """minet's export, read in place, with its (empty) media_urls cells pointed at our server;
    every other cell stays as minet wrote it, and so do its quoting and line ends."""
    with open(MINET_EXPORT, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    column = header.index("media_urls")
    for row, cell in zip(rows, media, strict=True):
        row[column] = cell
    edit(header, rows)
    path = tmp_path / "tweets.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([header, *rows])
    return path


def media_cells(server: MediaServer, tag: str, delay: float = 0.0) -> list[str]:
    """Four rows' cells: two URLs; none; the first row's first URL again, an empty item, a
    new URL and a 404; one URL."""
    q = f"?delay={delay}" if delay else ""
    a, b, c, d = (server.url("img1.test", f"/img/{tag}-{n}{q}") for n in "abcd")
    missing = server.url("img1.test", f"/status/{tag}-404?code=404" + (f"&delay={delay}"
                                                                        if delay else ""))
    return [f"{a}|{b}", "", f"{a}||{c}|{missing}", d]


EXPECTED_KEYS = [(0, 0), (0, 1), (1, None), (2, 0), (2, 2), (2, 3), (3, 0)]


def keyed(report: Path) -> dict[tuple[int, int | None], dict[str, str]]:
    """The report's lines by (row, position); a duplicate key fails the test."""
    rows = read_csv(report)
    out = {(int(r["fetch_original_index"]),
            int(r["fetch_position"]) if r["fetch_position"] else None): r for r in rows}
    assert len(out) == len(rows), "a (row, position) appears twice"
    return out


def without_times(lines: dict[tuple[int, int | None], dict[str, str]]) -> dict[Any, Any]:
    return {k: {c: v for c, v in r.items() if c != "fetch_datetime_utc"}
            for k, r in lines.items()}


def test_minet_export_joins_back_to_every_row_and_position(
    server: MediaServer, tmp_path: Path
) -> None:
    cells = media_cells(server, "join")
    source = minet_input(tmp_path, cells)
    report, out = tmp_path / "report.csv", tmp_path / "dl"
    before = len(server.hits)
    argv = ["media_urls", "-i", str(source), "--explode", "|", "-O", str(out), "-o", str(report),
            "--throttle", "0", "--retries", "0", "--silent", *RESOLVE, *TEMPLATE]
    assert fetch_cmd.run(parse(argv)) == 0

    with open(source, newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    lines = keyed(report)
    assert sorted(lines, key=str) == sorted(EXPECTED_KEYS, key=str)
    assert list(read_csv(report)[0]) == [*header, *FETCH_COLUMNS]
    # Byte for byte: the input columns of each row's first line, written as minet writes,
    # are the input file.
    firsts = [lines[k] for k in sorted(lines, key=lambda k: k[0] * 10 + (k[1] or 0))
              if k[1] in (None, 0)]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [header, *([r[c] for c in header] for r in firsts)])
    assert buf.getvalue().encode() == source.read_bytes()
    for (index, position), line in lines.items():
        assert [line[c] for c in header] == rows[index]  # every line, not only the first
        assert line["url"].startswith("https://twitter.com/")  # the post's link, kept
        if position is None:
            assert all(line[c] == "" for c in FETCH_COLUMNS[1:])
            continue
        assert line["fetch_url"] == cells[index].split("|")[position]
    # Files are named after their row's id and the URL's position; a URL in two rows is
    # fetched once and both lines point at the file of its first row.
    ids = [r[header.index("id")] for r in rows]
    for key in ((0, 0), (0, 1), (2, 2), (3, 0)):
        path = lines[key]["fetch_path"]
        assert path.rsplit("/", 1)[1] == f"{ids[key[0]]}_{key[1]}.jpg"
        assert (out / path).read_bytes().startswith(b"\xff\xd8\xff")
        assert lines[key]["fetch_http_status"] == "200" and lines[key]["fetch_error"] == ""
    assert lines[(2, 0)]["fetch_path"] == lines[(0, 0)]["fetch_path"]
    assert (lines[(2, 3)]["fetch_http_status"], lines[(2, 3)]["fetch_path"]) == ("404", "")
    paths = sorted(h.path.split("?")[0] for h in server.hits[before:])
    assert paths == sorted(f"/{k}/join-{n}" for k, n in
                           (("img", "a"), ("img", "b"), ("img", "c"), ("img", "d"),
                            ("status", "404")))


def shoal_fetch(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shoal", "fetch", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_resume_after_a_stop_equals_an_uninterrupted_run(
    server: MediaServer, tmp_path: Path, stop: signal.Signals
) -> None:
    tag = f"stop{int(stop)}"
    source = minet_input(tmp_path, media_cells(server, tag, delay=0.4))
    common = ["media_urls", "-i", str(source), "--explode", "|", "--throttle", "0",
              "--domain-parallelism", "1", "--retries", "0", "--silent", *RESOLVE, *TEMPLATE]
    fields = [*read_csv_header(source), *FETCH_COLUMNS]

    report, out = tmp_path / "report.csv", tmp_path / "dl"
    proc = shoal_fetch([*common, "-O", str(out), "-o", str(report)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if report.exists() and len(fetch_cmd.read_report(report, fields)[0]) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(stop)
        code = proc.wait(30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait(30)
    if stop != signal.SIGKILL:  # one line, no warning of an unclosed session or task
        assert err.count("\n") == 1 and err.startswith("shoal: "), err
    assert code == {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}[stop]
    first = keyed(report)
    assert 3 <= len(first) < len(EXPECTED_KEYS)
    before = len(server.hits)
    assert fetch_cmd.run(parse([*common, "-O", str(out), "-o", str(report), "--resume"])) == 0
    resumed = keyed(report)
    assert {k: resumed[k] for k in first} == first  # the lines written before stay as they were
    # What was reported fetched is not asked again.
    again = {h.path.split("?")[0] for h in server.hits[before:]}
    fetched = {urlsplit(line["fetch_url"]).path for line in first.values()
               if line["fetch_url"] and not line["fetch_error"]}
    assert fetched and not fetched & again

    whole, whole_out = tmp_path / "whole.csv", tmp_path / "dl-whole"
    assert fetch_cmd.run(parse([*common, "-O", str(whole_out), "-o", str(whole)])) == 0
    assert without_times(resumed) == without_times(keyed(whole))
    assert sorted(resumed, key=str) == sorted(EXPECTED_KEYS, key=str)


@pytest.mark.parametrize("cut", ["in the last line's text", "before the last line's end"])
def test_resume_drops_the_half_line_a_kill_leaves(
    server: MediaServer, tmp_path: Path, cut: str
) -> None:
    """A kill while a line is being written leaves part of it; --resume cuts it off and
    writes it again, whole (the minet export's text cells hold commas and newlines)."""
    source = minet_input(tmp_path, media_cells(server, f"cut{len(cut)}"))
    report, out = tmp_path / "report.csv", tmp_path / "dl"
    argv = ["media_urls", "-i", str(source), "--explode", "|", "--throttle", "0", "--silent",
            "--retries", "0", "-O", str(out), "-o", str(report), *RESOLVE, *TEMPLATE]
    assert fetch_cmd.run(parse(argv)) == 0
    whole = report.read_bytes()
    expected = keyed(report)
    last = whole.rstrip(b"\n").rfind(b"\n" + str(read_csv(report)[-1]["id"]).encode()) + 1
    assert last > 0
    # Inside the quoted text cell (every text of the export is quoted), or just short of
    # the line end.
    end = whole.index(b'"', last) + 20 if cut.startswith("in") else len(whole) - 1
    report.write_bytes(whole[:end])
    before = len(server.hits)
    assert fetch_cmd.run(parse([*argv, "--resume"])) == 0
    assert without_times(keyed(report)) == without_times(expected)
    assert len(server.hits) - before <= 1  # at most the cut line's URL, if it failed before


@pytest.mark.parametrize(
    ("template", "edit", "message"),
    [
        ("{row.nope}_{position}.{ext}", None,
         "filename template field {row.nope}: the input has no column 'nope'"),
        ("{post_id}_{position}.{ext}", None,
         "filename template field {post_id}: the input has no 'post_id' column"),
        ("{row.id}_{position}.{ext}", "empty id",
         "row 3: filename template field {row.id} is empty"),
        ("{row.id!r}.{ext}", None, "field {row.id} takes no format spec or conversion"),
        ("{row.id}.{ext}", "fetch_url column", "has a column 'fetch_url'"),
    ],
)
def test_template_and_column_errors_come_before_any_request(
    server: MediaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str,
    edit: str | None, message: str,
) -> None:
    def change(header: list[str], rows: list[list[str]]) -> None:
        if edit == "empty id":
            rows[3][header.index("id")] = ""
        elif edit == "fetch_url column":
            header[header.index("local_time")] = "fetch_url"

    source = minet_input(tmp_path, media_cells(server, "bad"), change)
    report, out = tmp_path / "report.csv", tmp_path / "dl"
    before = len(server.hits)
    argv = ["media_urls", "-i", str(source), "--explode", "|", "-O", str(out), "-o", str(report),
            "--silent", *RESOLVE, "--filename-template", template]
    assert fetch_cmd.run(parse(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert len(server.hits) == before and not report.exists() and not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_seconds_are_refused_in_the_configuration(
    tmp_path: Path, value: str
) -> None:
    """The [media] keys of the file and their SHOAL_MEDIA_* twins share the flags' check."""
    toml = tmp_path / "shoal.toml"
    toml.write_text(f"[media]\nthrottle = {value}\n")
    with pytest.raises(ConfigError, match=r"\[media\] throttle: must be a finite number"):
        config.load(toml, env={})
    with pytest.raises(ConfigError, match=r"SHOAL_MEDIA_URL_DEADLINE.*must be a finite number"):
        config.load(None, env={"SHOAL_MEDIA_URL_DEADLINE": value})


def test_row_fields_are_refused_where_there_is_no_input_row() -> None:
    """The dataflow's posts have no input row: ``{row.id}`` there is a one-line error naming
    the option, while ``shoal fetch`` accepts it (and checks it against its input)."""
    settings = Settings()
    settings.media.filename_template = "{row.id}.{ext}"
    with pytest.raises(ConfigError, match=r"\{row.COLUMN\} names an input column of shoal fetch"):
        config.validate(settings, "up")
    config.validate(settings, "fetch")


def read_csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


# --- the input and the report -------------------------------------------------------------


def test_a_report_that_is_the_input_is_refused_before_anything_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-o`` naming the input (by another spelling too: a symlink) would empty the input
    before its last read; refused in one line, the input intact and no -O folder made."""
    source = tmp_path / "in.csv"
    write_csv(source, [{"media_urls": "http://img1.test/x"}])
    before = source.read_bytes()
    (tmp_path / "link.csv").symlink_to(source)
    for output in (source, tmp_path / "link.csv", tmp_path / "." / "in.csv"):
        for resume in ([], ["--resume"]):
            argv = ["media_urls", "-i", str(source), "-o", str(output), "-O",
                    str(tmp_path / "dl"), "--silent", *resume]
            assert fetch_cmd.run(parse(argv)) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "is the input file" in err, err
            assert source.read_bytes() == before
            assert not (tmp_path / "dl").exists()


def test_a_local_write_refused_stops_the_run_and_resume_fetches_the_url(
    server: MediaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our disk refusing a file is not the URL's failure: one line naming -O, and the URL
    gets no report line, so that --resume fetches it once the disk is fixed."""
    url = server.url("img1.test", "/img/cmd-local-refused")
    source, report, out = tmp_path / "in.csv", tmp_path / "report.csv", tmp_path / "dl"
    write_csv(source, [{"media_urls": url}])
    out.mkdir()
    (out / "media").write_text("a file where the media folder goes")
    argv = ["media_urls", "-i", str(source), "-O", str(out), "-o", str(report), "--silent",
            "--throttle", "0", *RESOLVE]
    assert fetch_cmd.run(parse(argv)) == 2  # a path the user can fix
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"-O {out}" in err and "Not a directory" in err, err
    assert "--resume" in err
    assert read_csv(report) == []  # the header only: no "failed" line

    (out / "media").unlink()
    assert fetch_cmd.run(parse([*argv, "--resume"])) == 0
    [line] = read_csv(report)
    assert line["fetch_url"] == url and line["fetch_error"] == ""
    assert (out / line["fetch_path"]).is_file()


@pytest.mark.parametrize("how", ["-", "/dev/stdin", "fifo"])
def test_an_input_read_once_is_spooled_and_fully_reported(
    server: MediaServer, tmp_path: Path, how: str
) -> None:
    """``-i -``, ``-i /dev/stdin`` and a pipe (``<(...)``) are read once, into a temporary
    file the run reads as often as it needs (removed at the end): every row is reported,
    as from a file; --resume works the same, the input giving the same rows again."""
    urls = [server.url("img1.test", f"/img/spool-{how.strip('/-')}-{i}") for i in range(2)]
    data = f"media_urls,n\n{urls[0]},0\n,1\n{urls[1]},2\n".encode()
    report, spool_dir = tmp_path / "report.csv", tmp_path / "tmp"
    spool_dir.mkdir()

    def run(*extra: str) -> subprocess.CompletedProcess[bytes]:
        source = how
        writer = None
        if how == "fifo":
            source = str(tmp_path / "fifo")
            if not os.path.exists(source):
                os.mkfifo(source)

            def feed() -> None:
                with open(source, "wb") as fh:
                    fh.write(data)

            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
        proc = subprocess.run(
            [sys.executable, "-m", "shoal", "fetch", "media_urls", "-i", source, "-o",
             str(report), "-O", str(tmp_path / "dl"), "--throttle", "0", "--silent",
             *RESOLVE, *extra],
            input=None if how == "fifo" else data, capture_output=True, timeout=60,
            env={**os.environ, "TMPDIR": str(spool_dir)})
        if writer is not None:
            writer.join(10)
        return proc

    proc = run()
    assert proc.returncode == 0, proc.stderr.decode()
    lines = keyed(report)
    assert sorted(lines, key=str) == sorted([(0, 0), (1, None), (2, 0)], key=str)
    assert all(lines[k]["fetch_error"] == "" for k in ((0, 0), (2, 0)))
    assert list(spool_dir.iterdir()) == []  # the spooled copy is gone

    whole = report.read_bytes()
    report.write_bytes(whole[: whole.index(b"\n") + 1])  # the header only
    proc = run("--resume")
    assert proc.returncode == 0, proc.stderr.decode()
    assert without_times(keyed(report)) == without_times(lines)
    assert list(spool_dir.iterdir()) == []


def test_a_failed_url_found_again_later_is_not_fetched_again(
    server: MediaServer, tmp_path: Path
) -> None:
    """A URL in several lines is fetched once, a failed one too: a line past the engine's
    window (--window 1) gets the failure remembered for the run, not another round of
    requests and retries."""
    missing = server.url("img1.test", "/status/cmd-dup-fail?code=404")
    flaky = server.url("img1.test", "/flaky/cmd-dup-fail?fails=9&code=500")
    others = [server.url("img2.test", f"/img/cmd-dup-fail-{i}") for i in range(3)]
    cells = [missing, flaky, *others, missing, flaky]
    source, report = tmp_path / "in.csv", tmp_path / "report.csv"
    write_csv(source, [{"media_urls": c} for c in cells])
    argv = ["media_urls", "-i", str(source), "-O", str(tmp_path / "dl"), "-o", str(report),
            "--silent", "--throttle", "0", "--retries", "1", "--window", "1", *RESOLVE]
    assert fetch_cmd.run(parse(argv)) == 0
    lines = keyed(report)
    assert len(lines) == len(cells)
    for first, again in ((0, 5), (1, 6)):
        assert without_times({(0, 0): lines[(again, 0)]})[(0, 0)] == {
            **without_times({(0, 0): lines[(first, 0)]})[(0, 0)],
            "fetch_original_index": str(again)}
    assert lines[(5, 0)]["fetch_error"] == "http 404"
    assert lines[(6, 0)]["fetch_error"] == "http 500"
    assert server.count("/status/cmd-dup-fail?code=404") == 1
    assert server.count("/flaky/cmd-dup-fail?fails=9&code=500") == 2  # one try, one retry


def test_a_row_value_in_any_script_names_its_file(server: MediaServer, tmp_path: Path) -> None:
    """``{row.name}`` = 猫 names the file 猫_0.jpg; it was called empty and ended the run."""
    url = server.url("img1.test", "/img/cmd-unicode-name")
    source, report, out = tmp_path / "in.csv", tmp_path / "report.csv", tmp_path / "dl"
    write_csv(source, [{"name": "猫", "media_urls": url}])
    argv = ["media_urls", "-i", str(source), "-O", str(out), "-o", str(report), "--silent",
            "--throttle", "0", "--folder-strategy", "flat", *RESOLVE,
            "--filename-template", "{row.name}_{position}.{ext}"]
    assert fetch_cmd.run(parse(argv)) == 0
    [line] = read_csv(report)
    assert line["fetch_error"] == "" and line["fetch_path"] == "media/猫_0.jpg"
    assert (out / "media" / "猫_0.jpg").is_file()


def test_blank_lines_are_no_rows(server: MediaServer, tmp_path: Path) -> None:
    """A blank line of the input is skipped and not counted, as csv.DictReader and pandas
    do: fetch_original_index is the row's number there, and no line is made up for it."""
    urls = [server.url("img1.test", f"/img/cmd-blank-{i}") for i in range(2)]
    source, report = tmp_path / "in.csv", tmp_path / "report.csv"
    source.write_text(f"id,media_urls\n\na,{urls[0]}\n\n\nb,\nc,{urls[1]}\n\n", encoding="utf-8")
    argv = ["media_urls", "-i", str(source), "-O", str(tmp_path / "dl"), "-o", str(report),
            "--silent", "--throttle", "0", *RESOLVE]
    assert fetch_cmd.run(parse(argv)) == 0
    with open(source, newline="", encoding="utf-8") as fh:
        ids = [r["id"] for r in csv.DictReader(fh)]
    assert ids == ["a", "b", "c"]
    lines = keyed(report)
    assert sorted(lines, key=str) == sorted([(0, 0), (1, None), (2, 0)], key=str)
    assert {k[0]: r["id"] for k, r in lines.items()} == dict(enumerate(ids))


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("report on a full disk", 1,
         "cannot write the report (-o /dev/full): No space left on device"),
        ("ledger is a folder", 2, "cannot open the fetch ledger {dl}/fetch-ledger.sqlite"),
        ("ledger is not SQLite", 2, "cannot open the fetch ledger {dl}/fetch-ledger.sqlite"),
        ("report in a missing folder", 2, "-o {tmp}/nope/report.csv: the folder {tmp}/nope "
         "does not exist"),
        ("-O is a file", 2, "-O {dl} is a file: -O names the folder of the downloads"),
        ("input not UTF-8", 2, "in.csv is not UTF-8 at line 3, byte 8 (invalid continuation byte)"),
    ],
)
def test_output_and_input_troubles_are_one_line_naming_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, code: int, message: str
) -> None:
    source, dl, report = tmp_path / "in.csv", tmp_path / "dl", tmp_path / "report.csv"
    source.write_bytes(b"media_urls\nhttp://img1.test/a\nhttp://\xe9.test/b\n")
    if case == "report on a full disk":
        report = Path("/dev/full")
    elif case == "ledger is a folder":
        (dl / "fetch-ledger.sqlite").mkdir(parents=True)
    elif case == "ledger is not SQLite":
        dl.mkdir()
        (dl / "fetch-ledger.sqlite").write_text("media_urls\nnot a database\n")
    elif case == "report in a missing folder":
        report = tmp_path / "nope" / "report.csv"
    elif case == "-O is a file":
        dl.write_text("a file")
    if case != "input not UTF-8":
        source.write_text("media_urls\nhttp://img1.test/a\n", encoding="utf-8")
    argv = ["media_urls", "-i", str(source), "-O", str(dl), "-o", str(report), "--silent"]
    assert fetch_cmd.run(parse(argv)) == code
    err = capsys.readouterr().err
    expected = message.format(dl=dl, tmp=tmp_path)
    assert err.count("\n") == 1 and expected in err and "sealed hours" not in err, err
    if case in ("report in a missing folder", "input not UTF-8"):
        assert not dl.exists()  # nothing made before the error


def test_mime_types_take_types_and_the_dataflows_kinds_and_refuse_a_typo() -> None:
    """`--media-types photo` (the dataflow's word, on a flag both commands take) refused
    every download as "unwanted media type image/jpeg"; `imgae` did the same, silently."""
    from shoal.app.fetch_cmd import mime_types
    from shoal.errors import UserError
    from shoal.fetch.policy import type_allowed

    assert mime_types("image, video/MP4,") == {"image", "video/mp4"}
    photo = mime_types("photo")
    assert type_allowed("image/jpeg", photo) and not type_allowed("video/mp4", photo)
    assert type_allowed("video/mp4", mime_types("gif"))
    assert type_allowed("image/gif", mime_types("gif"))
    for typo in ("imgae", "image/", "jpg"):
        with pytest.raises(UserError, match="not a MIME type"):
            mime_types(typo)
