"""The commands as a user types them: real processes, real broker, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from connectors.kafka.broker import free_port, wait_for_port

SHOAL = [sys.executable, "-m", "shoal"]
V2 = "twitter-v2/DocNow__twarc-csv/test-data"


def shoal(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def test_help_lists_every_planned_subcommand() -> None:
    out = shoal("--help").stdout
    for name in ("up", "collect", "process", "broker", "query", "fetch", "replay"):
        assert f"    {name}" in out


def test_only_collect_builds_the_collectors_parsers() -> None:
    """A command other than ``collect`` does not import the collectors (aiohttp, instaloader,
    twarc: half of every start); ``collect NAME --help`` still shows a collector's flags."""
    probe = ("import sys\nfrom shoal.app.cli import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in ('instaloader', 'twarc', 'aiohttp', "
             "'connectors.collect.bluesky') if m in sys.modules))")
    for argv, loaded in ((["query", "--help"], False), (["collect", "mastodon", "--help"], True)):
        out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                             text=True, timeout=60).stdout
        assert ("--access-token" in out or "--token" in out) == loaded, out[-500:]
        assert (out.splitlines()[-1] != "LOADED []") == loaded, out.splitlines()[-1]


def test_up_demo_then_query(tmp_path: Path) -> None:
    data = tmp_path / "d"
    shoal("up", "--source", "demo:600", "--data-dir", str(data), "--idle-exit", "1")
    res = shoal("query", "--data-dir", str(data), "--format", "json",
                "SELECT count(*) AS n, count(DISTINCT id) AS u FROM posts")
    row = json.loads(res.stdout)
    assert row["n"] == row["u"] == 600
    report = next((data / "twitter").glob("*/*_report.txt")).read_text()
    assert report.startswith("hour\tdemo-a\tdemo-b\ttotal\tdiff\tdiff %\tlate")
    csv_out = shoal("query", "--data-dir", str(data), "--format", "csv",
                    "SELECT sum(total) AS t FROM reports").stdout
    assert csv_out.splitlines() == ["t", "600"]


def test_a_copied_or_moved_data_dir_is_queried_where_it_is(tmp_path: Path) -> None:
    """The views were read from shoal.duckdb, which names the folder it was written in: a
    copy answered with the original's rows, and a moved folder with an error."""
    import shutil

    data = tmp_path / "d"
    shoal("up", "--source", "demo:300", "--data-dir", str(data), "--idle-exit", "1",
          "--no-media")
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    day = sorted((copy / "_parquet" / "posts").glob("platform=twitter/day=*"))[0]
    kept = shoal("query", "--data-dir", str(copy), "--format", "csv",
                 f"SELECT count(*) FROM posts WHERE day <> '{day.name[4:]}'").stdout
    shutil.rmtree(day)
    copied = shoal("query", "--data-dir", str(copy), "--format", "csv",
                   "SELECT count(*) FROM posts").stdout
    assert copied == kept != "count_star()\n300\n"
    moved = tmp_path / "moved"
    data.rename(moved)
    res = shoal("query", "--data-dir", str(moved), "--format", "csv",
                "SELECT count(*) FROM posts")
    assert res.stdout.splitlines() == ["count_star()", "300"]


def test_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        ("up", "--source", "file:/no/such/file.jsonl", "--data-dir", str(tmp_path)),
        ("up", "--source", "ftp:x", "--data-dir", str(tmp_path)),
        ("query", "--data-dir", str(tmp_path / "nope"), "SELECT 1"),
        ("up", "--source", "demo:10", "--tz", "Mars/Olympus", "--data-dir", str(tmp_path)),
        ("replay",),
        ("replay", "--brokers", "127.0.0.1:1", "--data-dir", str(Path(__file__).parent)),
        ("query", "--data-dir", str(tmp_path), "--format", "xml", "SELECT 1"),
    ]
    for args in cases:
        proc = shoal(*args, check=False)
        assert proc.returncode != 0, args
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("shoal"), (args, proc.stderr)
        assert "error:" in lines[0]
        assert "Traceback" not in proc.stderr


def test_problems_the_user_can_fix_are_exit_2_before_anything_starts(tmp_path: Path) -> None:
    """An unknown --format ran the whole pipeline over nothing and exited 0; a data dir that
    is a file (or under one) was exit 1 with a bare FileExistsError."""
    a_file = tmp_path / "f"
    a_file.write_text("x")
    cases = [
        (("up", "--source", "demo:10", "--format", "nope", "--data-dir", str(tmp_path / "a")),
         "unknown --format 'nope'"),
        (("collect", "file", str(a_file), "--brokers", "127.0.0.1:1", "--collector", "c",
          "--format", "nope"), "unknown --format 'nope'"),
        (("up", "--source", "demo:10", "--data-dir", str(a_file)), "is a file"),
        (("up", "--source", "demo:10", "--data-dir", str(a_file / "sub")), "is a file"),
    ]
    for args, message in cases:
        proc = shoal(*args, check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, lines)
    assert not (tmp_path / "a").exists()


