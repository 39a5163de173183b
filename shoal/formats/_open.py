"""Opening an input file, compressed or not: every reader and the format sniffer go through
:func:`open_input`, so that a ``.jsonl.xz`` export is read as the JSON lines it holds.

The compression is told by the file's first bytes, not its name: an archive renamed, or a
plain file named ``.xz``, is read as what it is. A stream that ends early (an interrupted
copy, a disk filled while writing) raises one of :data:`TRUNCATED` part way through; the
records read before it stand (``shoal.formats.read_file`` files the rest as a dead letter).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import IO, cast

XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"

# What a damaged or cut compressed stream raises while it is read.
TRUNCATED: tuple[type[BaseException], ...] = (EOFError, lzma.LZMAError, gzip.BadGzipFile,
                                               zlib.error, OSError)


def compression_of(path: Path) -> str:
    """``xz``, ``gzip``, ``bzip2`` or ``""`` (none), from the first bytes of ``path``."""
    with open(path, "rb") as fh:
        magic = fh.read(len(XZ_MAGIC))
    if magic.startswith(XZ_MAGIC):
        return "xz"
    if magic.startswith(GZIP_MAGIC):
        return "gzip"
    if magic.startswith(BZIP2_MAGIC) and len(magic) >= 4 and magic[3:4].isdigit():
        return "bzip2"
    return ""


def open_input(path: Path) -> IO[bytes]:
    """``path`` for reading, decompressed when it is compressed (seekable either way)."""
    kind = compression_of(path)
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "gzip":
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))
    if kind == "bzip2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def read_head(path: Path, size: int) -> bytes:
    """Up to ``size`` bytes from the start of ``path``, decompressed; of a stream cut short,
    what it holds before the cut (the format of a truncated export is still its format)."""
    parts: list[bytes] = []
    got = 0
    with open_input(path) as fh:
        read1 = cast(io.BufferedIOBase, fh).read1  # every opener above returns a buffered file
        try:
            while got < size:
                # read1, not read: read() gathers several blocks and loses them all when
                # the stream ends early; read1 hands over each block as it is decoded.
                part = read1(min(64 * 1024, size - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except TRUNCATED:
            if not parts:
                raise
    return b"".join(parts)


def read_input(path: Path) -> bytes:
    """The whole of ``path``, decompressed; of a stream cut short, what it holds before the
    cut (a document read whole then fails to parse, and its reader says so)."""
    return read_head(path, 1 << 62)
