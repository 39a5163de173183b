"""Run ``python -m shoal ...`` under tracemalloc, writing where its Python memory lies.

    .venv/bin/python benchmarks/traced.py OUT.txt process --brokers ... --data-dir ...

Every ``SHOAL_TRACE_SECONDS`` (default 30) the largest allocation sites (grouped by their
last ``SHOAL_TRACE_FRAMES`` frames, default 6) are appended to ``OUT.txt`` with the total
traced size. Tracing slows the process two to three times: it is for finding where memory
goes (``benchmarks/memory.py --tracemalloc``), not for timing.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dump(out: Path, top: int = 12) -> None:
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(s.size for s in snap.statistics("filename"))
    with open(out, "a") as fh:
        fh.write(f"--- {time.strftime('%H:%M:%S')} traced {total / 2**20:.1f} MiB\n")
        for stat in snap.statistics("traceback")[:top]:
            fh.write(f"{stat.size / 2**20:8.1f} MiB {stat.count:>9,} blocks\n")
            for line in stat.traceback.format():
                fh.write(f"      {line}\n")


def main() -> None:
    out = Path(sys.argv[1])
    every = float(os.environ.get("SHOAL_TRACE_SECONDS", "30"))
    tracemalloc.start(int(os.environ.get("SHOAL_TRACE_FRAMES", "6")))

    def loop() -> None:
        while True:
            time.sleep(every)
            dump(out)

    threading.Thread(target=loop, daemon=True, name="tracemalloc-dump").start()
    sys.path.insert(0, str(ROOT))
    sys.argv = ["shoal", *sys.argv[2:]]
    runpy.run_module("shoal", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