def test_separate_services_resume_and_read_while_writing(fixtures: Path, tmp_path: Path) -> None:
    port = free_port()
    broker = subprocess.Popen([*SHOAL, "broker", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 20)
        brokers = f"127.0.0.1:{port}"
        data = tmp_path / "d"
        out = shoal("collect", "file", str(fixtures / V2 / "brexit.jsonl"),
                    "--brokers", brokers, "--collector", "lab-1").stdout
        assert json.loads(out.strip().splitlines()[-1]) == {"lab-1": 100}
        # --no-media: the fixtures' media URLs are historical and must not be fetched.
        first = shoal("process", "--no-media", "--brokers", brokers, "--data-dir", str(data),
                      "--idle-exit", "1", "--epoch-seconds", "0.5")
        assert '"hour sealed"' in first.stderr
        # A known data dir resumes where it stopped: nothing new, nothing sealed again.
        again = shoal("process", "--no-media", "--brokers", brokers, "--data-dir", str(data),
                      "--idle-exit", "1", "--epoch-seconds", "0.5")
        assert '"hour sealed"' not in again.stderr
        # Read the catalog with DuckDB while a processor is running and sealing more.
        shoal("collect", "file", str(fixtures / V2 / "kpop.jsonl"),
              "--brokers", brokers, "--collector", "lab-1")
        proc = subprocess.Popen(
            [*SHOAL, "process", "--no-media", "--brokers", brokers, "--data-dir", str(data),
             "--idle-exit", "2",
             "--epoch-seconds", "0.5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        counts = []
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            con = duckdb.connect(str(data / "shoal.duckdb"), read_only=True)
            row = con.execute("SELECT count(*) FROM posts").fetchone()
            assert row is not None  # an aggregate always yields one row
            counts.append(row[0])
            con.close()
            time.sleep(0.1)
        assert proc.wait(30) == 0
        con = duckdb.connect(str(data / "shoal.duckdb"), read_only=True)
        final = con.execute("SELECT count(DISTINCT id), count(*) FROM posts").fetchone()
        con.close()
        assert final is not None and final[0] == final[1] == 200
        assert counts and min(counts) >= 100  # readers never saw a half-published catalog
    finally:
        broker.terminate()
        broker.wait(10)


def test_no_media_flag_is_accepted(tmp_path: Path) -> None:
    env = {**os.environ}
    proc = subprocess.run(
        [*SHOAL, "up", "--source", "demo:50", "--data-dir", str(tmp_path / "d"), "--idle-exit",
         "0.5", "--no-media"], capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ctrl_c_stops_up_in_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (the sealing helpers too): one line, exit 130."""
    import lzma
    import signal

    data = tmp_path / "d"

    def as_from_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # CI may start us with SIGINT ignored
        os.setsid()

    proc = subprocess.Popen(
        [*SHOAL, "up", "--source", "demo:20000", "--no-media", "--data-dir", str(data),
         "--lateness", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 90
        while not list(data.glob("twitter/*/*_IDs.txt.xz")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert list(data.glob("twitter/*/*_IDs.txt.xz")), "no hour was sealed in 90 s"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "shoal: interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # No sealing helper, broker or resource tracker outlives it (they may take a moment).
    deadline, left = time.monotonic() + 10, ["?"]
    while left and time.monotonic() < deadline:
        pids = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True)
        left = [cmd for p in pids.stdout.split() if (cmd := _cmdline(p))]
        time.sleep(0.1)
    assert not left, left
    for ids in data.glob("twitter/*/*_IDs.txt.xz"):  # every hour under its final name is whole
        stem = ids.name.removesuffix("_IDs.txt.xz")
        tweets = ids.with_name(f"{stem}_tweets.csv.xz")
        n = len(lzma.decompress(ids.read_bytes()).splitlines())
        assert len(lzma.decompress(tweets.read_bytes()).decode().splitlines()) >= n + 1


def _cmdline(pid: str) -> str:
    """A live process's command line ("" once it has gone, which it may do while read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()[:80].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def test_up_passes_a_source_argument_that_starts_with_a_dash_as_one() -> None:
    """``--source images:-funny`` (or a search starting with ``-is:retweet``) reached the
    collector as an option it did not know: it exited 2 and the source was lost."""
    from shoal.app.cli import Source, build_parser, collector_argv

    for kind, value, attr in (("images", "-funny", "keywords"),
                              ("twitter-search", "-is:retweet", "query"),
                              ("images", "--help", "keywords")):
        argv = collector_argv(Source(kind, value), "127.0.0.1:9092", None)
        args = build_parser().parse_args(argv)
        got = getattr(args, attr)
        assert (got == [value] if isinstance(got, list) else got == value), (kind, got)
        assert args.brokers == "127.0.0.1:9092" and args.collector == kind
    argv = collector_argv(Source("instagram", "alice,bob", "ig"), "b:1", Path("shoal.toml"))
    at = argv.index("--config")
    assert argv[at + 1] == "shoal.toml"  # read by main's pre-parser, before build_parser
    args = build_parser().parse_args(argv[:at] + argv[at + 2:])
    assert args.profiles == ["alice", "bob"] and args.collector == "ig"
