"""Sealing an hour: merge its chunks with its sealed files, publish the new files as one unit.

Sealing an hour merges every chunk of the hour with what the hour's sealed files already hold
(``shoal.merge``, a union keyed by post id, so sealing is idempotent: replaying messages after
a crash, a second collector delivering the same post, or a straggler for an hour sealed long
ago all give the same files as a clean run) and republishes the hour's files atomically
(:func:`publish_together`). That is the whole exactly-once story of the outputs, and why the
recovery snapshot only has to carry Kafka offsets and a few per-partition facts. A failed seal
leaves the hour's previous files untouched.
"""

from __future__ import annotations

import contextlib
import lzma
import operator
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson

from connectors.store.chunks import apply_chunk
from connectors.store.disk import DiskTrouble, atomic_write, disk_writes, fsync_dir
from connectors.store.id_lists import write_id_files
from connectors.store.layout import (
    ANNOUNCE,
    PARQUET,
    STAGING,
    HourPaths,
    chunk_dir,
    posts_word,
    read_csv_xz,
)
from connectors.store.reports import (
    collector_counts,
    known_collectors,
    remember_collectors,
    reports_lock,
    restate_reports,
    write_day_report,
)
from shoal import faults
from shoal.csv_text import csv_text
from shoal.formats.shoal_archive import archive_line, parse_line
from shoal.merge import HourState, HourSummary, sort_ids
from shoal.model import MEDIA_FILE_COLUMNS, POST_COLUMNS, USER_COLUMNS

XZ_PRESET = 1

def csv_bytes(columns: tuple[str, ...], rows: Iterable[dict[str, str]]) -> bytes:
    pick = operator.itemgetter(*columns)
    empty = dict.fromkeys(columns, "")

    def values(row: dict[str, str]) -> tuple[str, ...]:
        try:
            return pick(row)  # type: ignore[no-any-return]
        except KeyError:  # a row without some column (a media row not fetched): empty.
            # One merge in C, not a lookup per column; a media row is here every time.
            return pick(empty | row)  # type: ignore[no-any-return]

    return csv_text(columns, map(values, rows)).encode("utf-8")

def _xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=XZ_PRESET)

XZ_PIECE = 1 << 20

def _xz_lines(lines: Iterable[bytes], piece_size: int = XZ_PIECE) -> bytes:
    """``_xz(b"".join(lines))``, the same bytes, without the lines all in memory at once.

    The raw archive is the biggest file of an hour (every message as it came, some 1.5 kB a
    post): built whole, its lines and then their join held three copies of the hour's
    payloads at the seal's peak. The encoder's output does not depend on how its input is
    cut, so feeding it a megabyte at a time changes nothing on disk.
    """
    encoder = lzma.LZMACompressor(preset=XZ_PRESET)
    out: list[bytes] = []
    piece: list[bytes] = []
    size = 0
    for line in lines:
        piece.append(line)
        size += len(line)
        if size >= piece_size:
            out.append(encoder.compress(b"".join(piece)))
            piece.clear()
            size = 0
    out.append(encoder.compress(b"".join(piece)))
    out.append(encoder.flush())
    return b"".join(out)

def load_sealed(paths: HourPaths) -> HourState:
    state = HourState()
    for row in read_csv_xz(paths.posts):
        collectors = [c for c in row.pop("collectors", "").split("|") if c]
        state.add_post(row, collectors)
    raw = paths.file("raw")
    if raw.exists():
        with lzma.open(raw, "rb") as fh:
            for line in fh:
                head, payload = parse_line(line)
                pid = head["id"]
                if pid in state.posts:
                    state.raw[pid] = (head["retrieved_at"], head["format"], payload)
    for row in read_csv_xz(paths.file("users")):
        state.add_user(row)
    for row in read_csv_xz(paths.file("media")):
        state.add_media(row)
    meta = paths.folder / f".{paths.name.stem}_meta.json"
    if meta.exists():
        state.late_ids = set(orjson.loads(meta.read_bytes()).get("late_ids", []))
    return state

