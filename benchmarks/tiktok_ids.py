"""Sealing a burst of TikTok hours: the per-query ID files rewritten once, or after every hour.

    .venv/bin/python benchmarks/tiktok_ids.py                 # 300 hours
    .venv/bin/python benchmarks/tiktok_ids.py --hours 1000

The ID files (``DIR/ids/tiktok/<query>/{posts,videos}.txt``) are derived from every TikTok
hour sealed so far, so each rewrite reads all of their Parquet. A replay of a TikTok topic
seals hundreds of hours at once. This seals ``--hours`` hours of one post each (Zeeschuimer
items from ``../shared/fixtures``, re-dated an hour apart) two ways, each in a fresh data
dir, and prints the wall time of each:

1. the dataflow's sealer (``flows.seal.SealLogic`` with its helper processes), which rewrites
   the files once none of its TikTok seals is under way;
2. the peer, the same hours sealed one after the other by ``seal_hour`` with the rewrite
   inside every seal (what the sealer did before), i.e. n rewrites reading 1..n hours.

Both end with the same files (checked). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.store.catalog import Catalog  # noqa: E402
from connectors.store.chunks import write_chunk  # noqa: E402
from connectors.store.seal import seal_hour  # noqa: E402
from flows.config import FlowConfig  # noqa: E402
from flows.seal import SealLogic  # noqa: E402
from flows.stage import ChunkFact  # noqa: E402
from shoal import chunks  # noqa: E402
from shoal.hours import HOUR, hour_start, zone  # noqa: E402
from shoal.normalise import normalise  # noqa: E402
from shoal.options import FlowSettings, MediaSettings  # noqa: E402

FIXTURE = (ROOT.parent / "shared" / "fixtures" / "tiktok" / "jorisheijkant__zeeschuimer-decoder"
           / "test-files" / "tiktok-test.lines-001-064.ndjson")
RETRIEVED = "2024-12-01T00:00:00+00:00"


def fill(data: Path, templates: list[dict[str, Any]], hours: int) -> list[int]:
    """One chunk per hour, one post each, all found by the query ``london``."""
    starts = []
    for n in range(hours):
        item = copy.deepcopy(templates[n % len(templates)])
        vid = str(7310000000000000000 + n)
        item.update(id=vid, createTime=1733000000 + HOUR * n, query="london", desc="#london",
                    textExtra=[{"hashtagName": "london", "type": 1}])
        item["video"] = {**item["video"], "id": vid}
        norm = normalise("tiktok-item", item, RETRIEVED)
        start = hour_start(norm.created_at, zone("UTC"))
        write_chunk(data, "tiktok", start, "p0", [chunks.post_line(
            "tt", norm.post, user=norm.user, media=[m.row() for m in norm.media],
            raw=orjson.dumps(item), fmt="tiktok-item", retrieved=RETRIEVED)])
        starts.append(start)
    Catalog(data).ensure()
    return starts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=int, default=300)
    ap.add_argument("--seal-processes", type=int, default=1,
                    help="the sealer's helpers (1: as many processes as the peer)")
    args = ap.parse_args()
    console = Console()
    if not FIXTURE.exists():
        console.print(f"no fixture at {FIXTURE}: clone with ../shared beside the repo")
        return 2
    templates = [orjson.loads(line)["data"] for line in FIXTURE.read_bytes().splitlines()[:12]]
    tmp = Path(tempfile.mkdtemp(prefix="shoal-tiktok-ids-"))
    try:
        mine, peer = tmp / "sealer", tmp / "peer"
        starts = fill(mine, templates, args.hours)
        fill(peer, templates, args.hours)

        cfg = FlowConfig(data_dir=mine, brokers="unused:9092", partitions=1,
                         flow=FlowSettings(lateness=0.0, seal_processes=args.seal_processes),
                         media=MediaSettings(enabled=False))
        t0 = time.perf_counter()
        seal = SealLogic(cfg, None)
        seal.on_batch([(0, 1, ChunkFact(0, starts[-1] + HOUR,
                                        tuple(("tiktok", h) for h in starts)))])
        seal.on_eof()
        sealer_s = time.perf_counter() - t0

        catalog = Catalog(peer)
        t0 = time.perf_counter()
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("peer: a rewrite in every seal", total=len(starts))
            for start in starts:
                seal_hour(peer, "tiktok", start, "UTC", catalog)
                bar.advance(task)
        peer_s = time.perf_counter() - t0
        catalog.close()

        listed = [(root / "ids" / "tiktok" / "london" / "posts.txt").read_bytes()
                  for root in (mine, peer)]
        console.print(f"{args.hours} TikTok hours, one post each")
        console.print(f"the sealer, one rewrite at the end ({args.seal_processes} helpers): "
                      f"{sealer_s:.1f} s")
        console.print(f"peer, a rewrite in every seal (one process): {peer_s:.1f} s "
                      f"({peer_s / sealer_s:.1f}x)")
        console.print(f"same ID files: {listed[0] == listed[1]}")
        return 0 if listed[0] == listed[1] else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
