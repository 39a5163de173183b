"""The perceptual hash of a stored image: 64 bits that survive re-encoding, resizing and crops.

``imagehash.phash`` (the DCT hash: the signs of the 8×8 lowest frequencies of a 32×32 grey
thumbnail) is computed for every fetched image, by the fetch engine in a thread of its own
once the file is stored, and travels in the media row's ``phash`` column (16 hex digits).
``shoal.spread`` groups images by the Hamming distance between these hashes.
"""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path

import imagehash
from PIL import Image

# Large enough for any photo, small enough that decoding a hostile file stays cheap.
MAX_PIXELS = 100_000_000
DRAFT = (256, 256)  # JPEGs are decoded at a reduced scale no smaller than this


def image_phash(path: Path, compressed: bool = False) -> str:
    """The hash of the image at ``path`` as 16 hex digits, or "" if it is not a readable image.

    ``compressed``: the store gzips its files (``FetchConfig.compress``). Never raises for
    the file's sake: a hash is a nicety, a fetch result must not be lost over it.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
        return phash_of_bytes(data)
    except Exception:  # unreadable, truncated, hostile: Pillow raises many kinds
        return ""


def phash_of_bytes(data: bytes) -> str:
    """The hash of an encoded image (JPEG, PNG, GIF's first frame, WebP...); ValueError/OSError
    if Pillow cannot read it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ValueError(f"image too large to hash ({img.width}x{img.height})")
            img.draft("RGB", DRAFT)  # a no-op for formats other than JPEG
            return str(imagehash.phash(img.convert("RGB")))
