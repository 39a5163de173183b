"""Restart time after 1 h, 10 h and 100 h of data: it must not grow with the data.

    .venv/bin/python benchmarks/recovery.py [--rate 50] [--scale 0.02]

For each volume, generated sampled-stream traffic (``shoal.demo``; ``rate`` posts/s of
stream time, times ``scale`` to fit a 2-core machine: at the real 50 posts/s, 100 h is 18 M
posts) is published to the embedded broker and processed once to completion by
``shoal process``; then the processor is started again on the same data dir with nothing new
to read, and the wall time of that restart (start, restore state, find nothing, exit; the
idle wait is subtracted) is what is reported, with the size of the recovery state. What a
restart restores is offsets, per-partition watermarks and the open hours found on disk, none
of which grows with the posts ever seen.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.broker import EmbeddedBroker  # noqa: E402
from connectors.files import collect_files  # noqa: E402
from connectors.kafka_io import Publisher, ensure_topics  # noqa: E402
from shoal.demo import DemoSpec, write_demo_files  # noqa: E402

IDLE = 1.0


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def process(brokers: str, data: Path) -> float:
    cmd = [sys.executable, "-m", "shoal", "process", "--no-media", "--brokers", brokers,
           "--data-dir", str(data), "--idle-exit", str(IDLE), "--epoch-seconds", "2"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0 - IDLE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="posts per second of stream time")
    ap.add_argument("--scale", type=float, default=0.02, help="fraction of the real volume")
    ap.add_argument("--hours", default="1,10,100")
    args = ap.parse_args()
    console = Console()
    table = Table("stream hours", "posts", "first run s", "restart s", "recovery state KiB")
    for hours in (int(h) for h in args.hours.split(",")):
        posts = max(100, int(args.rate * 3600 * hours * args.scale))
        tmp = Path(tempfile.mkdtemp(prefix="shoal-recovery-"))
        try:
            files = write_demo_files(tmp / "demo", DemoSpec(posts=posts, hours=hours, seed=1))
            with EmbeddedBroker() as broker:
                ensure_topics(broker.bootstrap, 4)
                for name, path in files.items():
                    pub = Publisher(broker.bootstrap, name)
                    collect_files([path], pub)
                    pub.close()
                first = process(broker.bootstrap, tmp / "data")
                restart = min(process(broker.bootstrap, tmp / "data") for _ in range(2))
                state = dir_size(tmp / "data" / "_recovery") // 1024
            table.add_row(str(hours), f"{posts:,}", f"{first:.1f}", f"{restart:.2f}", str(state))
            console.print(f"{hours} h done")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print(table)
    console.print(f"scale {args.scale} of {args.rate:g} posts/s; restart = process start to exit "
                  f"with nothing new, minus the {IDLE:g} s idle wait")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
