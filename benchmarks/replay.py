"""Reprocessing speed: `shoal replay --from-beginning` of a filled topic, against its floor.

    .venv/bin/python benchmarks/replay.py                  # 1,000,000 posts over 48 hours
    .venv/bin/python benchmarks/replay.py --posts 200000 --processes 2

What users wait for is reprocessing: replaying a topic after a fix to the normaliser, or
catching up after the processor was down. No producer is in that job, so this fills a topic
on the embedded broker first (``shoal collect file``, not timed), then times, as child
processes and one at a time:

1. ``shoal replay --from-beginning`` into a fresh data dir (one process, or ``--processes N``
   as a Bytewax cluster on this machine, whose sealed files are then compared byte for byte
   with the single process's), from start to exit. A replay stops at the end offsets it
   read at its start: there is no idle wait to subtract.
2. the peer, ``twarc2 csv`` (the twarc-csv plugin), converting the same posts' pages to one
   CSV: less work than a replay (no Kafka, no dedupe, no hourly files, no Parquet).

Printed: posts/s, CPU µs per post of every process involved (the processor with its
sealing helpers, from ``wait4``; the broker, from its /proc counters), peak RSS, and beside
them, measured in the same run on the same posts, the floor of the processor's fixed parts
(``benchmarks/floors.py``: confluent-kafka consume, the broker serving it, orjson decode,
xz of the rows, DuckDB Parquet of the rows). ``--profile`` also runs the single-process
replay under cProfile and prints where its own CPU goes. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.floors import processor_floors  # noqa: E402
from connectors.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from connectors.kafka.publisher import ensure_topics  # noqa: E402
from connectors.store.catalog import CATALOG  # noqa: E402
from shoal.demo import DemoSpec, demo_pages  # noqa: E402

SHOAL = [sys.executable, "-m", "shoal"]
BIN = Path(sys.executable).parent
console = Console()


class Run:
    """A finished child: wall seconds, CPU seconds (its reaped children too), peak RSS MiB."""

    def __init__(self, seconds: float, cpu: float, rss_mib: int) -> None:
        self.seconds, self.cpu, self.rss_mib = seconds, cpu, rss_mib


def run_children(cmds: list[list[str]]) -> Run:
    """Start every command at once, wait for all; CPU summed, RSS the largest of them."""
    t0 = time.perf_counter()
    # stderr to files, not pipes: a chatty child must not block on a full pipe.
    logs = [tempfile.TemporaryFile() for _ in cmds]  # noqa: SIM115 (closed at exit)
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
             for cmd, log in zip(cmds, logs, strict=True)]
    cpu, rss = 0.0, 0
    for cmd, proc, log in zip(cmds, procs, logs, strict=True):
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            err = log.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"{' '.join(cmd[2:5])}... failed: {err}")
        cpu += usage.ru_utime + usage.ru_stime
        rss = max(rss, usage.ru_maxrss // 1024)
    return Run(time.perf_counter() - t0, cpu, rss)


def tree_digest(root: Path) -> dict[str, str]:
    """Every sealed file's SHA-256, by path: what two replays must agree on.

    The recovery store and ``_work`` (locks, who holds them, open hours' chunks) belong to
    the processes that ran; everything else (hourly files, Parquet, raw archive, reports,
    dead letters) is output. The DuckDB catalog holds views only, naming files by their
    absolute path: its bytes differ between two data dirs by construction (and with the
    order it was written in), so it is compared by what it says, its views' SQL with the data
    dir's path taken out.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel.startswith(("_recovery", "_work", "_logs")):
            continue
        if rel == CATALOG:
            with duckdb.connect(str(path), read_only=True) as con:
                views = con.execute("SELECT view_name, sql FROM duckdb_views() "
                                    "WHERE NOT internal ORDER BY view_name").fetchall()
            body = orjson.dumps([(v, sql.replace(str(root), "DIR")) for v, sql in views])
        else:
            body = path.read_bytes()
        out[rel] = hashlib.sha256(body).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=1_000_000)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--processes", type=int, default=2,
                    help="also replay with a Bytewax cluster of this many processes "
                    "(1: skip)")
    ap.add_argument("--floor-posts", type=int, default=200_000,
                    help="posts the floors are measured on (per-post figures)")
    ap.add_argument("--no-peer", action="store_true", help="skip twarc2 csv")
    ap.add_argument("--profile", action="store_true",
                    help="replay once more under cProfile and print the top functions")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-replay-"))
    n = args.posts
    try:
        src = tmp / "pages.jsonl"
        with open(src, "wb") as fh:
            for page in demo_pages(DemoSpec(posts=n, hours=args.hours, authors=20_000)):
                fh.write(orjson.dumps(page) + b"\n")
        console.print(f"input: {n:,} posts over {args.hours} h, "
                      f"{src.stat().st_size / 1e6:,.0f} MB of v2 pages")
        with EmbeddedBroker() as broker:
            b = broker.bootstrap
            ensure_topics(b, args.partitions)
            t0 = time.perf_counter()
            run_children([[*SHOAL, "collect", "file", str(src), "--brokers", b,
                           "--collector", "bench"]])
            console.print(f"topic filled in {time.perf_counter() - t0:.0f} s (not timed below)")
            common = [*SHOAL, "replay", "--from-beginning", "--brokers", b, "--no-media",
                      "--lateness", "300"]

            b0 = broker.cpu_seconds()
            one = run_children([[*common, "--data-dir", str(tmp / "one")]])
            one_broker = broker.cpu_seconds() - b0
            cluster: Run | None = None
            cluster_broker = 0.0
            if args.processes > 1:
                addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(args.processes))
                b0 = broker.cpu_seconds()
                cluster = run_children([
                    [*common, "--data-dir", str(tmp / "cluster"), "--addresses", addresses,
                     "--process-id", str(i)] for i in range(args.processes)])
                cluster_broker = broker.cpu_seconds() - b0
            profile = tmp / "replay.prof"
            if args.profile:
                run_children([[sys.executable, "-m", "cProfile", "-o", str(profile),
                               "-m", "shoal", *common[3:], "--data-dir", str(tmp / "prof"),
                               "--seal-processes", "0"]])
            floors = processor_floors(broker, min(n, args.floor_posts), tmp / "floors")
        peer: Run | None = None
        if not args.no_peer:
            peer = run_children([[str(BIN / "twarc2"), "--bearer-token", "unused", "csv",
                                  str(src), str(tmp / "peer.csv")]])
        same = None
        if cluster is not None:
            mine, theirs = tree_digest(tmp / "one"), tree_digest(tmp / "cluster")
            same = mine == theirs
            for rel in sorted(set(mine) | set(theirs)):
                if mine.get(rel) != theirs.get(rel):  # which files, not only that some do
                    where = ", ".join(f"{name}: {'present' if rel in d else 'absent'}"
                                      for name, d in (("one process", mine), ("cluster", theirs)))
                    console.print(f"differs: {rel} ({where})")
        report(n, one, one_broker, cluster, cluster_broker, args.processes, peer, floors, same)
        if args.profile:
            console.print("[bold]cProfile of the replay (inline sealing), top 30 by own time"
                          "[/bold]")
            pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            console.print(f"kept {tmp}")
    return 0 if same in (None, True) else 1


