"""A Bytewax cluster of two `shoal process` processes writes what one process writes."""

from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import orjson

from connectors.kafka.broker import EmbeddedBroker, free_port
from connectors.kafka.publisher import ensure_topics
from shoal.demo import DemoSpec, demo_pages, write_demo_files
from tests.pipeline import all_ids, digests, publish

SHOAL = [sys.executable, "-m", "shoal"]


def undated_posts(path: Path, n: int) -> Path:
    """Tweets without created_at: the collector passes them, the processor dead-letters them."""
    page = next(demo_pages(DemoSpec(posts=n, hours=1, seed=4)))
    for tweet in page["data"][:n]:
        tweet.pop("created_at", None)
    page["data"] = page["data"][:n]
    path.write_bytes(orjson.dumps(page) + b"\n")
    return path


def hours_sealed(log: str) -> set[tuple[str, str]]:
    """The (day, hour) of every "hour sealed" line of a process's JSON log."""
    out = set()
    for line in log.splitlines():
        if '"hour sealed"' in line:
            rec = orjson.loads(line)
            fields = rec.get("fields", rec)
            out.add((str(fields["day"]), str(fields["hour"])))
    return out


def dead_letters(root: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in root.glob("_deadletter/*/*_deadletter.jsonl.xz"):
        lines += lzma.decompress(path.read_bytes()).splitlines()
    return sorted(lines)


def test_two_process_cluster_writes_what_one_process_writes(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=8000, hours=6, seed=21))
    bad = undated_posts(tmp_path / "undated.jsonl", 7)
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, [*files.items(), ("demo-a", bad)])
        common = ["process", "--no-media", "--brokers", b.bootstrap, "--idle-exit", "1.5",
                  "--lateness", "60", "--epoch-seconds", "0.5"]
        one = subprocess.run([*SHOAL, *common, "--data-dir", str(tmp_path / "one")],
                             timeout=240, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert one.returncode == 0, one.stderr[-2000:]

        addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        procs = [
            subprocess.Popen([*SHOAL, *common, "--data-dir", str(tmp_path / "two"),
                              "--addresses", addresses, "--process-id", str(i)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(2)
        ]
        logs = []
        try:
            for proc in procs:
                _, err = proc.communicate(timeout=240)
                assert proc.returncode == 0, err[-2000:]
                logs.append(err.decode())
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    # One cluster, not two processes each doing everything: the hours are shared between
    # the two processes' seal shards, each hour sealed by one of them.
    sealed = [hours_sealed(log) for log in logs]
    assert all(sealed) and not sealed[0] & sealed[1]
    assert len(sealed[0] | sealed[1]) == 6
    single, cluster = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert len(single) > 6 * 4
    assert cluster == single
    assert len(set(all_ids(tmp_path / "two"))) > 7000
    # Each process filed the dead letters of its own partitions into the shared files.
    letters = dead_letters(tmp_path / "two")
    assert len(letters) == 7
    assert letters == dead_letters(tmp_path / "one")


def test_cluster_options_are_checked_in_one_line(tmp_path: Path) -> None:
    for args, needle in (
        (["--process-id", "0"], "go together"),
        (["--addresses", "127.0.0.1:1,127.0.0.1:2", "--process-id", "2"], "not an index"),
        (["--addresses", "nohost", "--process-id", "0"], "not HOST:PORT"),
    ):
        proc = subprocess.run([*SHOAL, "process", "--brokers", "127.0.0.1:1", "--data-dir",
                               str(tmp_path / "d"), *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


def test_a_lost_cluster_process_stops_the_others_and_a_restart_catches_up(
        tmp_path: Path) -> None:
    """kill -9 one process: the other stops with one line; restarting both gives the files
    one process would have written."""
    import time

    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=30000, hours=8, seed=9))
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(files.items()))
        common = [*SHOAL, "process", "--no-media", "--brokers", b.bootstrap, "--idle-exit",
                  "1.5", "--lateness", "60", "--epoch-seconds", "0.3"]
        subprocess.run([*common, "--data-dir", str(tmp_path / "one")], timeout=240, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def cluster() -> list[subprocess.Popen[bytes]]:
            addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
            return [subprocess.Popen([*common, "--data-dir", str(tmp_path / "two"),
                                      "--addresses", addresses, "--process-id", str(i)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    for i in range(2)]

        procs = cluster()
        try:
            # Kill once the cluster is under way (its first chunk is on disk).
            deadline = time.monotonic() + 60
            while not list((tmp_path / "two").glob("_work/chunks/*/*/*.jsonl")):
                assert time.monotonic() < deadline and procs[0].poll() is None
                time.sleep(0.05)
            procs[1].kill()
            _, err = procs[0].communicate(timeout=60)
            assert procs[0].returncode == 1
            assert err.decode().strip().splitlines()[-1] == (
                "shoal: error: lost contact with another process of the cluster; restart all "
                "of them together")
            assert "Traceback" not in err.decode()
            procs[1].wait(10)
            procs = cluster()
            for proc in procs:
                _, err = proc.communicate(timeout=240)
                assert proc.returncode == 0, err[-2000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    assert digests(tmp_path / "two") == digests(tmp_path / "one")
