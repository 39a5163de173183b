"""A bounded on-disk queue of Kafka messages, for collectors that outlive a Kafka outage.

The publisher writes here only while Kafka cannot take messages, and replays the queue in
order once it can. Layout::

    <spool dir>/                      one per collector (``~/.cache/shoal/spool/<collector>``)
        <time_ns>-<pid>/              one per publisher instance, flock'ed by it (``LOCK``)
            <seq>.seg                 append-only segments of length-prefixed records
            <seq>.pos                 how far a segment has been delivered (absent: 0)
        rejected.seg                  messages Kafka refused for good (kept for a human)

A record is ``u32 body length | u32 crc32(body) | body``; the body holds topic, key, value
and headers with their own lengths, so binary payloads need no escaping. A crash can leave a
torn last record; the crc and the length find it and the reader stops there.

An instance directory whose lock nobody holds belongs to a publisher that has gone (closed
with Kafka still away, or killed): the next publisher of the same collector *adopts* it and
delivers it before anything of its own, which is what makes the spool survive a restart.
Delivery positions are saved after Kafka acknowledged a batch, so a crash while draining
re-sends at most one batch: across crashes the spool is at-least-once, the dataflow dedupes.

Not thread-safe: the publisher serialises every call under its own lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Message = tuple[str, bytes | None, bytes, Headers]  # topic, key, value, headers

DEFAULT_MAX_BYTES = 2 * 1024**3
SEGMENT_BYTES = 64 * 1024 * 1024
WRITE_BUFFER = 256 * 1024
_FIRST_SEQ = 10**12  # room below it for rescue segments, which must sort first
_INSTANCE = re.compile(r"^\d{20}-\d+$")
_HEAD = struct.Struct("<II")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")


class SpoolFull(RuntimeError):
    """The spool reached its size limit (or its disk is full) while Kafka is unreachable."""


def default_spool_root() -> Path:
    """``$SHOAL_SPOOL_DIR``, else the XDG cache: a spool must outlive the process."""
    env = os.environ.get("SHOAL_SPOOL_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "shoal" / "spool"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "collector"


# --------------------------------------------------------------------------- records


def encode(msg: Message) -> bytes:
    topic, key, value, headers = msg
    t = topic.encode()
    parts = [_U16.pack(len(t)), t]
    if key is None:
        parts.append(_I32.pack(-1))
    else:
        parts += [_I32.pack(len(key)), key]
    parts += [_U32.pack(len(value)), value, _U16.pack(len(headers))]
    for hk, hv in headers:
        kb = hk.encode()
        parts += [_U16.pack(len(kb)), kb, _U32.pack(len(hv)), hv]
    body = b"".join(parts)
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def decode_body(body: memoryview) -> Message:
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        out = bytes(body[pos : pos + n])
        pos += n
        return out

    (tlen,) = _U16.unpack_from(body, pos)
    pos += 2
    topic = take(tlen).decode()
    (klen,) = _I32.unpack_from(body, pos)
    pos += 4
    key = None if klen < 0 else take(klen)
    (vlen,) = _U32.unpack_from(body, pos)
    pos += 4
    value = take(vlen)
    (nh,) = _U16.unpack_from(body, pos)
    pos += 2
    headers: Headers = []
    for _ in range(nh):
        (hk,) = _U16.unpack_from(body, pos)
        pos += 2
        name = take(hk).decode()
        (hv,) = _U32.unpack_from(body, pos)
        pos += 4
        headers.append((name, take(hv)))
    return topic, key, value, headers


def decode_records(data: bytes, limit: int | None = None) -> tuple[list[Message], int]:
    """Whole, intact records from the start of ``data`` (at most ``limit``), and bytes used.

    Stops at a torn or corrupt record: what follows it cannot be trusted.
    """
    view = memoryview(data)
    out: list[Message] = []
    pos = 0
    while pos + _HEAD.size <= len(view) and (limit is None or len(out) < limit):
        length, crc = _HEAD.unpack_from(view, pos)
        end = pos + _HEAD.size + length
        if end > len(view):
            break
        body = view[pos + _HEAD.size : end]
        if zlib.crc32(body) != crc:
            break
        out.append(decode_body(body))
        pos = end
    return out, pos


def read_file(path: Path) -> list[Message]:
    """Every whole record of a segment, e.g. ``rejected.seg`` (for humans and tests)."""
    return decode_records(path.read_bytes())[0]


# --------------------------------------------------------------------------- segments


@dataclass
class Segment:
    path: Path
    seq: int
    size: int  # bytes on disk (plus, for the writer, bytes still buffered)
    read_pos: int = 0
    adopted: bool = False

    @property
    def pos_path(self) -> Path:
        return self.path.with_suffix(".pos")


@dataclass(frozen=True)
class Batch:
    """Messages read from one segment, and where the segment's position goes once sent."""

    segment: Segment
    end: int
    messages: list[Message]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _disk_error(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Spool:
    """Segments in delivery order: adopted leftovers, rescued messages, then our own."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 segment_bytes: int | None = None):
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(SEGMENT_BYTES, max_bytes // 8))
        root.mkdir(parents=True, exist_ok=True)
        self.dir = root / f"{time.time_ns():020d}-{os.getpid()}"
        self.dir.mkdir()
        lock = _try_lock(self.dir / "LOCK")
        if lock is None:  # pragma: no cover - the name is new
            raise RuntimeError(f"cannot lock {self.dir}")
        self._locks: dict[Path, int] = {self.dir: lock}
        self.queue: list[Segment] = []
        self.bytes = 0
        self._adopt()
        self._writer: Segment | None = None
        self._fd: int | None = None
        self._buf = bytearray()
        self._next_seq = _FIRST_SEQ
        self._rescue: Segment | None = None

    # -- start: the leftovers of publishers that are gone
    def _adopt(self) -> None:
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and _INSTANCE.match(p.name)):
            if d == self.dir:
                continue
            fd = _try_lock(d / "LOCK")
            if fd is None:
                continue  # a live publisher's
            segments = []
            for seg in sorted(d.glob("*.seg"), key=lambda p: int(p.stem)):
                size = seg.stat().st_size
                pos_file = seg.with_suffix(".pos")
                pos = int(pos_file.read_text() or 0) if pos_file.exists() else 0
                if pos < size:
                    segments.append(Segment(seg, int(seg.stem), size, pos, adopted=True))
                else:
                    seg.unlink()
                    pos_file.unlink(missing_ok=True)
            if not segments:
                os.close(fd)
                shutil.rmtree(d, ignore_errors=True)
                continue
            self._locks[d] = fd
            self.queue += segments
            self.bytes += sum(s.size for s in segments)
            log.info("spool adopted", extra={"fields": {
                "dir": str(d), "segments": len(segments), "bytes": sum(s.size for s in segments),
            }})

    def pending(self) -> bool:
        """True while anything written is not yet delivered."""
        return any(s.read_pos < s.size for s in self.queue)

    # -- writing
    def append(self, msg: Message) -> None:
        rec = encode(msg)
        if len(self._buf) >= WRITE_BUFFER:
            self.write_out()
        if self.bytes + len(rec) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.root} is full ({self.bytes} of {self.max_bytes} bytes) while Kafka "
                "is unreachable; free space or raise spool_max_bytes"
            )
        w = self._writer
        if w is None or w.size >= self.segment_bytes:
            w = self._new_writer()
        self._buf += rec
        w.size += len(rec)
        self.bytes += len(rec)

    def _new_writer(self) -> Segment:
        self.write_out()
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        seg = Segment(self.dir / f"{self._next_seq}.seg", self._next_seq, 0)
        self._next_seq += 1
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._writer = seg
        self.queue.append(seg)
        return seg

    def write_out(self) -> None:
        """Hand the buffer to the OS; on a full disk keep it and say so."""
        if not self._buf or self._fd is None:
            return
        assert self._writer is not None
        on_disk = self._writer.size - len(self._buf)
        try:
            done = 0
            with memoryview(self._buf) as view:
                while done < len(view):
                    done += os.write(self._fd, view[done:])
        except OSError as exc:
            # Never leave a torn record behind: cut back to the last whole one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, on_disk)
            if _disk_error(exc):
                raise SpoolFull(f"spool {self.root}: cannot write: {exc.strerror}; free space "
                                "(Kafka is unreachable, nothing was lost yet)") from exc
            raise
        self._buf.clear()

    def sync(self) -> None:
        self.write_out()
        if self._fd is not None:
            os.fsync(self._fd)

    def rescue(self, messages: Iterable[Message]) -> None:
        """Messages the producer gave back: they were posted before anything in our segments.

        They go to a segment that sorts before ours (but after adopted ones), ignoring the
        size limit: they were already accepted, and their number is bounded by the producer.
        """
        seg = self._rescue
        if seg is None:
            own = [s.seq for s in self.queue if not s.adopted]
            seq = (min(own) if own else self._next_seq) - 1
            seg = Segment(self.dir / f"{seq}.seg", seq, 0)
            at = sum(1 for s in self.queue if s.adopted)
            self.queue.insert(at, seg)
            self._rescue = seg
        data = b"".join(encode(m) for m in messages)
        with open(seg.path, "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        seg.size += len(data)
        self.bytes += len(data)

    def reject(self, messages: Iterable[Message]) -> Path:
        path = self.root / "rejected.seg"
        with open(path, "ab") as fh:
            fh.write(b"".join(encode(m) for m in messages))
        return path

    # -- draining
    def read_batch(self, max_records: int = 5000, max_bytes: int = 8 * 1024 * 1024) -> Batch | None:
        """The next messages to deliver, oldest first; None when everything is delivered."""
        self._rescue = None  # draining has begun: nothing may be rescued ahead of it now
        while self.queue:
            seg = self.queue[0]
            if seg is self._writer:
                with contextlib.suppress(SpoolFull):  # a full disk: read what is on it
                    self.write_out()
            readable = seg.size - (len(self._buf) if seg is self._writer else 0) - seg.read_pos
            if readable > 0:
                data = _read(seg.path, seg.read_pos, min(max_bytes, readable))
                msgs, used = decode_records(data, max_records)
                if not msgs and len(data) < readable:  # one record larger than max_bytes
                    msgs, used = decode_records(_read(seg.path, seg.read_pos, readable), 1)
                if msgs:
                    return Batch(seg, seg.read_pos + used, msgs)
                log.error("spool segment torn or corrupt; the rest of it is skipped",
                          extra={"fields": {"path": str(seg.path), "bytes": readable}})
                seg.read_pos += readable
            if seg is self._writer:
                return None
            self._drop(seg)
        return None

    def commit(self, batch: Batch) -> None:
        """Kafka has the batch: move the segment's position (and drop it once delivered)."""
        seg = batch.segment
        seg.read_pos = batch.end
        if seg.read_pos >= seg.size and seg is not self._writer:
            self._drop(seg)
            return
        tmp = seg.pos_path.with_suffix(".pos.tmp")
        tmp.write_text(str(seg.read_pos))
        os.replace(tmp, seg.pos_path)

    def _drop(self, seg: Segment) -> None:
        seg.path.unlink(missing_ok=True)
        seg.pos_path.unlink(missing_ok=True)
        self.queue.remove(seg)
        self.bytes -= seg.size
        if seg.adopted and not any(s.path.parent == seg.path.parent for s in self.queue):
            fd = self._locks.pop(seg.path.parent, None)
            shutil.rmtree(seg.path.parent, ignore_errors=True)
            if fd is not None:
                os.close(fd)

    def finish(self) -> bool:
        """If everything is delivered, drop the writer segment too and return True."""
        if self.pending():
            return False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for seg in list(self.queue):
            self._drop(seg)
        self._writer = None
        self._rescue = None
        self.bytes = 0
        return True

    def close(self) -> None:
        """Make everything durable and let go; an empty instance directory is removed."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        empty = not self.pending()
        if empty:
            for seg in list(self.queue):
                self._drop(seg)
        for d, fd in list(self._locks.items()):
            if d == self.dir and empty:
                shutil.rmtree(d, ignore_errors=True)
            os.close(fd)
        self._locks.clear()


def _read(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(n)
