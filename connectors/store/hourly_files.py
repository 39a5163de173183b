"""Where the dataflow's rows go on disk: open-hour chunks, then sealed hourly files.

Rows are never kept in Bytewax state. The stage step appends them to immutable *chunk* files
(written under a temporary name, then renamed) below ``_work/chunks/<platform>/<hour>/``;
sealing an hour merges every chunk of the hour with what the hour's sealed files already
hold and republishes the hour's files atomically. The merge is a union keyed by post id, so
sealing is idempotent: replaying messages after a crash, a second collector delivering the
same post, or a straggler for an hour sealed long ago all give the same files as a clean run.
That is the whole exactly-once story of the outputs, and why the recovery snapshot only has to
carry Kafka offsets and a few per-partition facts.

A write the disk refuses (full, over quota, read-only, not ours) raises :class:`DiskTrouble`
with one readable line, after removing whatever it had half-written: a chunk is there whole or
not at all, and a failed seal leaves the hour's previous files untouched. The run stops; the
next one resumes from the last snapshot and redoes the lost work, as after a crash.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import lzma
import operator
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from shoal import faults
from shoal.exceptions import chain
from shoal.hours import hour_name
from shoal.model import MEDIA_COLUMNS, POST_COLUMNS, USER_COLUMNS

CHUNKS = "_work/chunks"
PARQUET = "_parquet"
XZ_PRESET = 1
FETCH_COLUMNS: tuple[str, ...] = (
    "final_url",
    "http_status",
    "error",
    "attempts",
    "bytes",
    "sha256",
    "mimetype",
    "path",
    "fetched_at",
)
MEDIA_FILE_COLUMNS: tuple[str, ...] = MEDIA_COLUMNS + FETCH_COLUMNS

csv.field_size_limit(1 << 30)


def posts_word(platform: str) -> str:
    return "tweets" if platform == "twitter" else "posts"


# --------------------------------------------------------------------------- disk trouble

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_DENIED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
DISK_ERRNOS = _FULL | _DENIED | {errno.EIO}
# How the same troubles read when they come from DuckDB or SQLite (Bytewax's recovery store),
# which report them as text rather than as an OSError.
_DISK_TEXTS = (
    ("No space left on device", errno.ENOSPC),
    ("database or disk is full", errno.ENOSPC),
    ("Disk quota exceeded", errno.EDQUOT),
    ("File too large", errno.EFBIG),
    ("Read-only file system", errno.EROFS),
    ("attempt to write a readonly database", errno.EROFS),
    ("Permission denied", errno.EACCES),
    ("Operation not permitted", errno.EPERM),
)


class DiskTrouble(OSError):
    """The data dir refused a write; ``str()`` is the one line a user needs to see.

    An ``OSError`` (same errno) so that callers catching those keep working.
    """

    def __init__(self, path: str | os.PathLike[str], err: int, reason: str):
        hint = "free space" if err in _FULL else "make it writable"
        line = f"cannot write to {path}: {reason} — {hint} and run again; sealed hours are intact"
        super().__init__(err, line, str(path))
        self.line = line
        self._args = (str(path), err, reason)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses from the sealing child intact
        return (DiskTrouble, self._args)

    def __str__(self) -> str:
        return self.line


def _as_disk_trouble(exc: BaseException, path: str | os.PathLike[str] | None) -> DiskTrouble | None:
    if isinstance(exc, DiskTrouble):
        return exc
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        where = exc.filename or path or "the data dir"
        return DiskTrouble(where, exc.errno, exc.strerror or os.strerror(exc.errno))
    text = str(exc)
    for needle, err in _DISK_TEXTS:
        if needle in text:
            return DiskTrouble(_path_in(text) or path or "the data dir", err, os.strerror(err))
    return None


def _path_in(text: str) -> str | None:
    """A quoted absolute path in an error message (DuckDB's say \"/x/y\": ...)."""
    for quote in ('"', "'"):
        parts = text.split(quote)
        for part in parts[1::2]:
            if part.startswith("/"):
                return part
    return None


@contextlib.contextmanager
def disk_writes(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a write refused by the disk (OSError, DuckDB or SQLite) into :class:`DiskTrouble`."""
    try:
        yield
    except DiskTrouble:
        raise
    except Exception as exc:
        trouble = _as_disk_trouble(exc, path)
        if trouble is None:
            raise
        raise trouble from exc


def disk_trouble_in(
    exc: BaseException | None, data_dir: str | os.PathLike[str] | None = None
) -> DiskTrouble | None:
    """The disk trouble behind an exception, however deeply Bytewax wrapped it, else None.

    Bytewax re-raises an operator's exception as ``BytewaxRuntimeError`` chained (through
    ``__cause__``, one level per layer) to the original; a trouble met outside the dataflow
    (creating the data dir, the catalog, the recovery store) or in code that does not use
    :func:`disk_writes` may be a bare ``OSError`` or a DuckDB/SQLite error. Each of those is
    recognised; ``data_dir`` names the place when the error itself does not.
    """
    causes = chain(exc)
    for candidate in causes:  # an explicit DiskTrouble anywhere wins: it names the path
        if isinstance(candidate, DiskTrouble):
            return candidate
    for candidate in causes:
        trouble = _as_disk_trouble(candidate, data_dir)
        if trouble is not None:
            return trouble
    return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all; a refused write leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with disk_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- chunks


def chunk_dir(data_dir: Path, platform: str, start: int) -> Path:
    return data_dir / CHUNKS / platform / str(start)


def write_chunk(data_dir: Path, platform: str, start: int, prefix: str, lines: list[bytes]) -> Path:
    """Publish one immutable chunk of the open hour; never appended to afterwards."""
    path = chunk_dir(data_dir, platform, start) / f"{prefix}-{uuid.uuid4().hex[:12]}.jsonl"
    data = b"".join(lines)
    try:
        atomic_write(path, data)  # which creates the hour's folder
    except FileNotFoundError:
        # A seal (another process) removed the emptied folder between atomic_write's mkdir
        # and its open: once more makes it again.
        atomic_write(path, data)
    return path


def pending_hours(data_dir: Path) -> set[tuple[str, int]]:
    """Hours that have chunks on disk: what a restarted sealer must still merge."""
    root = data_dir / CHUNKS
    found: set[tuple[str, int]] = set()
    if not root.is_dir():
        return found
    for platform_dir in root.iterdir():
        for hour_dir in platform_dir.iterdir():
            if hour_dir.name.isdigit() and any(hour_dir.glob("*.jsonl")):
                found.add((platform_dir.name, int(hour_dir.name)))
    return found


# --------------------------------------------------------------------------- sealing


@dataclass
class HourState:
    """Everything an hour holds, as plain strings, keyed for an order-free union."""

    posts: dict[str, dict[str, str]] = field(default_factory=dict)
    collectors: dict[str, set[str]] = field(default_factory=dict)
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    media: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    # Posts no copy of which arrived within the allowed lateness (see StageLogic).
    late_ids: set[str] = field(default_factory=set)
    on_time: set[str] = field(default_factory=set)
    late_copies: set[str] = field(default_factory=set)

    @property
    def late(self) -> int:
        return len(self.late_ids)

    def settle_late(self) -> None:
        """A post is late if every copy of it was; an on-time copy anywhere clears it."""
        self.late_ids |= self.late_copies - self.on_time
        self.late_ids -= self.on_time
        self.late_copies.clear()
        self.on_time.clear()

    def add_post(self, row: dict[str, str], collectors: Iterable[str]) -> bool:
        """Merge one copy of a post; True if the id is new to the hour."""
        pid = row["id"]
        known = self.posts.get(pid)
        if known is None:
            self.posts[pid] = row
            self.collectors[pid] = set(collectors)
            return True
        # Copies from different collectors differ in retrieval time and counters; keep the
        # earliest retrieval so the choice does not depend on arrival order.
        if row is not known and row != known and _earlier(row, known):
            self.posts[pid] = row
        self.collectors[pid].update(collectors)
        return False

    def add_user(self, row: dict[str, str]) -> None:
        uid = row["id"]
        known = self.users.get(uid)
        # Newest stats win; ties broken by content so the result is order-free.
        if known is None or (row != known and _earlier(known, row)):
            self.users[uid] = row

    def add_media(self, row: dict[str, str]) -> None:
        key = (row["post_id"], int(row["position"] or 0))
        known = self.media.get(key)
        if known is None or _media_rank(row) > _media_rank(known):
            self.media[key] = row


def _dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def _earlier(a: dict[str, str], b: dict[str, str]) -> bool:
    """Does ``a`` sort before ``b`` by retrieval time, then content (serialised only on ties)?"""
    ta, tb = a.get("retrieved_at", ""), b.get("retrieved_at", "")
    if ta != tb:
        return ta < tb
    return _dumps(a) < _dumps(b)


def _media_rank(row: dict[str, str]) -> tuple[int, str, bytes]:
    # A fetched result beats an unfetched row; success beats failure; then content order.
    fetched = 1 if row.get("fetched_at") else 0
    ok = 1 if row.get("sha256") else 0
    return (fetched + ok, row.get("fetched_at", ""), _dumps(row))


def sort_ids(ids: Iterable[str]) -> list[str]:
    """Numeric ids numerically (tweet ids), any others after them, lexicographically."""
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


def read_csv_xz(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        return
    with lzma.open(path, "rt", encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


@dataclass(frozen=True)
class HourPaths:
    data_dir: Path
    platform: str
    start: int
    tz: str

    @property
    def name(self) -> Any:
        return hour_name(self.start, self.tz)

    @property
    def folder(self) -> Path:
        return self.data_dir / self.platform / self.name.day

    def file(self, kind: str) -> Path:
        ext = "txt" if kind == "IDs" else "csv"
        return self.folder / f"{self.name.stem}_{kind}.{ext}.xz"

    @property
    def posts(self) -> Path:
        return self.file(posts_word(self.platform))

    def parquet(self, table: str) -> Path:
        n = self.name
        return (
            self.data_dir
            / PARQUET
            / table
            / f"platform={self.platform}"
            / f"day={n.day}"
            / f"hour={n.label}"
            / "data.parquet"
        )


def load_sealed(paths: HourPaths) -> HourState:
    state = HourState()
    for row in read_csv_xz(paths.posts):
        collectors = [c for c in row.pop("collectors", "").split("|") if c]
        state.add_post(row, collectors)
    for row in read_csv_xz(paths.file("users")):
        state.add_user(row)
    for row in read_csv_xz(paths.file("media")):
        state.add_media(row)
    meta = paths.folder / f".{paths.name.stem}_meta.json"
    if meta.exists():
        state.late_ids = set(orjson.loads(meta.read_bytes()).get("late_ids", []))
    return state


def apply_chunk(state: HourState, path: Path, seen_by: list[tuple[str, str]]) -> None:
    """Merge one chunk; "seen by" marks are collected, to be applied once all rows are in."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = orjson.loads(line)
            kind = rec["k"]
            if kind == "p":
                is_new = state.add_post(rec["r"], (rec["c"],))
                pid = rec["r"]["id"]
                if not rec.get("l"):
                    state.on_time.add(pid)
                elif is_new or pid in state.late_ids:
                    state.late_copies.add(pid)
                # The post's author and media rows travel on the post's line.
                if "u" in rec:
                    state.add_user(rec["u"])
                for row in rec.get("m", ()):
                    state.add_media(row)
            elif kind == "s":
                seen_by.append((rec["id"], rec["c"]))
            elif kind == "u":
                state.add_user(rec["r"])
            elif kind == "m":
                state.add_media(rec["r"])


@dataclass(frozen=True)
class HourSummary:
    platform: str
    start: int
    day: str
    label: str
    collectors: dict[str, int]
    total: int
    diff: int
    late: int
    users: int
    media: int
    resealed: bool
    combos: dict[str, int]


def csv_bytes(columns: tuple[str, ...], rows: Iterable[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    pick = operator.itemgetter(*columns)
    for row in rows:
        try:
            writer.writerow(pick(row))
        except KeyError:  # a row without some column: write it empty
            writer.writerow([row.get(c, "") for c in columns])
    return buf.getvalue().encode("utf-8")


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=XZ_PRESET)


def seal_hour(
    data_dir: Path, platform: str, start: int, tz: str, catalog: Any | None = None
) -> HourSummary | None:
    """Merge the hour's chunks into its sealed files; a no-op if it has no chunks."""
    chunks = sorted(chunk_dir(data_dir, platform, start).glob("*.jsonl"))
    if not chunks:
        return None
    paths = HourPaths(data_dir, platform, start, tz)
    sealed_before = paths.file("IDs").exists()
    state = load_sealed(paths) if sealed_before else HourState()
    seen_by: list[tuple[str, str]] = []
    for chunk in chunks:
        apply_chunk(state, chunk, seen_by)
    state.settle_late()
    for pid, collector in seen_by:
        # The row a mark refers to may sit in any chunk, whatever order they are read in.
        if pid in state.collectors:
            state.collectors[pid].add(collector)

    ids = sort_ids(state.posts)
    post_rows = []
    for pid in ids:
        row = dict(state.posts[pid])
        row["collectors"] = "|".join(sorted(state.collectors[pid]))
        post_rows.append(row)
    user_rows = [state.users[u] for u in sort_ids(state.users)]
    order = {pid: i for i, pid in enumerate(ids)}
    media_rows = sorted(
        state.media.values(),
        key=lambda r: (order.get(r["post_id"], len(order)), r["post_id"], int(r["position"] or 0)),
    )
    posts_csv = csv_bytes(POST_COLUMNS, post_rows)
    users_csv = csv_bytes(USER_COLUMNS, user_rows)
    media_csv = csv_bytes(MEDIA_FILE_COLUMNS, media_rows)

    combos: dict[str, int] = {}
    for pid in ids:
        combo = "|".join(sorted(state.collectors[pid]))
        combos[combo] = combos.get(combo, 0) + 1
    seen = {c for combo in combos for c in combo.split("|") if c}
    name = paths.name
    # Per-collector columns depend on every collector known so far: filled in below.
    facts = HourSummary(
        platform, start, name.day, name.label, {},
        len(ids), 0, state.late, len(user_rows), len(media_rows), sealed_before, combos,
    )

    if catalog is not None:
        with disk_writes(data_dir / PARQUET):
            catalog.publish_hour(paths, posts_csv, users_csv, media_csv)
    publish_together(data_dir, platform, start, {
        paths.file(posts_word(platform)): _xz(posts_csv),
        paths.file("users"): _xz(users_csv),
        paths.file("media"): _xz(media_csv),
        paths.folder / f".{name.stem}_meta.json": orjson.dumps(_meta(facts, state.late_ids)),
        # The IDs file goes last: its presence is what marks the hour as sealed.
        paths.file("IDs"): _xz(("\n".join(ids) + "\n").encode() if ids else b""),
    })
    # Reports span hours that other seals (other processes) may be writing right now: each
    # seal commits its own hour first, then rewrites the shared reports under one lock, so
    # whoever writes last has seen every committed hour.
    with reports_lock(data_dir):
        known = known_collectors(data_dir, platform)
        everyone = sorted(set(known) | seen)
        per_collector, diff = collector_counts(combos, everyone)
        summary = replace(facts, collectors=per_collector, diff=diff)
        if catalog is not None:
            with disk_writes(data_dir / PARQUET):
                catalog.publish_report(paths, summary)
        if not set(known).issuperset(seen):
            # A collector seen for the first time is a new column in every report, so every
            # sealed hour's report row and every day report is redone: the final files then
            # do not depend on when each collector was first seen. The collector is
            # remembered last, so that a seal interrupted before (a crash, a full disk)
            # restates again.
            restate_reports(data_dir, platform, tz, catalog, everyone)
            remember_collectors(data_dir, platform, seen)
        else:
            write_day_report(data_dir, platform, name.day)
    fsync_dir(paths.folder)
    for chunk in chunks:
        chunk.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        chunks[0].parent.rmdir()
    return summary


STAGING = "_work/seal"


def publish_together(data_dir: Path, platform: str, start: int, files: dict[Path, bytes]) -> None:
    """Replace an hour's files as one unit, even across a crash.

    The new files are written to a staging folder first; a COMMIT list written last decides
    the outcome: a crash before it leaves the old files untouched (the staging folder is
    dropped on restart), a crash after it is rolled forward on restart. Readers always see
    one consistent version of the hour, and a re-seal never merges with a half-replaced one
    (which would miscount late posts).
    """
    stage = data_dir / STAGING / platform / str(start)
    try:
        with disk_writes(stage):
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
            moves = []
            for n, (final, data) in enumerate(files.items()):
                staged = stage / f"{n}.part"
                with open(staged, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                moves.append([str(staged), str(final)])
        faults.point("seal")  # everything staged, nothing committed
        atomic_write(stage / "COMMIT", orjson.dumps(moves))
    except DiskTrouble:
        # Not committed: the old files stand. Drop the half-staged copy to give the space back.
        shutil.rmtree(stage, ignore_errors=True)
        raise
    faults.point("seal-commit")  # committed, not yet moved into place
    with disk_writes(stage):
        _roll_forward(stage)


def _roll_forward(stage: Path) -> None:
    for src, dst in orjson.loads((stage / "COMMIT").read_bytes()):
        if os.path.exists(src):
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    for final in {Path(dst).parent for _src, dst in orjson.loads((stage / "COMMIT").read_bytes())}:
        fsync_dir(final)
    shutil.rmtree(stage)


def recover_staged(data_dir: Path) -> None:
    """At start: finish committed seals, drop uncommitted ones."""
    root = data_dir / STAGING
    if not root.is_dir():
        return
    for stage in sorted(root.glob("*/*")):
        if (stage / "COMMIT").exists():
            _roll_forward(stage)
        else:
            shutil.rmtree(stage)


def _meta(summary: HourSummary, late_ids: set[str]) -> dict[str, Any]:
    """What the reports are made of; nothing here depends on other hours."""
    return {
        "start": summary.start,
        "hour": summary.label,
        "combos": summary.combos,
        "total": summary.total,
        "late": summary.late,
        "late_ids": sort_ids(late_ids),
        "users": summary.users,
        "media": summary.media,
    }


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


def collector_counts(combos: dict[str, int], everyone: list[str]) -> tuple[dict[str, int], int]:
    """Unique IDs per collector, and how many IDs not every collector delivered."""
    per: dict[str, int] = dict.fromkeys(everyone, 0)
    for combo, n in combos.items():
        for c in combo.split("|"):
            if c:
                per[c] = per.get(c, 0) + n
    total = sum(combos.values())
    return per, total - combos.get("|".join(sorted(per)), 0)


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


SEAL_STAMPS = "_work/last-seal"


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
