"""Disk trouble is loud and safe: one clear line, nothing sealed damaged, a rerun resumes.

The limits are real. Where this machine lets the tests mount (root with CAP_SYS_ADMIN), the
data dir sits on a small tmpfs that is filled with a ballast file (ENOSPC) or remounted
read-only (EROFS); elsewhere RLIMIT_FSIZE makes bigger files fail with EFBIG, and a
write-protected directory gives EACCES (EPERM with the immutable flag, for root).
"""

from __future__ import annotations

import contextlib
import lzma
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from connectors.store.catalog import Catalog
from connectors.store.chunks import write_chunk
from connectors.store.disk import DiskTrouble, disk_trouble_in
from connectors.store.layout import STAGING, HourPaths, chunk_dir
from connectors.store.seal import seal_hour
from shoal.chunks import encode as _line
from shoal.demo import DemoSpec, write_demo_files
from shoal.formats import read_file
from shoal.hours import hour_start
from shoal.model import RawPost
from shoal.normalise import normalise
from tests.pipeline import digests, publish, read_csv_xz, read_xz_lines

ROOT = Path(__file__).resolve().parents[1]
SHOAL = [sys.executable, "-m", "shoal"]
T0 = datetime(2021, 5, 11, 18, 0, tzinfo=UTC)
REFUSED = ("No space left on device", "File too large")


@cache
def can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as where:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where],
                              capture_output=True)
        if done.returncode != 0:
            return False
        subprocess.run(["umount", where], check=True)
    return True


