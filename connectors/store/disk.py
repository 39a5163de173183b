"""Writing to the data dir safely: whole files or nothing, and one readable line when the disk
refuses.

A write the disk refuses (full, over quota, read-only, not ours) raises :class:`DiskTrouble`
with one readable line, after removing whatever it had half-written. The run stops; the next
one resumes from the last snapshot and redoes the lost work, as after a crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoal.errors import chain

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
