"""Where fetched bodies go: a temp file while they arrive, then their final path under root.

Bodies are hashed while they are written, so the content-addressed path is known the moment
the last byte is in, and a reader of the store never sees half a file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from shoal.fetch.policy import (
    FetchConfig,
    FetchResult,
    sniff_type,
    storage_path,
    template_fields,
    utc_now_iso,
)

CHUNK = 64 * 1024
HEAD = 512  # bytes kept for type sniffing


class LocalStorageError(OSError):
    """Our own disk refused a write (full, read-only, not a folder, denied): not the URL's
    fate, so the engine never reports it as the URL's error. It stops the caller instead,
    and the URL stays to be fetched again once the disk is fixed (``shoal fetch --resume``,
    the dataflow's restart). An ``OSError`` with the original errno and file name, so that
    the dataflow's disk-trouble handling (``connectors.store.disk``) recognises it."""

    def __init__(self, errno_: int | None, reason: str, filename: str) -> None:
        super().__init__(errno_, reason, filename)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextlib.contextmanager
def local_writes(where: Path | str) -> Iterator[None]:
    """Turn an ``OSError`` of a local write (or SQLite's word for one) into
    :class:`LocalStorageError`; ``where`` names the place when the error does not."""
    try:
        yield
    except LocalStorageError:
        raise
    except OSError as exc:
        raise LocalStorageError(exc.errno, exc.strerror or str(exc),
                                str(exc.filename or where)) from exc
    except sqlite3.Error as exc:  # the ledger: "database or disk is full", "readonly"...
        raise LocalStorageError(None, str(exc), str(where)) from exc


class Sink:
    """A temp file beside the store, hashed while written; ``os.replace`` makes it visible
    only once complete, so a reader never sees half a file."""

    def __init__(self, tmp_dir: Path, compress: bool) -> None:
        self.path = tmp_dir / f"{uuid.uuid4().hex}.part"
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close/discard
        self._out: BinaryIO = (
            gzip.GzipFile(fileobj=self._fh, mode="wb", mtime=0)  # type: ignore[assignment]
            if compress else self._fh
        )
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.kept = False

    def write(self, chunk: bytes) -> None:
        if len(self.head) < HEAD:
            self.head += chunk[: HEAD - len(self.head)]
        self.hash.update(chunk)
        self.size += len(chunk)
        self._out.write(chunk)

    def close(self) -> None:
        if self._out is not self._fh:
            self._out.close()
        self._fh.close()

    def discard(self) -> None:
        # After a refused write, closing may be refused again (the buffer's flush): the
        # first error is the one that counts, and the temp file goes all the same.
        with contextlib.suppress(OSError):
            if not self._fh.closed:
                self.close()
        with contextlib.suppress(OSError):
            self._fh.close()  # when the gzip layer's close was the one refused
        if not self.kept:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


def place(
    sink: Sink, root: Path, config: FetchConfig, ctype: str, url: str,
    meta: Mapping[str, Any], res: FetchResult,
) -> None:
    """Move the finished temp file into place; identical bytes are stored once."""
    mimetype, ext = sniff_type(sink.head, ctype)
    sha = sink.hash.hexdigest()
    now = utc_now_iso()
    rel = storage_path(config, sha, ext, template_fields(url, meta, now))
    final = root / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and config.filename_template and "{sha256}" not in (
        config.filename_template
    ) and _file_sha256(final, config.compress) != sha:
        # A template that does not name the content: keep both, never overwrite.
        stem, dot, suffix = rel.rpartition("/")[2].partition(".")
        rel = rel.rpartition("/")[0] + f"/{stem}_{sha[:12]}{dot}{suffix}"
        final = root / rel
    if not final.exists():
        os.replace(sink.path, final)
        sink.kept = True
    res.bytes, res.sha256, res.mimetype, res.path, res.fetched_at = (
        sink.size, sha, mimetype, rel, now
    )


def query_copy(
    root: Path, config: FetchConfig, res: FetchResult, url: str, meta: Mapping[str, Any]
) -> str:
    """The path of ``res``'s file for the post ``meta`` describes, when its name has a folder
    per query: an image two keywords found is in both keywords' folders.

    A URL is fetched once, and its file named after the first post that asked for it; a
    later post with the same URL (found by another keyword, or by the ledger of an earlier
    run) gets the same result. With ``{query}`` in ``--filename-template``, the file is also
    linked where this post's own name puts it (a hard link, or a copy where links fail), so
    a folder per keyword holds every image of its posts. Other templates keep one file.
    """
    template = config.filename_template or ""
    if not res.ok or not res.path or not res.sha256 or "{query}" not in template:
        return res.path
    name = res.path.rpartition("/")[2].removesuffix(".gz" if config.compress else "")
    ext = name.rpartition(".")[2] if "." in name else "bin"
    rel = storage_path(config, res.sha256, ext, template_fields(url, meta, res.fetched_at))
    if rel == res.path:
        return rel
    final = root / rel
    with local_writes(final):
        if final.exists() and _file_sha256(final, config.compress) != res.sha256:
            stem, dot, suffix = rel.rpartition("/")[2].partition(".")
            rel = rel.rpartition("/")[0] + f"/{stem}_{res.sha256[:12]}{dot}{suffix}"
            final = root / rel
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
            try:
                os.link(root / res.path, tmp)
            except OSError:  # another file system, or one without hard links
                shutil.copyfile(root / res.path, tmp)
            os.replace(tmp, final)  # whole or absent, whatever stops us
    return rel


def _file_sha256(path: Path, compressed: bool) -> str:
    h = hashlib.sha256()
    with gzip.open(path, "rb") if compressed else open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
