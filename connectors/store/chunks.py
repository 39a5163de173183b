"""Open hours on disk: immutable chunk files the stage step writes and the sealer merges.

Rows are never kept in Bytewax state. The stage step appends them to immutable *chunk* files
(written under a temporary name, then renamed) below ``_work/chunks/<platform>/<hour>/``; the
line format is ``shoal.chunks``, the merge ``shoal.merge``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from connectors.store.disk import atomic_write
from connectors.store.layout import CHUNKS, chunk_dir
from shoal import chunks as chunk_format
from shoal.merge import HourState


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


def read_chunk(path: Path) -> bytearray:
    """One chunk file's bytes, in one read, into a buffer the reader may change (see
    :func:`shoal.chunks.apply_buffer`: lines carry whole payloads, and neither a line
    iterator nor a split is needed to parse them)."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(os.fstat(fh.fileno()).st_size)
        got = 0
        with memoryview(buf) as view:
            while got < len(buf):
                n = fh.readinto(view[got:])
                if not n:  # shorter than its size said (chunks are immutable: never here)
                    break
                got += n
    del buf[got:]
    return buf


def apply_chunk(state: HourState, path: Path, seen_by: list[tuple[str, str]]) -> None:
    """Merge one chunk file into ``state`` (see :func:`shoal.chunks.apply_buffer`)."""
    chunk_format.apply_buffer(state, read_chunk(path), seen_by)
