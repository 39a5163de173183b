"""Memory stays bounded: a million media URLs waiting behind a slow host, then a long soak.

    .venv/bin/python benchmarks/memory.py                      # 1,000,000 URLs, 20-minute soak
    .venv/bin/python benchmarks/memory.py --urls 40000 --pending-minutes 0.5 \
        --soak-minutes 0.5 --warmup-minutes 0.5                # a smoke run, under 3 minutes

Both parts run ``shoal process`` as a child process on the embedded broker and sample its
memory from ``/proc``: VmRSS of the processor, and of the processor with its children (the
sealing helpers, separate interpreters), every ``--sample-seconds``.

1. **Pending.** Posts carrying ``--media-per-post`` photos each (4, Twitter's most) are
   published until ``--urls`` media URLs (default 1,000,000) are in Kafka, all on one slow
   loopback host that the processor may only ask once a second (``--domain-parallelism 1
   --throttle 1``): almost nothing gets fetched during the run, so nearly every URL waits.
   The processor reads the whole topic, keeps a small window of the host's URLs in memory
   and the rest in the spill file (``flows.media``); printed is its RSS over
   ``--pending-minutes`` with the URLs still waiting (the ``shoal_fetch_pending`` gauge,
   read from ``--metrics-port``) and the spill file's size.
2. **Soak.** ``--rate`` posts/s (default 500) of generated stream (``shoal.demo``: photos,
   videos, retweets) published by this process, paced in pages of 100, for
   ``--soak-minutes`` (default 20), their media answered at once by two loopback hosts;
   stream time runs ``--stream-speed`` times faster than the clock, so hours get sealed
   along the way. RSS is printed at the start, every minute and at the end, with the
   growth. The start comes after a warm-up (``--warmup-minutes``; by default the time the
   stream takes to fill what the processor rightly holds: the stage remembers the posts of
   its open hours, lateness plus two hours of stream time, up to its cap), so that growth
   at the end means memory that is never given back.

Posts are published with shoal's own publisher (kafka-python, as ``shoal collect file``
does); the time that takes is printed. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.collect.files import collect_files, publish_records  # noqa: E402
from connectors.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from connectors.kafka.publisher import Publisher, ensure_topics  # noqa: E402
from shoal.demo import DemoSpec, demo_pages, snowflake  # noqa: E402
from shoal.formats import read_file  # noqa: E402

SLOW_IP = "127.0.0.2"
FAST_IPS = ("127.0.0.3", "127.0.0.4")
START = datetime(2021, 5, 11, 0, 0, tzinfo=UTC)
SOAK_LATENESS = 60  # seconds of stream time
console = Console(width=max(120, Console().width))


# --- the media server -----------------------------------------------------------------------


def serve(slow_latency: float, port_out: Any) -> None:
    """Child process: media on the slow host and the fast ones, until terminated."""
    from aiohttp import web

    from connectors.collect.demo_media import body_for
    from tests.loopback_server import serve_on_loopback

    async def handle(request: web.Request) -> web.Response:
        if request.host.startswith(SLOW_IP):
            await asyncio.sleep(slow_latency)
        data, ctype = body_for(request.path)
        return web.Response(body=data, content_type=ctype)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port_out.send(await serve_on_loopback(runner, [SLOW_IP, *FAST_IPS], backlog=1024))
        await asyncio.Event().wait()

    asyncio.run(main())


# --- posts ----------------------------------------------------------------------------------


def photo_pages(posts: int, per_post: int, base: str, hours: int) -> Iterator[dict[str, Any]]:
    """v2 pages of 100 posts with ``per_post`` photos each, all URLs distinct."""
    span = hours * 3600
    user = {"id": "1000", "username": "memory", "name": "Memory Bench",
            "created_at": "2015-01-01T00:00:00.000Z"}
    for first in range(0, posts, 100):
        data: list[dict[str, Any]] = []
        media: list[dict[str, Any]] = []
        for i in range(first, min(posts, first + 100)):
            when = START + timedelta(seconds=span * i / posts)
            tid = snowflake(when, i)
            keys = [f"3_{tid}{k}" for k in range(per_post)]
            media.extend({"media_key": key, "type": "photo", "width": 1200, "height": 900,
                          "url": f"{base}/media/{i}-{k}.jpg"} for k, key in enumerate(keys))
            data.append({
                "id": str(tid), "author_id": "1000", "text": f"post {i} with photos",
                "created_at": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "lang": "en",
                "attachments": {"media_keys": keys}, "edit_history_tweet_ids": [str(tid)],
            })
        yield {"data": data, "includes": {"users": [user], "media": media},
               "__twarc": {"retrieved_at": (when + timedelta(seconds=5)).isoformat()}}


def publish_page(pub: Publisher, page: dict[str, Any], path: Path) -> None:
    """One page through shoal's own reader, as ``shoal collect file`` reads a file."""
    path.write_bytes(orjson.dumps(page) + b"\n")
    publish_records(read_file(path, "twitter-v2"), pub,
                    datetime.now(UTC).replace(microsecond=0).isoformat())