def seal_hour(
    data_dir: Path, platform: str, start: int, tz: str, catalog: Any | None = None,
    *, id_lists: bool = True, announce: bool = False,
) -> HourSummary | None:
    """Merge the hour's chunks into its sealed files; a no-op if it has no chunks.

    A TikTok hour also brings the per-query ID files up to date, unless ``id_lists`` is
    false: the dataflow's sealer does that once a burst of TikTok seals is over
    (:func:`refresh_id_lists`), since each rewrite reads every TikTok hour sealed so far.
    With ``announce`` (the dataflow), the summary is kept on disk before the chunks go,
    until :func:`announced` (see :func:`unannounced`).
    """
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
        row = state.posts[pid]  # the state is this seal's own: no copy
        row["collectors"] = "|".join(sorted(state.collectors[pid]))
        post_rows.append(row)
    user_rows = [state.users[u] for u in sort_ids(state.users)]
    order = {pid: i for i, pid in enumerate(ids)}
    media_rows = sorted(
        state.media.values(),
        key=lambda r: (order.get(r["post_id"], len(order)), r["post_id"], int(r["position"] or 0)),
    )
    raw_lines = (  # a generator: see _xz_lines
        archive_line(platform, pid, fmt, state.collectors[pid], retrieved,
                     pid in state.late_ids, payload)
        for pid in ids if pid in state.raw
        for retrieved, fmt, payload in (state.raw[pid],)
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
        # Only hours sealed since the archive exists have one (an older hour re-sealed by a
        # straggler archives what the chunks bring).
        **({paths.file("raw"): _xz_lines(raw_lines)} if state.raw else {}),
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
        if platform == "tiktok" and catalog is not None and id_lists:
            # After the hour's Parquet files: the lists are read back from them.
            write_id_files(data_dir)
    fsync_dir(paths.folder)
    if announce:
        atomic_write(announce_path(data_dir, platform, start), orjson.dumps(asdict(summary)))
    for chunk in chunks:
        chunk.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        chunks[0].parent.rmdir()
    return summary


def announce_path(data_dir: Path, platform: str, start: int) -> Path:
    return data_dir / ANNOUNCE / f"{platform}_{start}.json"


def unannounced(data_dir: Path, mine: Callable[[str, int], bool]) -> list[HourSummary]:
    """Hours sealed (committed, chunks gone) whose seal the dataflow never announced.

    The seal is committed by a helper and announced (hooks queued, alerts told) by the
    dataflow when it reaps it; a kill between the two left an hour whose hooks never ran -
    the lab's upload of its ID list - since nothing on disk said it was sealed. These are
    announced at the next start (a hook may then run twice: hooks run at least once).
    """
    out = []
    for path in sorted((data_dir / ANNOUNCE).glob("*.json")):
        try:
            summary = HourSummary(**orjson.loads(path.read_bytes()))
        except (orjson.JSONDecodeError, TypeError, OSError):
            path.unlink(missing_ok=True)  # torn by a crash while written: atomic_write's tmp
            continue
        if mine(summary.platform, summary.start):
            out.append(summary)
    return out


def announced(data_dir: Path, platform: str, start: int) -> None:
    announce_path(data_dir, platform, start).unlink(missing_ok=True)


def refresh_id_lists(data_dir: Path) -> None:
    """Rewrite the TikTok ID files from every hour committed so far (under the reports
    lock, like a seal's own rewrite, so the last writer has seen every committed hour)."""
    with reports_lock(data_dir):
        write_id_files(data_dir)


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

def recover_staged(data_dir: Path,
                   mine: Callable[[str, int], bool] | None = None) -> None:
    """At start: finish committed seals, drop uncommitted ones (of the hours ``mine`` says
    are the caller's: other sealers may be staging theirs right now)."""
    root = data_dir / STAGING
    if not root.is_dir():
        return
    for stage in sorted(root.glob("*/*")):
        if mine is not None and not (stage.name.isdigit()
                                     and mine(stage.parent.name, int(stage.name))):
            continue
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
