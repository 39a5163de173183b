"""End-to-end throughput: generated v2 traffic through Kafka and shoal, against `twarc2 csv`.

    .venv/bin/python benchmarks/throughput.py --posts 200000

Generates Twitter API v2 pages shaped like the fixtures (``shoal.demo``), then runs, in this
order and on the same machine:

1. shoal: the embedded broker, ``shoal collect file`` in a child process publishing the pages
   while ``shoal process`` (also a child) consumes, normalises, dedupes and seals every hour
   into xz files and Parquet. Wall time is from the collector's start to the processor's exit,
   minus the idle wait that tells the processor the input is over.
2. the peer: ``twarc2 csv`` (the twarc-csv plugin) converting the same file to one CSV —
   less work than shoal does (no Kafka, no dedupe, no hourly partitioning, no Parquet), so
   the ratio is conservative.

Prints posts/s for both, their ratio and the peak RSS of each child. Timings are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.kafka.broker import EmbeddedBroker  # noqa: E402
from connectors.kafka.publisher import ensure_topics  # noqa: E402
from shoal.demo import DemoSpec, demo_pages  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, float]:
    """Run a child; returns (seconds, peak RSS in MiB, CPU seconds) from wait4.

    CPU and RSS include the child's own children (shoal's sealing helpers) once reaped.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        raise SystemExit(f"{cmd[0]} failed: {err}")
    return seconds, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=200_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    try:
        src = tmp / "pages.jsonl"
        with open(src, "wb") as fh:
            for page in demo_pages(DemoSpec(posts=args.posts, hours=args.hours, authors=5000)):
                fh.write(orjson.dumps(page) + b"\n")
        size = src.stat().st_size / 1e6
        console.print(f"input: {args.posts} posts, {size:.0f} MB of v2 pages")

        with EmbeddedBroker() as broker:
            ensure_topics(broker.bootstrap, args.partitions)
            shoal = str(BIN / "shoal")
            broker_t0 = broker.cpu_seconds()
            t0 = time.perf_counter()
            collect = subprocess.Popen(
                [shoal, "collect", "file", str(src), "--brokers", broker.bootstrap,
                 "--collector", "bench"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            collected: list[float] = []

            def wait_collector() -> None:
                _, _, usage = os.wait4(collect.pid, 0)
                collected.append(time.perf_counter() - t0)
                collected.append(usage.ru_utime + usage.ru_stime)

            waiter = threading.Thread(target=wait_collector)
            waiter.start()
            _proc_s, proc_rss, proc_cpu = timed([
                shoal, "process", "--brokers", broker.bootstrap, "--data-dir", str(tmp / "out"),
                "--idle-exit", str(args.idle), "--workers", str(args.workers), "--no-recovery",
                "--lateness", "300", "--no-media",
            ])
            waiter.join()
            shoal_s = time.perf_counter() - t0 - args.idle
            broker_s = broker.cpu_seconds() - broker_t0
        ids = 0
        for f in (tmp / "out" / "twitter").glob("*/*_IDs.txt.xz"):
            import lzma

            ids += lzma.decompress(f.read_bytes()).count(b"\n")

        twarc2 = [str(BIN / "twarc2"), "--bearer-token", "unused"]
        peer_s, peer_rss, peer_cpu = timed([*twarc2, "csv", str(src), str(tmp / "peer.csv")])
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    table = Table("run", "posts", "seconds", "posts/s", "peak RSS MiB")
    table.add_row("shoal (Kafka -> sealed hours)", str(ids), f"{shoal_s:.1f}",
                  f"{args.posts / shoal_s:,.0f}", str(proc_rss))
    table.add_row("twarc2 csv (peer)", str(args.posts), f"{peer_s:.1f}",
                  f"{args.posts / peer_s:,.0f}", str(peer_rss))
    console.print(table)
    took, collect_cpu = collected
    console.print(f"the collector's part: {took:.1f} s ({args.posts / took:,.0f} posts/s into "
                  "Kafka, running beside the processor)")
    cpu = Table("CPU", "seconds", "µs per post")
    total = 0.0
    for name, secs in (("collector", collect_cpu), ("processor (with sealing helpers)", proc_cpu),
                       ("broker", broker_s)):
        total += secs
        cpu.add_row(name, f"{secs:.1f}", f"{secs / args.posts * 1e6:.0f}")
    cpu.add_row("shoal, all", f"{total:.1f}", f"{total / args.posts * 1e6:.0f}")
    cpu.add_row("twarc2 csv", f"{peer_cpu:.1f}", f"{peer_cpu / args.posts * 1e6:.0f}")
    console.print(cpu)
    busy = total / (shoal_s + args.idle) / (os.cpu_count() or 1)
    console.print(f"shoal kept {busy:.0%} of {os.cpu_count()} cores busy; at full use its CPU "
                  f"would allow {args.posts / (total / (os.cpu_count() or 1)):,.0f} posts/s")
    ratio = peer_s / shoal_s
    console.print(f"ratio shoal/peer: {ratio:.1f}x  (target: >= 20,000 posts/s, >= 10x)")
    if ids != args.posts:
        console.print(f"[red]expected {args.posts} unique IDs, found {ids}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
