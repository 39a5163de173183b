"""Replays stay byte-identical on a loaded machine (issue 11, item 9).

Collect from two collectors whose copies of a post differ (the two servers retrieved each page
at slightly different times) and whose streams carry late pages, process with SIGKILLs, then
replay from the beginning and process once more without interruption, all beside a CPU hog.
Under load the source hands the stage smaller polls and the wall-clock flushes fall elsewhere
in the stream; a crash forgets what the stage remembered. None of that may change a byte.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import orjson
import pytest

from connectors.collect.files import retrieval_time
from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.offsets import OffsetFinder
from connectors.kafka.publisher import POSTS_TOPIC, ensure_topics, post_headers
from connectors.kafka.source import Message
from connectors.store.chunks import pending_hours
from connectors.store.seal import seal_hour
from flows.config import FlowConfig
from flows.stage import StageLogic
from shoal.demo import DemoSpec, demo_pages
from shoal.formats import read_file
from shoal.model import RawPost
from shoal.options import FlowSettings, MediaSettings
from tests.pipeline import digests, publish, read_csv_xz


class _Quiet(TypedDict):
    """subprocess keyword arguments that silence a child; typed so ``**`` unpacks cleanly."""

    stdout: int
    stderr: int


# Few partitions, so that each holds several polls' worth of messages: the stage then flushes
# (and forgets) in the middle of a partition, at moments the load decides.
PARTITIONS = 2
POSTS = 6000
QUIET: _Quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def skewed_files(folder: Path, spec: DemoSpec, late_every: int = 11) -> dict[str, Path]:
    """Two overlapping collector files that disagree on retrieval times, with late pages.

    ``demo-b`` retrieved every page one to three seconds before ``demo-a`` (its copies should
    win: the earliest retrieval does) and is published after it, so its copies reach each
    partition long after ``demo-a``'s; ``demo-a`` holds back every ``late_every``-th page to
    the end of its file (posts late by event time). Each misses some pages of the other.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"demo-a": folder / "demo-a.jsonl", "demo-b": folder / "demo-b.jsonl"}
    held: list[bytes] = []
    with open(paths["demo-a"], "wb") as a, open(paths["demo-b"], "wb") as b:
        for n, page in enumerate(demo_pages(spec)):
            line = orjson.dumps(page) + b"\n"
            if n % 17 != 5:
                (held.append if n % late_every == 4 else a.write)(line)
            if n % 13 != 3:
                meta = page["__twarc"]
                when = datetime.fromisoformat(meta["retrieved_at"])
                meta["retrieved_at"] = (when - timedelta(seconds=1 + n % 3)).isoformat()
                b.write(orjson.dumps(page) + b"\n")
        a.writelines(held)
    return paths


def start_hog() -> list[subprocess.Popen[bytes]]:
    """Two busy loops per core, for the duration of one test."""
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code], **QUIET)
            for _ in range(2 * (os.cpu_count() or 2))]


def stop_hog(hog: list[subprocess.Popen[bytes]]) -> None:
    for proc in hog:
        proc.kill()
    for proc in hog:
        proc.wait()


def wait_for_chunk(data_dir: Path, since: float, child: subprocess.Popen[bytes],
                   timeout: float = 30.0) -> bool:
    """Wait until the processor wrote a chunk file after ``since`` (or exited)."""
    deadline = time.monotonic() + timeout
    chunks = data_dir / "_work" / "chunks"
    while time.monotonic() < deadline and child.poll() is None:
        for path in chunks.rglob("*.jsonl"):
            try:
                if path.stat().st_mtime >= since:
                    return True
            except FileNotFoundError:  # sealed and removed meanwhile
                continue
        time.sleep(0.05)
    return False


