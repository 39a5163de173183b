"""Reports that span hours: the lab's day reports, the known collectors, seal stamps.

Day reports, report rows and the known-collectors list are rewritten under one cross-process
``flock`` (:func:`reports_lock`): seals run in helper processes, dead letters are filed by the
dataflow, a cluster runs several processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import lzma
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from connectors.store.disk import atomic_write, disk_writes
from connectors.store.layout import SEAL_STAMPS, HourPaths
from shoal.merge import HourSummary, collector_counts


def summary_from_meta(
    platform: str, day: str, meta: dict[str, Any], everyone: list[str]
) -> HourSummary:
    per, diff = collector_counts(meta["combos"], everyone)
    return HourSummary(
        platform, meta["start"], day, meta["hour"], per, meta["total"], diff, meta["late"],
        meta.get("users", 0), meta.get("media", 0), True, meta["combos"],
    )

def restate_reports(
    data_dir: Path, platform: str, tz: str, catalog: Any | None,
    everyone: list[str] | None = None,
) -> None:
    everyone = everyone if everyone is not None else known_collectors(data_dir, platform)
    for day_dir in sorted((data_dir / platform).iterdir()):
        metas = sorted(day_dir.glob(".*_meta.json")) if day_dir.is_dir() else []
        if not metas:
            continue
        if catalog is not None:
            for path in metas:
                meta = orjson.loads(path.read_bytes())
                summary = summary_from_meta(platform, day_dir.name, meta, everyone)
                catalog.publish_report(HourPaths(data_dir, platform, meta["start"], tz), summary)
        write_day_report(data_dir, platform, day_dir.name, everyone)

def known_collectors(data_dir: Path, platform: str) -> list[str]:
    path = data_dir / platform / ".collectors.json"
    return sorted(orjson.loads(path.read_bytes())) if path.exists() else []

def remember_collectors(data_dir: Path, platform: str, collectors: set[str]) -> bool:
    """Every collector ever seen gets a column in every day report: a zero shows a gap."""
    known = set(known_collectors(data_dir, platform))
    if known.issuperset(collectors):
        return False
    path = data_dir / platform / ".collectors.json"
    atomic_write(path, orjson.dumps(sorted(known | collectors)))
    return True

def write_day_report(
    data_dir: Path, platform: str, day: str, collectors: list[str] | None = None
) -> Path:
    """The lab's day report: one tab-separated row per sealed hour of the day."""
    folder = data_dir / platform / day
    metas = []
    for meta in sorted(folder.glob(f".{day}_*_meta.json")):
        metas.append(orjson.loads(meta.read_bytes()))
    metas.sort(key=lambda m: m["start"])
    if collectors is None:
        collectors = known_collectors(data_dir, platform)
    lines = ["\t".join(["hour", *collectors, "total", "diff", "diff %", "late"])]
    for m in metas:
        total = m["total"]
        per, diff = collector_counts(m["combos"], collectors)
        pct = f"{100.0 * diff / total:.2f}" if total else "0.00"
        cells = [m["hour"], *(str(per.get(c, 0)) for c in collectors)]
        cells += [str(total), str(diff), pct, str(m["late"])]
        lines.append("\t".join(cells))
    dead = count_deadletters(data_dir, day)
    lines.append(f"# dead letters {day} (inputs that became no post, all platforms): {dead}")
    path = folder / f"{day}_report.txt"
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path

def count_deadletters(data_dir: Path, day: str) -> int:
    """Dead letters filed under ``day`` (``DIR/_deadletter/YYYY-mm-dd/*.jsonl.xz``)."""
    total = 0
    for path in sorted((data_dir / "_deadletter" / day).glob("*_deadletter.jsonl.xz")):
        with lzma.open(path, "rb") as fh:
            total += sum(1 for line in fh if line.strip())
    return total

@contextlib.contextmanager
def reports_lock(data_dir: Path, name: str = "reports") -> Iterator[None]:
    """Held while day reports, report Parquet files and the known collectors are rewritten.

    An ``flock``: it spans processes (seals run in helper processes, dead letters are filed
    by the dataflow, a cluster runs several dataflow processes) and the kernel drops it when
    its holder dies, so a crash never leaves a stale lock behind. ``name`` picks another
    lock for other shared files (``deadletters``); never take ``deadletters`` inside
    ``reports``.
    """
    path = data_dir / "_work" / f"{name}.lock"
    with disk_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock

def stamp_seal(data_dir: Path, platform: str, day: str) -> None:
    """Tell every process sharing DIR (a cluster's) that sealing is alive, and the newest day
    sealed for ``platform``: one file per platform, its time the last seal, its text the day.

    Only the sealing worker writes these; another process's alerts read them
    (:func:`sealed_days_on_disk`) to know sealing is alive and when a day is complete.
    """
    path = data_dir / SEAL_STAMPS / platform
    with contextlib.suppress(OSError):  # a liveness hint: never worth failing a seal for
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            newest = max(day, path.read_text().strip())
        except OSError:
            newest = day
        tmp = path.with_name(f".{platform}.tmp")
        tmp.write_text(newest)
        os.replace(tmp, path)

def sealed_days_on_disk(data_dir: Path) -> dict[str, tuple[str, float]]:
    """Per platform: the newest day sealed and when the last seal happened."""
    out: dict[str, tuple[str, float]] = {}
    folder = data_dir / SEAL_STAMPS
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                out[path.name] = (path.read_text().strip(), path.stat().st_mtime)
    return out

def last_seal_on_disk(data_dir: Path) -> float | None:
    return max((when for _day, when in sealed_days_on_disk(data_dir).values()), default=None)

def refresh_day_reports(data_dir: Path, day: str) -> None:
    """Rewrite the reports of ``day`` that exist, e.g. after new dead letters were filed."""
    with reports_lock(data_dir):
        _refresh_day_reports(data_dir, day)

def _refresh_day_reports(data_dir: Path, day: str) -> None:
    for platform_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if platform_dir.name.startswith((".", "_")) or platform_dir.name == "media":
            continue
        if (platform_dir / day / f"{day}_report.txt").exists():
            write_day_report(data_dir, platform_dir.name, day)
