"""Dead letters: inputs that could not become posts, kept with their reason and origin.

They go to ``DIR/_deadletter/YYYY-mm-dd/YYYY-mm-dd_hh_deadletter.jsonl.xz`` (hour of arrival)
and, when a broker is given, to the ``shoal.deadletter`` topic. Files are rewritten whole
(temporary name, then rename) and deduplicated by origin, so a replay after a crash does not
list the same bad message twice. Dead letters are rare; rewriting is cheap enough.
"""

from __future__ import annotations

import lzma
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.hourly_files import atomic_write
from shoal.model import DeadLetter

FOLDER = "_deadletter"


def deadletter_path(data_dir: Path, when: datetime) -> Path:
    when = when.astimezone(UTC)
    day = when.strftime("%Y-%m-%d")
    return data_dir / FOLDER / day / f"{day}_{when:%H}_deadletter.jsonl.xz"


def read_deadletters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with lzma.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def append_deadletters(path: Path, records: Iterable[dict[str, Any]]) -> int:
    existing = read_deadletters(path)
    seen = {(r.get("source"), r.get("reason")) for r in existing}
    added = 0
    for rec in records:
        key = (rec.get("source"), rec.get("reason"))
        if key in seen:
            continue
        seen.add(key)
        existing.append(rec)
        added += 1
    if added:
        body = b"".join(orjson.dumps(r) + b"\n" for r in existing)
        atomic_write(path, lzma.compress(body, preset=1))
    return added


def count_deadletters(data_dir: Path, day: str) -> int:
    folder = data_dir / FOLDER / day
    return sum(len(read_deadletters(p)) for p in sorted(folder.glob("*_deadletter.jsonl.xz")))


class _Partition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, data_dir: Path, brokers: str | None):
        self.data_dir = data_dir
        self.producer: Any = None
        if brokers:
            from kafka import KafkaProducer

            self.producer = KafkaProducer(bootstrap_servers=brokers.split(","), linger_ms=50)

    def write_batch(self, items: list[DeadLetter]) -> None:
        now = datetime.now(UTC)
        groups: dict[Path, list[dict[str, Any]]] = defaultdict(list)
        for letter in items:
            rec = letter.as_json()
            rec["at"] = now.replace(microsecond=0).isoformat()
            groups[deadletter_path(self.data_dir, now)].append(rec)
            if self.producer is not None:
                self.producer.send(
                    "shoal.deadletter", key=letter.source.encode(), value=orjson.dumps(rec)
                )
        for path, recs in groups.items():
            append_deadletters(path, recs)
        if self.producer is not None:
            self.producer.flush(30)

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(5)


class DeadLetterSink(DynamicSink[DeadLetter]):
    def __init__(self, data_dir: Path, brokers: str | None = None):
        self.data_dir = data_dir
        self.brokers = brokers

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.data_dir, self.brokers)
