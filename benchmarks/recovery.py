"""Restart time after 1 h, 10 h and 100 h of sampled-stream data: it must not grow with the data.

    .venv/bin/python benchmarks/recovery.py                  # the real rate: 180,000 posts/h
    .venv/bin/python benchmarks/recovery.py --scale 0.1      # a tenth of it, a quick look

One embedded broker and one data dir live through the whole run, as a deployment does. Hour
after hour of generated stream (``shoal.demo``, ``--rate`` posts/s of stream time, times
``--scale``) is published by one collector until the volume reaches the next mark; then
``shoal process`` catches up once (resuming from the previous mark, as a service does after a
deploy), and is started again ``--restarts`` times with nothing new to read. That restart —
interpreter start, restoring the Bytewax snapshot, finding the open hours on disk, reading
nothing, exiting — is the figure that matters; the ``--idle-exit`` wait is subtracted.
Printed next to it: the size of ``DIR/_recovery`` and of the whole data dir, the sealed
hours, and the processor's peak RSS.

Memory stays bounded at any volume: each hour is generated, written to a temporary file,
published and deleted before the next one, and the collector compresses with gzip so that the
in-memory broker holds about 0.35 KB a post (100 h at the real rate, 18 M posts, is ~6 GB of
broker memory; ``--scale`` reduces it). Media fetching is off (``--no-media``): there is no
network here. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.collect.files import collect_files  # noqa: E402
from connectors.kafka.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka.publisher import Publisher, ensure_topics  # noqa: E402
from shoal.demo import DemoSpec, demo_pages  # noqa: E402

START = datetime(2021, 5, 11, 0, 0, tzinfo=UTC)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def rss_mib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def run_process(brokers: str, data: Path, idle: float, partitions: int) -> tuple[float, int]:
    """``shoal process`` until idle exit: (seconds minus the idle wait, peak RSS MiB)."""
    cmd = [sys.executable, "-m", "shoal", "process", "--brokers", brokers, "--data-dir",
           str(data), "--idle-exit", str(idle), "--no-media", "--partitions", str(partitions)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # drained as it comes, so a chatty run cannot block on the pipe
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0 - idle
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"shoal process failed: {err.decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss // 1024


def publish_hour(pub: Publisher, hour: int, posts: int, folder: Path) -> int:
    """One hour of stream through a file, as ``shoal collect`` would read it; then gone."""
    path = folder / f"hour-{hour:04d}.jsonl"
    spec = DemoSpec(posts=posts, hours=1, authors=5000, seed=hour,
                    start=START + timedelta(hours=hour))
    with open(path, "wb") as fh:
        for page in demo_pages(spec):
            fh.write(orjson.dumps(page) + b"\n")
    before = pub.counts.posts
    collect_files([path], pub)
    path.unlink()
    return pub.counts.posts - before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="posts/s of stream (default 50)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of that rate (default 1)")
    ap.add_argument("--hours", default="1,10,100", help="volumes to measure at (default 1,10,100)")
    ap.add_argument("--restarts", type=int, default=3, help="restarts per volume (median shown)")
    ap.add_argument("--idle", type=float, default=1.0, help="--idle-exit of every run")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    args = ap.parse_args()
    marks = sorted({int(h) for h in args.hours.split(",")})
    per_hour = max(1, round(args.rate * 3600 * args.scale))
    console = Console(width=max(120, Console().width))
    console.print(f"{per_hour:,} posts per stream hour; volumes {marks} h; "
                  f"{per_hour * marks[-1]:,} posts at the end")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="shoal-recovery-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    table = Table("hours", "posts", "publish s", "catch-up s", "restart s", "_recovery KiB",
                  "DIR MiB", "sealed", "RSS MiB", "catch-up RSS",
                  title="restart after N hours of data")
    broker_rss = 0
    try:
        with EmbeddedBroker() as broker:
            ensure_topics(broker.bootstrap, args.partitions)
            pub = Publisher(broker.bootstrap, "sampled", spool_dir=work / "spool",
                            compression_type="gzip")
            published = hours_done = 0
            for mark in marks:
                t0 = time.perf_counter()
                for hour in range(hours_done, mark):
                    published += publish_hour(pub, hour, per_hour, work)
                pub.flush()
                publish_s = time.perf_counter() - t0
                hours_done = mark
                catch_up, rss_first = run_process(broker.bootstrap, data, args.idle,
                                                  args.partitions)
                restarts = []
                rss = 0
                for _ in range(args.restarts):
                    seconds, peak = run_process(broker.bootstrap, data, args.idle,
                                                args.partitions)
                    restarts.append(seconds)
                    rss = max(rss, peak)
                sealed = len(list((data / "twitter").glob("*/*_IDs.txt.xz")))
                row = (
                    str(mark), f"{published:,}", f"{publish_s:.0f}", f"{catch_up:.1f}",
                    f"{statistics.median(restarts):.2f} ({min(restarts):.2f}-{max(restarts):.2f})",
                    f"{dir_size(data / '_recovery') / 1024:.0f}",
                    f"{dir_size(data) / 2**20:.0f}", str(sealed), str(rss), str(rss_first),
                )
                table.add_row(*row)
                broker_rss = max(broker_rss, rss_mib(broker.proc.pid) if broker.proc else 0)
                console.print(f"{mark} h: restart {row[4]} s, _recovery {row[5]} KiB")
            pub.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    console.print(table)
    console.print(
        f"scale {args.scale:g} of {args.rate:g} posts/s. catch-up: processing the hours added "
        f"since the previous volume; restart: start to exit with nothing new, minus the "
        f"{args.idle:g} s idle wait. RSS: the processor's peak in a restart, and while catching"
        f" up. Broker: {broker_rss:,} MiB."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
