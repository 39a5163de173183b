"""What has been fetched already, kept on disk so that a restart never downloads twice.

SQLite rather than a JSONL file read into a dict: lookups stay fast and memory stays flat
with millions of URLs, and several processes can share the file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson

from shoal.fetch.policy import FetchResult

LEDGER_NAME = "fetch-ledger.sqlite"


class FetchLedger:
    """Append-only ``url -> FetchResult`` of successful fetches.

    Writes are committed in small batches: a crash loses at most the last second of
    records, which only costs a re-download that content addressing then deduplicates.
    """

    def __init__(self, path: Path, commit_every: int = 200, commit_seconds: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS fetched (url TEXT PRIMARY KEY, result BLOB NOT NULL)"
        )
        self._commit_every = commit_every
        self._commit_seconds = commit_seconds
        self._uncommitted = 0
        self._last_commit = time.monotonic()

    @classmethod
    def in_root(cls, root: Path) -> FetchLedger:
        return cls(Path(root) / LEDGER_NAME)

    def get(self, url: str) -> FetchResult | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM fetched WHERE url = ?", (url,)).fetchone()
        return FetchResult.from_dict(orjson.loads(row[0])) if row else None

    def record(self, result: FetchResult) -> None:
        if not result.ok:
            return
        blob = orjson.dumps(result.as_dict())
        with self._lock:
            if self._uncommitted == 0:
                self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO fetched (url, result) VALUES (?, ?)", (result.url, blob)
            )
            self._uncommitted += 1
            if (
                self._uncommitted >= self._commit_every
                or time.monotonic() - self._last_commit >= self._commit_seconds
            ):
                self._commit()

    def _commit(self) -> None:
        if self._uncommitted:
            self._db.execute("COMMIT")
            self._uncommitted = 0
        self._last_commit = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            self._commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM fetched").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._commit()
            self._db.close()


class RunFailures:
    """``url -> FetchResult`` of the URLs that failed in this run, so that a URL found again
    in a later line (past the engine's window) gets the same outcome instead of being
    fetched again with all its retries.

    A private temporary SQLite database (SQLite's ``""``: a file in the temp folder,
    removed when closed): memory stays flat however many URLs fail. Nothing of it outlives
    the run: a new run tries failed URLs again.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("CREATE TABLE failed (url TEXT PRIMARY KEY, result BLOB NOT NULL)")

    def get(self, url: str) -> FetchResult | None:
        row = self._db.execute("SELECT result FROM failed WHERE url = ?", (url,)).fetchone()
        return FetchResult.from_dict(orjson.loads(row[0])) if row else None

    def add(self, result: FetchResult) -> None:
        if result.ok:
            return
        self._db.execute("INSERT OR REPLACE INTO failed (url, result) VALUES (?, ?)",
                         (result.url, orjson.dumps(result.as_dict())))

    def close(self) -> None:
        self._db.close()
