"""One writer per data dir.

Two processes sealing the same hours, or sharing ``DIR/_recovery``, corrupt each other's
state. Every writing command (``up``, ``process``, ``replay``) holds ``DIR/_work/writer.lock``
for its lifetime: exclusively, or, for the processes of one Bytewax cluster, shared among them
(each also holds ``writer-<process id>.lock`` exclusively, so the same process cannot run
twice). It is an ``flock``: the kernel drops it when its holder dies, so a crash never leaves
a stale lock behind. ``DIR/_work/writer.json`` says who holds it, for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from connectors.store.disk import atomic_write, disk_writes
from shoal.errors import UserError

LOCK = "_work/writer.lock"
INFO = "_work/writer.json"


class DataDirBusy(UserError):
    """Another shoal is writing this data dir."""


def _holder(data_dir: Path) -> str:
    try:
        info = orjson.loads((data_dir / INFO).read_bytes())
    except (OSError, ValueError):
        return "another shoal process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} (`{info.get('command', 'shoal')}`, since {since})"


def _flock(path: Path, mode: int) -> int | None:
    """An open descriptor holding the lock, or None if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def make_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (and its parents), or say in one line why it cannot be one: a
    file of that name, a file on its path, no permission (exit 2, something to fix)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot use {data_dir} as the data dir: it, or a folder on its "
                        "path, is a file") from None
    except PermissionError:
        raise UserError(f"cannot create the data dir {data_dir}: permission denied") from None


@contextlib.contextmanager
def writer_lock(data_dir: Path, process_id: int | None = None) -> Iterator[None]:
    """Hold the data dir for writing, or raise :class:`DataDirBusy` naming the holder."""
    lock = data_dir / LOCK
    make_data_dir(data_dir)
    with disk_writes(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
    held: list[int] = []
    try:
        shared = process_id is not None
        fd = _flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        if fd is None:
            raise DataDirBusy(f"{data_dir} is being written by {_holder(data_dir)}; stop it "
                              "first (or give this run its own --data-dir)")
        held.append(fd)
        if shared:
            own = _flock(lock.with_name(f"writer-{process_id}.lock"), fcntl.LOCK_EX)
            if own is None:
                raise DataDirBusy(f"{data_dir}: process {process_id} of this cluster is "
                                  "already running")
            held.append(own)
        if not shared or process_id == 0:
            command = " ".join(["shoal", *sys.argv[1:3]]) if sys.argv else "shoal"
            atomic_write(data_dir / INFO, orjson.dumps(
                {"pid": os.getpid(), "command": command, "since": time.time()}))
        yield
    finally:
        for fd in held:
            os.close(fd)