class Squeeze:
    """A directory whose writes can be refused for real, then allowed again."""

    def __init__(self, root: Path, size_mb: int):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.mounted = can_mount()
        self.limit: int | None = None
        if self.mounted:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(root)],
                           check=True)
        self.ballast = root / "ballast"

    def leave(self, free: int) -> None:
        """Only ``free`` more bytes fit (tmpfs), or no file may grow past it (rlimit)."""
        if not self.mounted:
            self.limit = free
            return
        st = os.statvfs(self.root)
        have = self.ballast.stat().st_size if self.ballast.exists() else 0
        want = max(0, have + st.f_bavail * st.f_frsize - free)
        if want < have:
            os.truncate(self.ballast, want)
        elif want > have:
            fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, want)
            finally:
                os.close(fd)

    def relieve(self) -> None:
        self.limit = None
        self.ballast.unlink(missing_ok=True)

    def protect(self, data: Path, on: bool) -> None:
        """Read-only (remount), else write-protected (immutable flag as root, else chmod)."""
        if self.mounted:
            mode = "remount,ro" if on else "remount,rw"
            subprocess.run(["mount", "-o", mode, str(self.root)], check=True)
            return
        if os.geteuid() == 0:  # root ignores permission bits, not the immutable flag
            subprocess.run(["chattr", "-R", "+i" if on else "-i", str(data)], check=True)
            return
        for path in [data, *data.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555 if on else 0o755)

    def child_options(self) -> dict[str, Any]:
        """How to start a child so that it meets the limits."""
        opts: dict[str, Any] = {}
        if self.limit is not None:
            opts["preexec_fn"] = _rlimit_child(self.limit)
        return opts

    @contextlib.contextmanager
    def in_this_process(self) -> Iterator[None]:
        if self.limit is None:
            yield
            return
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, old[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
            signal.signal(signal.SIGXFSZ, handler)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


def _rlimit_child(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killing signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.fixture
def squeeze(tmp_path: Path) -> Iterator[Squeeze]:
    sq = Squeeze(tmp_path / "fs", 40)
    try:
        yield sq
    finally:
        sq.close()


def assert_sealed_hours_sound(data: Path) -> int:
    """Every sealed hour decompresses, and its IDs file matches its tweets file."""
    hours = 0
    for ids_file in sorted((data / "twitter").glob("*/*_IDs.txt.xz")):
        stem = ids_file.name.removesuffix("_IDs.txt.xz")
        ids = read_xz_lines(ids_file)
        rows = read_csv_xz(ids_file.with_name(f"{stem}_tweets.csv.xz"))
        assert [r["id"] for r in rows] == ids, stem
        for kind in ("users", "media"):
            lzma.decompress(ids_file.with_name(f"{stem}_{kind}.csv.xz").read_bytes())
        hours += 1
    stray = [p for p in data.rglob("*") if p.name.endswith(".tmp") and not p.name.startswith(".")]
    assert not stray, stray
    return hours


def one_error_line(stderr: str) -> str:
    """The run's one complaint; JSON log lines (the service's normal output) aside."""
    assert "Traceback" not in stderr
    assert "panicked" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("shoal: error: cannot write to "), lines[0]
    assert "sealed hours are intact" in lines[0]
    return lines[0]


def test_process_stops_on_a_full_disk_and_resumes_once_freed(
    tmp_path: Path, squeeze: Squeeze
) -> None:
    data = squeeze.root / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        cmd = [*SHOAL, "process", "--brokers", broker.bootstrap, "--idle-exit", "1",
               "--epoch-seconds", "0.5", "--lateness", "60", "--no-media", "--data-dir"]

        def shoal(where: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cmd, str(where)], capture_output=True, text=True, env=env,
                                  timeout=180, cwd=tmp_path, **squeeze.child_options())

        first = write_demo_files(tmp_path / "d1", DemoSpec(posts=6000, hours=6, seed=3))
        publish(broker.bootstrap, list(first.items()))
        assert shoal(data).returncode == 0
        before = digests(data)
        untouched = {k: v for k, v in before.items() if "2021-05-11_2" not in k
                     and "2021-05-12" not in k}  # hours 18-19 UTC: phase two does not reach them
        assert len(untouched) >= 8

        # More posts: late ones for sealed hours, and new hours; then the disk fills up.
        later = DemoSpec(posts=6000, hours=6, seed=4, start=T0 + timedelta(hours=3))
        publish(broker.bootstrap, list(write_demo_files(tmp_path / "d2", later).items()))
        failures = 0
        # Room for nothing, then room for some of the work (per file, with RLIMIT_FSIZE).
        levels = (256 << 10, 3 << 20) if squeeze.mounted else (8 << 10, 64 << 10)
        for free in levels:
            squeeze.leave(free)
            run = shoal(data)
            assert run.returncode != 0, run.stderr[-2000:]
            line = one_error_line(run.stderr)
            assert any(why in line for why in REFUSED), line
            assert str(data) in line
            assert assert_sealed_hours_sound(data) >= 6
            assert {k: v for k, v in digests(data).items() if k in untouched} == untouched
            failures += 1
        assert failures == 2

        # Not writable at all: the same single line, with the other remedy.
        squeeze.relieve()
        squeeze.protect(data, True)
        try:
            run = shoal(data)
        finally:
            squeeze.protect(data, False)
        assert run.returncode != 0
        line = one_error_line(run.stderr)
        assert "make it writable" in line, line

        # Space again: the run resumes and ends where a run that never failed ends.
        done = shoal(data)
        assert done.returncode == 0, done.stderr[-2000:]
        assert subprocess.run([*cmd, str(tmp_path / "clean")], capture_output=True,
                              env=env, timeout=180, cwd=tmp_path).returncode == 0
    clean = digests(tmp_path / "clean")
    assert len(clean) > 60
    assert digests(data) == clean
    assert assert_sealed_hours_sound(data) == 9
    assert not list((data / "_work" / "chunks").rglob("*.jsonl"))


def _chunk_lines(posts: list[RawPost], collector: str) -> dict[int, list[bytes]]:
    """Chunk lines per hour, the way the stage step writes them."""
    out: dict[int, list[bytes]] = {}
    for post in posts:
        norm = normalise(post.format, post.payload, "2021-05-11T23:00:00+00:00")
        lines = out.setdefault(hour_start(norm.created_at), [])
        lines.append(_line({"k": "p", "c": collector, "r": norm.post}))
        if norm.user:
            lines.append(_line({"k": "u", "r": norm.user}))
        lines += [_line({"k": "m", "r": m.row()}) for m in norm.media]
    return out


def test_refused_chunk_and_seal_writes_leave_no_trace(tmp_path: Path, squeeze: Squeeze) -> None:
    data = squeeze.root / "data"
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=3000, hours=1, seed=8))
    a = _chunk_lines([r for r in read_file(files["demo-a"]) if isinstance(r, RawPost)], "demo-a")
    b = _chunk_lines([r for r in read_file(files["demo-b"]) if isinstance(r, RawPost)], "demo-b")
    (hour,) = a
    catalog = Catalog(data)
    catalog.ensure()
    write_chunk(data, "twitter", hour, "p0", a[hour])
    assert seal_hour(data, "twitter", hour, "UTC", catalog) is not None
    sealed = digests(data)
    paths = HourPaths(data, "twitter", hour, "UTC")
    assert paths.file("IDs").exists()

    # A chunk that does not fit is not there at all, under any name.
    squeeze.leave(16 * 1024)
    with squeeze.in_this_process(), pytest.raises(DiskTrouble) as info:
        write_chunk(data, "twitter", hour, "p1", b[hour])
    assert "\n" not in str(info.value) and any(why in str(info.value) for why in REFUSED)
    assert [p.name for p in chunk_dir(data, "twitter", hour).iterdir()] == []
    assert disk_trouble_in(RuntimeError("wrapped")) is None
    wrapped = RuntimeError("bytewax")
    wrapped.__cause__ = info.value
    assert disk_trouble_in(wrapped) is info.value

    # The second collector's copy fits; re-sealing the hour with it does not.
    squeeze.relieve()
    write_chunk(data, "twitter", hour, "p1", b[hour])
    squeeze.leave(16 * 1024)
    # With the catalog, its Parquet copy is refused first; without, the staged xz files are.
    for with_catalog, where in ((catalog, "_parquet"), (None, STAGING)):
        with squeeze.in_this_process(), pytest.raises(DiskTrouble) as info:
            seal_hour(data, "twitter", hour, "UTC", with_catalog)
        assert where in str(info.value), str(info.value)
        assert digests(data) == sealed, "a failed seal must leave the sealed hour as it was"
        staged = [p for p in (data / STAGING).rglob("*") if p.is_file()]
        assert not staged, "nothing half-staged may stay behind"
        assert [p for p in data.rglob("*") if p.name.endswith((".tmp", ".part"))] == []
        assert len(list(chunk_dir(data, "twitter", hour).glob("*.jsonl"))) == 1

    # With room again the same call completes, with both collectors' posts.
    squeeze.relieve()
    catalog = Catalog(data)
    summary = seal_hour(data, "twitter", hour, "UTC", catalog)
    assert summary is not None and summary.resealed
    rows = read_csv_xz(paths.posts)
    assert {r["collectors"] for r in rows} >= {"demo-a|demo-b"}
    assert assert_sealed_hours_sound(data) == 1
