"""Where everything lives in a data dir: the names of folders and files, in one place.

``DIR/<platform>/YYYY-mm-dd/YYYY-mm-dd_hh_{IDs.txt,tweets.csv,users.csv,media.csv}.xz`` for the
sealed hours, with ``..._raw.jsonl.xz``, their raw archive (see ``shoal.formats.shoal_archive``);
``DIR/_parquet`` for the catalog's tables, ``DIR/_work`` for what is not an output (chunks of
open hours, staged seals, seal stamps, locks).
"""

from __future__ import annotations

import csv
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.hours import hour_name

CHUNKS = "_work/chunks"

PARQUET = "_parquet"

STAGING = "_work/seal"

SEAL_STAMPS = "_work/last-seal"
# Seals committed but not yet announced (hooks queued, alerts told): see seal.unannounced.
ANNOUNCE = "_work/announce"

def posts_word(platform: str) -> str:
    return "tweets" if platform == "twitter" else "posts"

def chunk_dir(data_dir: Path, platform: str, start: int) -> Path:
    return data_dir / CHUNKS / platform / str(start)

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
        ext = {"IDs": "txt", "raw": "jsonl"}.get(kind, "csv")
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

def read_csv_xz(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        return
    with lzma.open(path, "rt", encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


csv.field_size_limit(1 << 30)
