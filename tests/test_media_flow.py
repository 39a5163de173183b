"""Media through the real dataflow: politeness seen by our servers, restarts, a crash mid-fetch."""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TypedDict

import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from shoal.demo import DemoSpec, write_demo_files
from shoal.fetch.policy import FetchConfig
from tests.loopback_server import MediaServer, tightest_window
from tests.pipeline import publish, read_csv_xz, run_flow


class _Quiet(TypedDict):
    """subprocess keyword arguments that silence a child; typed so ``**`` unpacks cleanly."""

    stdout: int
    stderr: int


@pytest.fixture
def server() -> Iterator[MediaServer]:
    s = MediaServer().start()
    yield s
    s.stop()


def media_rows(out: Path) -> list[dict[str, str]]:
    return [r for p in sorted((out / "twitter").glob("*/*_media.csv.xz")) for r in read_csv_xz(p)]


def test_polite_fetch_in_the_flow_and_no_refetch_on_restart(
    server: MediaServer, tmp_path: Path
) -> None:
    hosts = {"img1.test": "127.0.0.1", "img2.test": "127.0.0.1"}
    spec = DemoSpec(posts=300, hours=3, seed=5, media_share=0.6,
                    photo_base=f"http://img1.test:{server.port}",
                    video_base=f"http://img2.test:{server.port}")
    files = write_demo_files(tmp_path / "demo", spec)
    fetch = FetchConfig(domain_parallelism=2, throttle=0.05, resolve=hosts)
    out = tmp_path / "out"
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        publish(b.bootstrap, list(files.items()))
        run_flow(b.bootstrap, out, recovery=True, media=True, fetch=fetch, reseal_interval=0.5)
        requests_first = len(server.log)
        run_flow(b.bootstrap, out, recovery=True, media=True, fetch=fetch, reseal_interval=0.5)
    assert len(server.log) == requests_first, "a restart fetched again"

    rows = media_rows(out)
    assert rows and all(r["sha256"] and not r["error"] for r in rows)
    for r in rows:
        data = (out / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
    # Every distinct URL was asked once (retweets share their original's media).
    assert requests_first == len({r["url"] for r in rows})
    # What the server saw: per host, at most P at once and starts at least T apart.
    by_host: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for host, start, end in server.log:
        by_host[host].append((start, end))
    assert set(by_host) == {"img1.test", "img2.test"}
    for spans in by_host.values():
        spans.sort()
        starts = [s for s, _ in spans]
        # Every run of four gaps is at least 4 T long, to within the 30 ms by which a loaded
        # 2-core machine can stamp one arrival late (see tightest_window).
        assert tightest_window(starts, 0.05) <= 0.030, starts
        for s, _ in spans:
            assert sum(1 for s2, e2 in spans if s2 <= s < e2) <= 2


def test_crash_mid_fetch_loses_no_file_and_stores_none_twice(
    server: MediaServer, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    spec = DemoSpec(posts=200, hours=2, seed=9, media_share=0.7, photo_base=base,
                    video_base=base.replace("127.0.0.1", "127.0.0.2"))
    files = write_demo_files(tmp_path / "demo", spec)
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        publish(b.bootstrap, list(files.items()))
        cmd = [sys.executable, "-m", "shoal", "process", "--brokers", b.bootstrap,
               "--idle-exit", "1", "--epoch-seconds", "0.3", "--allow-private-networks",
               "--throttle", "0.01", "--domain-parallelism", "4", "--data-dir"]
        quiet: _Quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        subprocess.run([*cmd, str(tmp_path / "clean")], check=True, timeout=120, **quiet)
        crashy = str(tmp_path / "crashy")
        died = 0
        for nth in ("3", "40", "90"):
            env = {**os.environ, "SHOAL_CRASH_AT": f"fetch:{nth}"}
            proc = subprocess.run([*cmd, crashy], env=env, timeout=120, **quiet)
            died += proc.returncode == -signal.SIGKILL
        subprocess.run([*cmd, crashy], check=True, timeout=120, **quiet)
    assert died >= 2

    def fates(root: str | Path) -> dict[tuple[str, str], tuple[str, str, str]]:
        return {(r["post_id"], r["position"]): (r["url"], r["sha256"], r["path"])
                for r in media_rows(Path(root))}

    clean, after = fates(tmp_path / "clean"), fates(crashy)
    assert clean == after and all(v[1] for v in after.values())
    stored = [p for p in (Path(crashy) / "media").rglob("*") if p.is_file()]
    assert len(stored) == len({v[1] for v in after.values()})  # each content once
    for path in stored:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem


@pytest.mark.parametrize("pace", [["--throttle", "0.4", "--domain-parallelism", "1"],
                                  ["--host-limit", "pbs.demo.shoal=1,0.4"]])
def test_the_demo_fetches_at_the_pace_the_user_asks_for(tmp_path: Path, pace: list[str]) -> None:
    """The demo's own server is fetched at full speed by default; a pace the user gives
    (a throttle, or a limit for one host) holds there too: it used to be overridden."""
    data = tmp_path / "d"
    proc = subprocess.run([sys.executable, "-m", "shoal", "up", "--source", "demo:8",
                           "--data-dir", str(data), "--idle-exit", "1", *pace],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done: dict[str, str] = {}
    for path in (data / "twitter").glob("*/*_media.csv.xz"):
        for row in read_csv_xz(path):
            if "pbs.demo.shoal" in row["url"] and row["http_status"] == "200":
                done[row["url"]] = row["fetched_at"]
    times = sorted(datetime.fromisoformat(t).timestamp() for t in done.values())
    assert len(times) >= 4, done
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.3, gaps  # one at a time, 0.4 s apart (ends: a little jitter)