def report(n: int, one: Run, one_broker: float, cluster: Run | None, cluster_broker: float,
           processes: int, peer: Run | None, floors: dict[str, float], same: bool | None) -> None:
    table = Table("run", "seconds", "posts/s", "CPU µs/post (processes)",
                  "CPU µs/post (broker)", "peak RSS MiB")

    def row(name: str, r: Run, broker_cpu: float) -> None:
        table.add_row(name, f"{r.seconds:.1f}", f"{n / r.seconds:,.0f}",
                      f"{r.cpu / n * 1e6:.1f}", f"{broker_cpu / n * 1e6:.1f}", str(r.rss_mib))

    row("shoal replay, 1 process", one, one_broker)
    if cluster is not None:
        row(f"shoal replay, cluster of {processes}", cluster, cluster_broker)
    if peer is not None:
        row("twarc2 csv (peer)", peer, 0.0)
    console.print(table)
    ft = Table("fixed part (floors.py, same run)", "µs of CPU per post")
    floor = 0.0
    for name, us in floors.items():
        floor += us
        ft.add_row(name, f"{us:.1f}")
    ft.add_row("[bold]floor (sum)[/bold]", f"[bold]{floor:.1f}[/bold]")
    console.print(ft)
    per_post = (one.cpu + one_broker) / n * 1e6
    console.print(f"replay CPU per post (processor + helpers + broker): {per_post:.1f} µs = "
                  f"{per_post / floor:.2f}x the floor (target <= 1.5x); "
                  f"{n / one.seconds:,.0f} posts/s (target >= 25,000)")
    if peer is not None:
        console.print(f"against the peer: {peer.seconds / one.seconds:.1f}x its speed")
    if cluster is not None:
        console.print(f"cluster of {processes}: {one.seconds / cluster.seconds:.2f}x the speed "
                      f"of one process; sealed files byte-identical: {same}")


if __name__ == "__main__":
    raise SystemExit(main())
