"""Fetch politeness and speed: shoal's engine against its own bound and against `minet fetch`.

    .venv/bin/python benchmarks/fetch.py --urls 300 --hosts 20

A media server (aiohttp, its own process) answers on 127.0.0.2, 127.0.0.3 ... with a fixed
latency; the URLs are spread over the hosts with a zipf-like skew, so one host dominates as
pbs.twimg.com does. Host names are distinct registered domains (``shoal-bench-07.com``)
that resolve to loopback inside the tools' processes only: shoal through its static
resolver (``--resolve``), minet through a wrapper that patches ``socket.getaddrinfo``
before running minet's CLI (no /etc/hosts, no DNS). minet goes into a venv of its own.

For each (P, T) setting both tools fetch the same CSV; printed are the wall time (inside
the tool's process, around its main function), the politeness bound
max over hosts of max(ceil(n/P)*L, (n-1)*T + L), their ratio, and what the server saw:
the span from the first request's start to the last one's end, the most requests in
flight on one host, and the smallest gap between two starts on one host and the mean one
on the busiest host, as fractions of T. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shoal.fetch.policy import politeness_bound  # noqa: E402

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
console = Console(stderr=True)


# --- the server ---------------------------------------------------------------------------


def serve(ips: list[str], latency: float, port_out: Any, lifetime: float) -> None:
    """Child process: a media server on every address, until ``lifetime`` runs out."""
    from aiohttp import web

    from tests.loopback_server import serve_on_loopback, stamp_arrivals

    with contextlib.suppress(OSError):
        os.nice(-10)  # its clock readings are the measurement: keep them prompt
    gc.disable()
    log: list[tuple[str, float, float]] = []
    arrivals: dict[int, float] = {}  # connection -> its latest request's arrival
    stamp_arrivals(arrivals)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/_stats":
            out = json.dumps(log)
            log.clear()
            return web.Response(text=out)
        start = arrivals.get(id(request.protocol), time.monotonic())
        await asyncio.sleep(latency)
        body = JPEG + hashlib.sha256(request.path.encode()).digest() * 64
        log.append((request.host.rsplit(":", 1)[0], start, time.monotonic()))
        return web.Response(body=body, content_type="image/jpeg")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port_out.send(await serve_on_loopback(runner, ips, backlog=1024))
        await asyncio.sleep(lifetime)

    asyncio.run(main())


def server_stats(ip: str, port: int, throttle: float) -> tuple[int, float, float, float]:
    """(most requests in flight on one host, smallest and mean start gap on the busiest
    host / T, seconds from the first request's start to the last one's end)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"http://{ip}:{port}/_stats", timeout=30
    ) as resp:
        log = json.loads(resp.read())
    per_host: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for host, start, end in log:
        per_host[host].append((start, end))
    peak, gap = 0, math.inf
    busiest = max(per_host.values(), key=len, default=[])
    busiest.sort()
    mean = (busiest[-1][0] - busiest[0][0]) / (len(busiest) - 1) if len(busiest) > 1 else 0.0
    span = max((e for _, _, e in log), default=0.0) - min((s for _, s, _ in log), default=0.0)
    for hits in per_host.values():
        hits.sort()
        gap = min([gap, *(b[0] - a[0] for a, b in itertools.pairwise(hits))])
        events = sorted([(s, 1) for s, _ in hits] + [(e, -1) for _, e in hits])
        level = 0
        for _, d in events:
            level += d
            peak = max(peak, level)
    if not throttle or gap == math.inf:
        return peak, math.nan, math.nan, span
    return peak, gap / throttle, mean / throttle, span


# --- the job ------------------------------------------------------------------------------


def zipf_counts(urls: int, hosts: int, s: float) -> list[int]:
    weights = [1 / (r**s) for r in range(1, hosts + 1)]
    total = sum(weights)
    counts = [max(1, int(urls * w / total)) for w in weights]
    counts[0] += urls - sum(counts)
    return counts


MINET_WRAPPER = """
import socket, sys, time
HOSTS = {hosts!r}
_real = socket.getaddrinfo
def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    ip = HOSTS.get(str(host).lower().rstrip("."))
    if ip is None:
        return _real(host, port, family, type, proto, flags)
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port or 80)))]
socket.getaddrinfo = getaddrinfo
from minet.cli.__main__ import main
sys.argv = ["minet", *{argv!r}]
t0 = time.perf_counter()
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
open({wall_file!r}, "w").write(str(time.perf_counter() - t0))
sys.exit(code)
"""

SHOAL_WRAPPER = """
import sys, time
sys.path.insert(0, {root!r})
from shoal.app import fetch_cmd
import argparse
parser = argparse.ArgumentParser(prog="shoal")
fetch_cmd.add_parser(parser.add_subparsers())
args = parser.parse_args(["fetch", *{argv!r}])
t0 = time.perf_counter()
code = fetch_cmd.run(args)
open({wall_file!r}, "w").write(str(time.perf_counter() - t0))
sys.exit(code)
"""


def run_tool(python: str, wrapper: str, work: Path, timeout: float) -> tuple[float, str]:
    """(wall seconds inside the tool, error text or "")."""
    wall_file = work / "wall.txt"
    wall_file.unlink(missing_ok=True)
    try:
        proc = subprocess.run(
            [python, "-c", wrapper], capture_output=True, text=True, timeout=timeout, cwd=work,
            env={**os.environ, "NO_PROXY": "*", "no_proxy": "*"},
        )
    except subprocess.TimeoutExpired:
        return math.nan, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0 or not wall_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return math.nan, tail[0][:120]
    return float(wall_file.read_text()), ""