# --- measuring ------------------------------------------------------------------------------


def _status_kib(pid: int, field: str = "VmRSS:") -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(text.split(field)[1].split()[0]) if field in text else 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the sealing helpers and their own children)."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.extend(kids)
        todo.extend(kids)
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(the process's RSS, with its descendants') in MiB."""
    own = _status_kib(pid)
    kids = sum(_status_kib(c) for c in descendants(pid))
    return own / 1024, (own + kids) / 1024


def scrape(port: int) -> dict[str, float]:
    """The processor's metrics that say how far it got."""
    out = {"posts": 0.0, "pending": 0.0, "fetched": 0.0, "sealed": 0.0}
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/metrics", timeout=5
        ) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("shoal_posts_in_total"):
            out["posts"] += float(value)
        elif name.startswith("shoal_fetch_pending"):
            out["pending"] += float(value)
        elif name.startswith("shoal_fetch_outcomes_total"):
            out["fetched"] += float(value)
        elif name.startswith("shoal_hours_sealed_total"):
            out["sealed"] += float(value)
    return out


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 \
        if path.exists() else 0.0


def start_processor(brokers: str, data: Path, metrics_port: int, log: Path,
                    extra: list[str], trace: Path | None = None) -> subprocess.Popen[bytes]:
    runner = ["-m", "shoal"] if trace is None else [str(ROOT / "benchmarks" / "traced.py"),
                                                    str(trace)]
    cmd = [sys.executable, *runner, "process", "--brokers", brokers, "--data-dir",
           str(data), "--metrics-port", str(metrics_port), "--allow-private-networks",
           "--progress-seconds", "60", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*", "no_proxy": "*"}
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def stop_processor(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code not in (0, 143, -signal.SIGTERM):
        console.print(f"[red]the processor exited {code}:[/red]\n"
                      + log.read_text(errors="replace")[-3000:])
    return code


# --- part 1: a million URLs pending -------------------------------------------------------


def pending_part(args: argparse.Namespace, work: Path, port: int) -> None:
    posts = -(-args.urls // args.media_per_post)
    urls = posts * args.media_per_post
    base = f"http://{SLOW_IP}:{port}"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, args.partitions)
        t0 = time.perf_counter()
        source = work / "pending.jsonl"
        with open(source, "wb") as fh:
            for page in photo_pages(posts, args.media_per_post, base, args.hours):
                fh.write(orjson.dumps(page) + b"\n")
        pub = Publisher(broker.bootstrap, "memory-bench", spool_dir=work / "spool-1")
        collect_files([source], pub, "twitter-v2")
        pub.close()
        source.unlink()
        took = time.perf_counter() - t0
        console.print(f"published {posts:,} posts with {urls:,} media URLs on {SLOW_IP} in "
                      f"{took:.0f} s ({posts / took:,.0f} posts/s, kafka-python)")

        data = work / "data-pending"
        mport = free_port()
        log = work / "pending.log"
        proc = start_processor(broker.bootstrap, data, mport, log, [
            "--domain-parallelism", "1", "--throttle", "1", "--lateness", "300",
            "--media-types", "photo",
        ], args.tracemalloc)
        table = Table("s", "RSS MiB", "with helpers MiB", "posts in", "URLs pending",
                      "fetched", "spill MiB", title=f"{urls:,} media URLs behind a slow host "
                      "(P=1, T=1 s)")
        t0 = time.monotonic()
        samples: list[tuple[float, float]] = []
        try:
            while (elapsed := time.monotonic() - t0) < args.pending_minutes * 60:
                if proc.poll() is not None:
                    break
                own, total = rss_mib(proc.pid)
                m = scrape(mport)
                if not m["posts"] and not m["pending"]:  # its metrics are not up yet
                    time.sleep(0.5)
                    continue
                samples.append((own, total))
                table.add_row(f"{elapsed:.0f}", f"{own:.0f}", f"{total:.0f}",
                              f"{m['posts']:,.0f}", f"{m['pending']:,.0f}",
                              f"{m['fetched']:,.0f}",
                              f"{dir_mib(data / '_work' / 'media-queue'):.0f}")
                time.sleep(args.sample_seconds)
        finally:
            stop_processor(proc, log)
    console.print(table)
    if samples:
        settled = samples[len(samples) // 2:]
        console.print(
            f"peak RSS {max(s[0] for s in samples):.0f} MiB (with helpers "
            f"{max(s[1] for s in samples):.0f} MiB); over the second half of the run "
            f"{min(s[0] for s in settled):.0f}-{max(s[0] for s in settled):.0f} MiB")


# --- part 2: the soak ---------------------------------------------------------------------


def soak_part(args: argparse.Namespace, work: Path, port: int) -> None:
    seconds = args.soak_minutes * 60
    # The stage's open hours (lateness + 2 h past the watermark, plus the current one) fill
    # up in this much wall time; from then on what it remembers is pruned as fast as it grows.
    fill = (SOAK_LATENESS + 3 * 3600) / args.stream_speed
    warmup = args.warmup_minutes * 60 if args.warmup_minutes is not None else max(60.0, fill)
    posts = int(args.rate * (seconds + warmup)) + 100
    stream_hours = max(1, int((seconds + warmup) * args.stream_speed / 3600) + 1)
    spec = DemoSpec(posts=posts, hours=stream_hours, authors=5000, start=START,
                    photo_base=f"http://{FAST_IPS[0]}:{port}",
                    video_base=f"http://{FAST_IPS[1]}:{port}")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, args.partitions)
        pub = Publisher(broker.bootstrap, "memory-soak", spool_dir=work / "spool-2",
                        compression_type="gzip")
        data = work / "data-soak"
        mport = free_port()
        log = work / "soak.log"
        proc = start_processor(broker.bootstrap, data, mport, log, [
            "--domain-parallelism", "8", "--throttle", "0", "--lateness", str(SOAK_LATENESS),
        ], args.tracemalloc)
        table = Table("min", "RSS MiB", "with helpers MiB", "posts in", "URLs pending",
                      "fetched", "hours sealed", "published/s",
                      title=f"soak: {args.rate:g} posts/s for {args.soak_minutes:g} min")
        pages = demo_pages(spec)
        t0 = time.monotonic()
        sent = 0
        first: tuple[float, float] | None = None
        last: tuple[float, float] = (0.0, 0.0)
        step = min(60.0, seconds / 2)
        # The warm-up is shown too (marked), at the same step, ending at the soak's start.
        next_sample = t0 + warmup - step * max(0, int((warmup - 30) // step))
        try:
            for page in pages:
                due = t0 + sent / args.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                publish_page(pub, page, work / "page.json")
                sent += len(page["data"])
                now = time.monotonic()
                if now >= next_sample:
                    if proc.poll() is not None:
                        break
                    own, total = rss_mib(proc.pid)
                    m = scrape(mport)
                    minute = (now - t0 - warmup) / 60
                    warming = now - t0 < warmup - 1
                    if not warming:
                        first = first or (own, total)
                        last = (own, total)
                    label = f"{minute:.1f}" + (" (warm-up)" if warming else "")
                    table.add_row(label, f"{own:.0f}", f"{total:.0f}",
                                  f"{m['posts']:,.0f}", f"{m['pending']:,.0f}",
                                  f"{m['fetched']:,.0f}", f"{m['sealed']:.0f}",
                                  f"{sent / (now - t0):.0f}")
                    console.print(f"soak {label} min: RSS {own:.0f} MiB "
                                  f"(with helpers {total:.0f})")
                    if now - t0 >= warmup + seconds:
                        break
                    next_sample += step
            pub.close()
        finally:
            stop_processor(proc, log)
    console.print(table)
    if first is not None:
        console.print(
            f"RSS at start {first[0]:.0f} MiB, at the end {last[0]:.0f} MiB: growth "
            f"{last[0] - first[0]:+.0f} MiB ({(last[0] - first[0]) / first[0]:+.1%}); with "
            f"helpers {first[1]:.0f} -> {last[1]:.0f} MiB ({last[1] - first[1]:+.0f} MiB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=1_000_000, help="media URLs pending (part 1)")
    ap.add_argument("--media-per-post", type=int, default=4)
    ap.add_argument("--hours", type=int, default=4, help="stream hours the posts of part 1 span")
    ap.add_argument("--pending-minutes", type=float, default=5.0,
                    help="how long part 1 watches the processor")
    ap.add_argument("--slow-latency", type=float, default=0.5,
                    help="seconds the slow host takes to answer")
    ap.add_argument("--soak-minutes", type=float, default=20.0, help="0: no soak")
    ap.add_argument("--rate", type=float, default=500.0, help="posts/s during the soak")
    ap.add_argument("--warmup-minutes", type=float,
                    help="before the soak's first reading (default: until the stage's open "
                    "hours are full, 6 minutes at the default stream speed)")
    ap.add_argument("--stream-speed", type=float, default=30.0,
                    help="stream seconds per second of the soak (hours get sealed)")
    ap.add_argument("--sample-seconds", type=float, default=10.0, help="part 1's sampling")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--tracemalloc", type=Path, metavar="OUT",
                    help="run the processor under benchmarks/traced.py, appending its largest "
                    "allocation sites to OUT every 30 s (slows it: for finding, not timing)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-memory-"))
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(args.slow_latency, send), daemon=True)
    server.start()
    try:
        if not recv.poll(30):
            raise SystemExit("the media server did not start")
        port = recv.recv()
        if args.urls > 0:
            pending_part(args, work, port)
        if args.soak_minutes > 0:
            soak_part(args, work, port)
    finally:
        server.terminate()
        server.join(10)
        if args.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
