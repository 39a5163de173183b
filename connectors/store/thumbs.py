"""Small JPEG thumbnails of stored media files, for the image-spread pages.

Paths come from the catalog (``media.path``, relative to the data dir); a path that would
leave the data dir is refused, whatever the catalog says.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from PIL import Image

SIZE = 160
GZIP_MAGIC = b"\x1f\x8b"


def stored_file(data_dir: Path, rel: str) -> Path | None:
    """The file ``rel`` names under ``data_dir``, or None if it is elsewhere or missing."""
    root = data_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def thumbnail(data_dir: Path, rel: str, size: int = SIZE) -> bytes | None:
    """A JPEG at most ``size`` pixels on its longer side, or None if no image is there."""
    path = stored_file(data_dir, rel)
    if path is None:
        return None
    try:
        data = path.read_bytes()
        if data[:2] == GZIP_MAGIC:  # a store that compresses its files
            data = gzip.decompress(data)
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size, size))
            img.thumbnail((size, size))
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=80)
            return out.getvalue()
    except Exception:  # not an image, truncated, hostile: no thumbnail, not a failure
        return None