def report_failures(report: Path, error_column: str) -> int:
    with open(report, newline="", encoding="utf-8") as fh:
        return sum(1 for row in csv.DictReader(fh) if row.get(error_column))


def minet_python(venv: Path | None, keep: Path) -> str | None:
    """A python with minet importable, installing it into a fresh venv if needed."""
    if venv is not None and (venv / "bin" / "python").exists():
        py = str(venv / "bin" / "python")
        if subprocess.run([py, "-c", "import minet"], capture_output=True).returncode == 0:
            return py
    target = venv or keep / "minet-venv"
    console.print(f"installing minet into its own venv at {target} ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=120,
                       capture_output=True)
        py = str(target / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "minet"], check=True, timeout=600,
                       capture_output=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        console.print(f"[yellow]minet could not be installed ({exc}); continuing without it")
        return None
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--urls", type=int, default=3000)
    ap.add_argument("--hosts", type=int, default=30, help="at most 250")
    ap.add_argument("--zipf", type=float, default=1.0, help="skew exponent")
    ap.add_argument("--latency", type=float, default=0.25, help="server latency L, seconds")
    ap.add_argument("--settings", default="1:0.2,2:0.1,4:0.1",
                    help="comma-separated P:T pairs")
    ap.add_argument("--no-minet", action="store_true")
    ap.add_argument("--minet-venv", type=Path, help="reuse (or create) minet's venv here")
    ap.add_argument("--max-seconds", type=float, default=900, help="bound on the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    deadline = time.monotonic() + args.max_seconds
    if not 1 <= args.hosts <= 250:
        ap.error("--hosts must be between 1 and 250")
    settings = [(int(p), float(t)) for p, t in (s.split(":") for s in args.settings.split(","))]

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-fetch-"))
    ips = [f"127.0.0.{i + 2}" for i in range(args.hosts)]
    names = {f"shoal-bench-{i:02d}.com": ip for i, ip in enumerate(ips)}
    counts = zipf_counts(args.urls, args.hosts, args.zipf)
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve, args=(ips, args.latency, send, args.max_seconds + 60),
                         daemon=True)
    server.start()
    try:
        if not recv.poll(30):
            raise SystemExit("the media server did not start")
        port = recv.recv()
        source = work / "urls.csv"
        with open(source, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "media_url"])
            n = 0
            for (name, _), count in zip(names.items(), counts, strict=True):
                for _ in range(count):
                    w.writerow([n, f"http://{name}:{port}/media/{n}.jpg"])
                    n += 1
        console.print(f"{args.urls} URLs over {args.hosts} hosts (largest: {counts[0]}, "
                      f"smallest: {counts[-1]}), latency {args.latency:g} s")
        mpy = None if args.no_minet else minet_python(args.minet_venv, work)
        if mpy is None and not args.no_minet:
            console.print("[yellow]minet is not available: only shoal is measured")

        table = Table(title="fetch: wall time against the politeness bound")
        for col in ("tool", "P", "T", "bound s", "wall s", "wall/bound", "span s",
                    "span/bound", "failed", "peak/host", "min gap/T", "mean gap/T", "note"):
            table.add_column(col, justify="left" if col in ("tool", "note") else "right")
        per_host = dict(zip(names, counts, strict=True))
        resolve = [a for name, ip in names.items() for a in ("--resolve", f"{name}={ip}")]
        for p, t in settings:
            bound = politeness_bound(per_host, p, t, args.latency)
            for tool in ("shoal", "minet"):
                if tool == "minet" and mpy is None:
                    continue
                left = deadline - time.monotonic()
                if left < 5:
                    console.print("[yellow]--max-seconds reached, stopping")
                    break
                out = work / f"{tool}-{p}-{t}"
                report = out / "report.csv"
                out.mkdir()
                common = ["media_url", "-i", str(source), "-O", str(out / "files"), "-o",
                          str(report), "--throttle", str(t), "--domain-parallelism", str(p),
                          "--timeout", "30", "--silent"]
                if tool == "shoal":
                    wrapper = SHOAL_WRAPPER.format(root=str(ROOT), argv=[*common, *resolve],
                                                   wall_file=str(out / "wall.txt"))
                    wall, err = run_tool(sys.executable, wrapper, out, left)
                    error_column = "fetch_error"
                else:
                    threads = str(min(64, args.hosts * p))
                    wrapper = MINET_WRAPPER.format(hosts=names, argv=["fetch", *common, "-t",
                                                   threads], wall_file=str(out / "wall.txt"))
                    wall, err = run_tool(mpy or "", wrapper, out, left)
                    error_column = "fetch_error"
                peak, gap, mean, span = server_stats(ips[0], port, t)
                failed = report_failures(report, error_column) if report.exists() else -1
                ok = bound and not math.isnan(wall)
                table.add_row(
                    tool, str(p), f"{t:g}", f"{bound:.2f}", f"{wall:.2f}",
                    f"{wall / bound:.3f}" if ok else "-", f"{span:.2f}",
                    f"{span / bound:.3f}" if ok else "-", str(failed), str(peak), f"{gap:.3f}",
                    f"{mean:.3f}", err[:60],
                )
        Console(width=200).print(table)
    finally:
        server.terminate()
        server.join(10)
        if args.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