def test_replay_under_load_is_byte_identical(tmp_path: Path) -> None:
    rnd = random.Random(91)
    shoal = [sys.executable, "-m", "shoal"]
    flow = ["--no-media", "--idle-exit", "1.5", "--epoch-seconds", "0.5", "--lateness", "60"]
    hog: list[subprocess.Popen[bytes]] = []
    try:
        with EmbeddedBroker() as b:
            ensure_topics(b.bootstrap, PARTITIONS)
            files = skewed_files(tmp_path / "in", DemoSpec(posts=POSTS, hours=4, seed=5))
            for name, path in files.items():
                subprocess.run([*shoal, "collect", "file", str(path), "--brokers", b.bootstrap,
                                "--collector", name], check=True, timeout=60, **QUIET)
            hog = start_hog()
            process = [*shoal, "process", "--brokers", b.bootstrap, *flow, "--data-dir"]
            crashy = str(tmp_path / "crashy")
            kills = 0
            while kills < 4:
                # Killed once it has written something new: in the middle of the stream, where
                # a restart forgets what the stage remembered.
                started = time.time()
                child = subprocess.Popen([*process, crashy], **QUIET)
                if wait_for_chunk(Path(crashy), started, child) and child.poll() is None:
                    time.sleep(rnd.uniform(0.0, 1.0))
                if child.poll() is not None:
                    break
                child.send_signal(signal.SIGKILL)
                child.wait()
                kills += 1
            subprocess.run([*process, crashy], check=True, timeout=120, **QUIET)
            subprocess.run([*shoal, "replay", "--brokers", b.bootstrap, "--from-beginning",
                            *flow, "--data-dir", str(tmp_path / "replay")],
                           check=True, timeout=120, **QUIET)
            subprocess.run([*process, str(tmp_path / "clean")], check=True, timeout=120, **QUIET)
    finally:
        stop_hog(hog)
    assert kills >= 2, kills  # the processor did die mid-stream
    clean, replay, crashy_out = (digests(tmp_path / d) for d in ("clean", "replay", "crashy"))
    assert len(clean) > 30
    differ = {name: sorted(k for k in clean.keys() | out.keys() if clean.get(k) != out.get(k))
              for name, out in (("replay", replay), ("crashy", crashy_out))}
    assert differ == {"replay": [], "crashy": []}
    # The merge's rule holds: the earliest retrieval of a post wins (demo-b's, where it has one).
    rows = read_csv_xz(next((tmp_path / "clean" / "twitter").glob("*/*_18_tweets.csv.xz")))
    both = [r for r in rows if r["collectors"] == "demo-a|demo-b"]
    assert both
    b_times = {t["id"]: page["__twarc"]["retrieved_at"]
               for page in map(orjson.loads, files["demo-b"].read_bytes().splitlines())
               for t in page["data"]}
    assert all(r["retrieved_at"] == b_times[r["id"]] for r in both)


def _messages(files: dict[str, Path]) -> list[Message]:
    """The files' posts as the stage would get them from one partition, collector by collector."""
    out: list[Message] = []
    for collector, path in files.items():
        for rec in read_file(path):
            assert isinstance(rec, RawPost)
            headers = post_headers(rec.format, collector,
                                   retrieval_time(rec, "2021-05-11T00:00:00+00:00"), rec.source)
            out.append(Message(0, len(out), rec.key.encode(), orjson.dumps(rec.payload),
                               tuple(headers), 0))
    return out


def _stage_and_seal(data_dir: Path, msgs: list[Message], forget: bool) -> dict[str, str]:
    cfg = FlowConfig(data_dir=data_dir, brokers="unused:9092",
                     flow=FlowSettings(lateness=60.0), media=MediaSettings(enabled=False))
    stage = StageLogic(cfg, None)
    for n in range(0, len(msgs), 50):
        stage.on_batch([msgs[n:n + 50]])
        if forget:  # what a crash (or the pruning at a flush) does to its memory
            stage.snapshot()
            stage.seen.clear()
    stage.on_eof()
    for platform, start in sorted(pending_hours(data_dir)):
        seal_hour(data_dir, platform, start, "UTC")
    return digests(data_dir)


def test_what_the_stage_remembers_changes_no_output(tmp_path: Path) -> None:
    """Fast and without a broker: the stage forgetting every copy it wrote (a crash, a
    flush that prunes) gives the same files as a stage that remembers them all."""
    files = skewed_files(tmp_path / "in", DemoSpec(posts=600, hours=4, seed=5))
    msgs = _messages(files)
    remembered = _stage_and_seal(tmp_path / "remembered", msgs, forget=False)
    forgotten = _stage_and_seal(tmp_path / "forgotten", msgs, forget=True)
    assert len(remembered) > 10
    assert remembered == forgotten


def test_end_offsets_do_not_depend_on_a_slow_fetch(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's end is read to the high watermark a fetch reported, not to the first poll
    that came back empty (Tansu's ListOffsets stops at the last batch's first record)."""
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        files = skewed_files(tmp_path / "in", DemoSpec(posts=600, hours=2, seed=5))
        publish(b.bootstrap, list(files.items()))
        finder = OffsetFinder(b.bootstrap, POSTS_TOPIC)
        try:
            quiet = finder.end_offsets()
            polls = finder.consumer.poll
            slow = {"left": 0}

            def slow_poll(timeout_ms: int = 0, max_records: int | None = None) -> Any:
                if slow["left"] > 0:  # a fetch that has not answered yet
                    slow["left"] -= 1
                    return {}
                return polls(timeout_ms=timeout_ms, max_records=max_records)

            monkeypatch.setattr(finder.consumer, "poll", slow_poll)
            loaded = {}
            for p in finder.partitions():
                slow["left"] = 3
                loaded[p] = finder.bounds(p)[1]
        finally:
            finder.close()
    assert loaded == quiet
