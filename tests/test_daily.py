"""The researcher's daily tool, as they type it: output that reads well, stops that are clean,
answers that say what is wrong."""

from __future__ import annotations

import json
import lzma
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from connectors.kafka.broker import EmbeddedBroker, free_port
from tests.live_helpers import LocalServer
from tests.pipeline import read_csv_xz

V2 = "twitter-v2/DocNow__twarc-csv/test-data"

SHOAL = [sys.executable, "-m", "shoal"]


def shoal(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def log_records(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_stops_up_like_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "d"
    proc = subprocess.Popen([*SHOAL, "up", "--source", "demo:4000", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not list((data / "twitter").glob("*/*_IDs.txt.xz")):
        assert time.monotonic() < deadline and proc.poll() is None, "nothing sealed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    others = [line for line in err.splitlines() if not line.startswith("{")]
    assert others == ["shoal: stopped (SIGTERM)"], err[-3000:]
    assert not [r for r in log_records(err) if r["level"] == "error"], err[-3000:]
    # Nothing half-written: every sealed file decodes, and no temporary file is left.
    for path in (data / "twitter").glob("*/*.xz"):
        lzma.decompress(path.read_bytes())
    assert not [p for p in data.rglob("*.tmp") if p.is_file() and "_work" not in p.parts]


def test_one_sealed_line_per_hour_and_query_answers(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert shoal("query", "--data-dir", str(tmp_path), "SELECT 1", check=False).stderr == (
        f"shoal: error: nothing is sealed in {tmp_path} yet: no hour has been written there "
        "(`shoal up` or `shoal process` with this --data-dir seal hours)\n")
    # With media, hours are re-sealed as files arrive: still one line per hour.
    run = shoal("up", "--source", "demo:400", "--data-dir", str(data), "--idle-exit", "1")
    sealed = [r for r in log_records(run.stderr) if r["msg"] == "hour sealed"]
    hours = {p.name for p in (data / "twitter").glob("*/*_IDs.txt.xz")}
    assert len(sealed) == len(hours) > 1
    # Per-collector counts of the reports come out as JSON in csv and json.
    csv_out = shoal("query", "--data-dir", str(data), "--format", "csv",
                    "SELECT collectors FROM reports ORDER BY hour_start LIMIT 1").stdout
    cell = csv_out.splitlines()[1].strip('"').replace('""', '"')
    assert set(json.loads(cell)) == {"demo-a", "demo-b"}
    row = json.loads(shoal("query", "--data-dir", str(data), "--format", "json",
                           "SELECT collectors FROM reports LIMIT 1").stdout)
    assert set(row["collectors"]) == {"demo-a", "demo-b"}
    bad = shoal("query", "--data-dir", str(data), "SELECT * FROM tweets", check=False)
    assert bad.returncode == 2 and ("(the views are posts, users, media, reports, tiktok_post_ids, "
                                       "tiktok_video_ids)") in bad.stderr
    # The media view's columns are the ones the README names.
    first = next((data / "twitter").glob("*/*_media.csv.xz"))
    assert {"http_status", "error", "sha256"} <= set(read_csv_xz(first)[0])


class SearchApi:
    """/2/tweets/search/recent answering every slice with the same real twarc2 page."""

    def __init__(self, page: dict[str, object]) -> None:
        self.page = page
        self.hits = 0
        self.app = web.Application()
        self.app.router.add_get("/2/tweets/search/recent", self.search)

    async def search(self, request: web.Request) -> web.Response:
        self.hits += 1
        if request.headers.get("Authorization") != "Bearer t0ken":
            return web.json_response({"title": "Unauthorized"}, status=401)
        return web.json_response({**self.page, "meta": {"result_count": 1}})


def test_up_runs_a_search_collector_beside_a_file(tmp_path: Path, fixtures: Path) -> None:
    """`shoal up` on the embedded broker with any collector, each under its own name: the
    two-collector day report without a running Kafka."""
    lines = (fixtures / V2 / "withheld.jsonl").read_text().splitlines()
    page = {k: v for k, v in json.loads(lines[0]).items() if k != "__twarc"}
    ids = {t["id"] for t in page["data"]}  # type: ignore[union-attr]
    export = tmp_path / "export.jsonl"
    export.write_text(lines[0] + "\n")
    api = SearchApi(page)
    env = {**os.environ, "TWITTER_BEARER_TOKEN": "t0ken",
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "SHOAL_SPOOL_DIR": str(tmp_path / "spool")}
    with LocalServer(api.app) as server:
        env["SHOAL_COLLECTORS_TWITTER_API_URL"] = server.url
        proc = subprocess.run(
            [*SHOAL, "up", "--source", "lab=twitter-search:#withheld", "--source",
             f"file:{export}@archive", "--data-dir", str(tmp_path / "d"), "--idle-exit", "1",
             "--no-media"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert api.hits >= 1
    got = set()
    for path in (tmp_path / "d" / "twitter").glob("*/*_IDs.txt.xz"):
        got |= set(lzma.decompress(path.read_bytes()).decode().split())
    assert got == ids
    (report,) = (tmp_path / "d" / "twitter").glob("*/*_report.txt")
    header = report.read_text().splitlines()[0].split("\t")
    assert header == ["hour", "archive", "lab", "total", "diff", "diff %", "late"]
    for row in report.read_text().splitlines()[1:-1]:
        cells = row.split("\t")
        assert cells[1] == cells[2] == cells[3] and cells[4] == "0"  # both saw every post


def test_up_hands_its_flags_to_its_collectors_and_keeps_its_metrics_port(
        tmp_path: Path, fixtures: Path) -> None:
    """The collectors `up` starts read the same file and environment, and must also get its
    command line: with `--topic` they published to the default topic while the dataflow read
    the other, and sealed nothing; and a metrics port in the environment made each of them
    die on "address already in use"."""
    lines = (fixtures / V2 / "withheld.jsonl").read_text().splitlines()
    page = {k: v for k, v in json.loads(lines[0]).items() if k != "__twarc"}
    ids = {t["id"] for t in page["data"]}  # type: ignore[union-attr]
    api = SearchApi(page)
    env = {**os.environ, "TWITTER_BEARER_TOKEN": "t0ken", "SHOAL_METRICS_PORT": str(free_port()),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "SHOAL_SPOOL_DIR": str(tmp_path / "spool")}
    with LocalServer(api.app) as server:
        env["SHOAL_COLLECTORS_TWITTER_API_URL"] = server.url
        proc = subprocess.run(
            [*SHOAL, "up", "--source", "lab=twitter-search:#withheld", "--topic", "lab.posts",
             "--log-level", "warning", "--data-dir", str(tmp_path / "d"), "--idle-exit", "1",
             "--no-media"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already in use" not in proc.stderr
    got = set()
    for path in (tmp_path / "d" / "twitter").glob("*/*_IDs.txt.xz"):
        got |= set(lzma.decompress(path.read_bytes()).decode().split())
    assert got == ids
    levels = {str(r.get("level")).lower() for r in log_records(proc.stderr)}
    assert not levels & {"info", "debug"}, proc.stderr[-3000:]


def test_an_unreachable_api_says_which_host_and_why(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TWITTER_BEARER_TOKEN": "t0ken",
           "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "SHOAL_SPOOL_DIR": str(tmp_path / "spool")}
    with EmbeddedBroker() as broker:
        proc = subprocess.Popen(
            [*SHOAL, "collect", "twitter-search", "q", "--brokers", broker.bootstrap,
             "--collector", "c", "--api-url", f"http://127.0.0.1:{port}",
             "--backoff-base", "0.2", "--backoff-max", "0.4"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    failed = [r for r in log_records(err) if r["msg"] == "request failed"]
    assert 3 <= len(failed) <= 30, err[-2000:]
    for rec in failed:
        assert rec["host"] == f"127.0.0.1:{port}"
        assert "refused" in str(rec["why"]).lower()
        assert float(str(rec["retry_in"])) > 0  # one line per backoff step, with its wait
    assert not [line for line in err.splitlines() if "kafka" in line.lower()]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_live_display_and_log_lines_do_not_garble_each_other(tmp_path: Path) -> None:
    """On a terminal (a pty here) the progress display redraws itself while log lines are
    printed above it: every log line comes out whole, and the display shows the figures."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*SHOAL, "up", "--source", "demo:1500", "--data-dir",
                             str(tmp_path / "d"), "--idle-exit", "1"],
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the pty closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(30) == 0
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "\n")
    assert "hours sealed" in text and "media fetched" in text and "posts in · demo-a" in text
    logged = [line for line in text.splitlines() if line.startswith('{"ts"')]
    assert len(logged) >= 5
    for line in logged:
        json.loads(line)  # whole: a display redraw never cut into a log line
    assert any(json.loads(line)["msg"] == "hour sealed" for line in logged)
