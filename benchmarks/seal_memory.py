"""What sealing one hour costs in memory: the helper's peak per post, against the hour's input.

    .venv/bin/python benchmarks/seal_memory.py                  # hours of 20,000 and 60,000 posts
    .venv/bin/python benchmarks/seal_memory.py --posts 180000   # an hour of the 1% sample

A seal reads its hour whole (the merge is a union by post id over every chunk and the sealed
files), so a sealing helper's memory follows the size of the hour, not the length of the
stream. For each ``--posts``, this writes one hour of generated v2 posts (``shoal.demo``) as
the stage writes its chunks, then seals it with ``seal_hour`` in a fresh interpreter, as a
helper does, and prints that process's peak RSS (``VmHWM``) above its size before the seal,
per post and as a ratio to the chunk bytes it read (the peer in the same run: what the hour
takes on disk before sealing), with the seal's CPU per post. Figures are printed, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.store.chunks import write_chunk  # noqa: E402
from shoal import chunks  # noqa: E402
from shoal.demo import DemoSpec, demo_pages  # noqa: E402
from shoal.formats.twitter_v2 import read  # noqa: E402
from shoal.hours import hour_start, zone  # noqa: E402
from shoal.model import RawPost  # noqa: E402
from shoal.normalise import normalise  # noqa: E402

RETRIEVED = "2021-05-11T20:00:00+00:00"
CHUNK_POSTS = 5000  # as the stage flushes them on a busy stream

# Run in a fresh interpreter: the peak (VmHWM) is then the seal's own.
SEAL = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from connectors.store.catalog import Catalog
from connectors.store.seal import seal_hour
def hwm():
    with open('/proc/self/status') as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith('VmHWM')) * 1024
data = Path(sys.argv[2])
catalog = Catalog(data)
catalog.ensure()
before = hwm()
t0 = time.process_time()
summary = seal_hour(data, 'twitter', int(sys.argv[3]), 'UTC', catalog)
cpu = time.process_time() - t0
print(json.dumps({'before': before, 'peak': hwm(), 'cpu': cpu, 'posts': summary.total}))
"""


def write_hour(data: Path, posts: int) -> tuple[int, int]:
    """The busiest hour of ``posts`` generated posts, as chunks; its start and bytes."""
    pages = data.parent / "pages.jsonl"
    with open(pages, "wb") as fh:
        for page in demo_pages(DemoSpec(posts=posts, hours=1, authors=5000)):
            fh.write(orjson.dumps(page) + b"\n")
    by_hour: dict[int, list[bytes]] = {}
    for post in read(pages):
        if not isinstance(post, RawPost):
            continue
        raw = post.payload if isinstance(post.payload, bytes) else orjson.dumps(post.payload)
        norm = normalise("twitter-v2", orjson.loads(raw), RETRIEVED)
        body = chunks.post_body(norm.post, user=norm.user, media=[m.row() for m in norm.media],
                                fmt="twitter-v2", retrieved=RETRIEVED)
        start = hour_start(norm.created_at, zone("UTC"))
        by_hour.setdefault(start, []).append(chunks.line_of_body("demo", body, raw=raw))
    pages.unlink()
    start, lines = max(by_hour.items(), key=lambda kv: len(kv[1]))
    for i in range(0, len(lines), CHUNK_POSTS):
        write_chunk(data, "twitter", start, "p0", lines[i:i + CHUNK_POSTS])
    return start, sum(map(len, lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, nargs="+", default=[20000, 60000],
                    help="posts generated per run (most fall in one hour)")
    args = ap.parse_args()
    console = Console()
    table = Table(title="sealing one hour in a fresh helper")
    for col in ("posts in the hour", "chunk MiB", "peak RSS MiB (above start)", "bytes/post",
                "peak / chunk bytes", "CPU µs/post"):
        table.add_column(col, justify="right")
    for posts in args.posts:
        tmp = Path(tempfile.mkdtemp(prefix="shoal-seal-mem-"))
        try:
            data = tmp / "data"
            with console.status(f"writing {posts:,} posts as chunks"):
                start, size = write_hour(data, posts)
            with console.status("sealing"):
                out = subprocess.run([sys.executable, "-c", SEAL, str(ROOT), str(data), str(start)],
                                     check=True, capture_output=True, text=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            grown = got["peak"] - got["before"]
            n = got["posts"]
            table.add_row(f"{n:,}", f"{size / 2**20:.0f}", f"{grown / 2**20:.0f}",
                          f"{grown / n:,.0f}", f"{grown / size:.2f}",
                          f"{got['cpu'] / n * 1e6:.1f}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
