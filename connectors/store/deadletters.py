"""Dead letters: inputs that could not become posts, kept with their reason and origin.

They go to ``DIR/_deadletter/YYYY-mm-dd/YYYY-mm-dd_hh_deadletter.jsonl.xz`` (hour of arrival,
named in the flow's ``--tz`` like the posts' hours)
and, when a broker is given, to the ``shoal.deadletter`` topic. Files are rewritten whole
(temporary name, then rename) and deduplicated by origin, so a replay after a crash does not
list the same bad message twice. Dead letters are rare; rewriting is cheap enough.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.store.disk import atomic_write
from connectors.store.reports import refresh_day_reports, reports_lock
from shoal.hours import hour_name, hour_start, parse_iso, zone
from shoal.model import DEADLETTER_TOPIC, DeadLetter

FOLDER = "_deadletter"
log = logging.getLogger("shoal.deadletters")


def deadletter_path(data_dir: Path, when: datetime, tz_name: str = "UTC") -> Path:
    """The file of the hour ``when`` falls in, named in the flow's zone (``--tz``).

    Named like the posts' hours, so that a day's letters are counted in the report of the
    same local day (in UTC, a Paris lab's letters of 00:00-02:00 went to the day before).
    """
    name = hour_name(hour_start(when, zone(tz_name)), tz_name)
    return data_dir / FOLDER / name.day / f"{name.stem}_deadletter.jsonl.xz"


def read_deadletters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with lzma.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def _identity(rec: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a dead letter itself: its origin, reason and content. The same message
    replayed is the same letter; two bad records of one input line (two tweets of a page
    without an id) are two. The origin is the input's ``file:line`` when the dataflow knows
    it (``input``): the same file read again, or under two collector names, comes back
    under other offsets, and is still the same bad record."""
    return (rec.get("input") or rec.get("source"), rec.get("reason"), rec.get("raw"))


def _digest(rec: dict[str, Any]) -> bytes:
    return hashlib.blake2b(orjson.dumps(_identity(rec), default=str), digest_size=16).digest()


def known_letters(data_dir: Path) -> set[bytes]:
    """The identities of every dead letter filed in ``data_dir``, any hour: a letter is
    filed by the hour it reached Kafka, so the same input collected again later (``shoal up``
    run twice over a file) would be filed a second time in another hour's file."""
    return {_digest(r) for path in sorted((data_dir / FOLDER).glob("*/*_deadletter.jsonl.xz"))
            for r in read_deadletters(path)}


def append_deadletters(path: Path, records: Iterable[dict[str, Any]]) -> int:
    existing = read_deadletters(path)
    seen = {_identity(r) for r in existing}
    added = 0
    for rec in records:
        key = _identity(rec)
        if key in seen:
            continue
        seen.add(key)
        existing.append(rec)
        added += 1
    if added:
        # In a stable order, not arrival order: letters of several partitions interleave
        # differently from one run to the next, and a replay must write the same file.
        existing.sort(key=lambda r: (str(r.get("at")), str(r.get("source")),
                                     str(r.get("reason")), str(r.get("raw"))))
        body = b"".join(orjson.dumps(r) + b"\n" for r in existing)
        atomic_write(path, lzma.compress(body, preset=1))
    return added


_QUOTED = re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w.-])")


def reason_of(rec: dict[str, Any]) -> str:
    """A dead letter's kind, the row it is counted in: its reason without the values that
    differ from one letter to the next. Quoted values become ``'…'`` and numbers ``N``
    before the details (after the first colon) go, so that a day of bad dates is one row
    (``absurd created_at '…'``), not one row per date; the letters keep their full reason."""
    text = _NUMBER.sub("N", _QUOTED.sub("'…'", str(rec.get("reason", ""))))
    return " ".join(text.split(":")[0].split())[:120] or "?"


def reasons_on(data_dir: Path, day: str) -> dict[str, int]:
    """How many inputs filed under ``day`` failed, by reason."""
    counts: dict[str, int] = defaultdict(int)
    for path in sorted((data_dir / FOLDER / day).glob("*_deadletter.jsonl.xz")):
        for rec in read_deadletters(path):
            counts[reason_of(rec)] += 1
    return dict(counts)


def write_deadletter_report(data_dir: Path, day: str) -> Path:
    """``_deadletter/DAY/DAY_report.txt``: how many inputs of the day failed, by reason."""
    counts = reasons_on(data_dir, day)
    folder = data_dir / FOLDER / day
    lines = ["reason\tcount", *(f"{r}\t{n}" for r, n in sorted(counts.items()))]
    lines.append(f"total\t{sum(counts.values())}")
    path = folder / f"{day}_report.txt"
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path


class _Partition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, data_dir: Path, brokers: str | None, tz: str = "UTC"):
        self.data_dir = data_dir
        self.tz = tz
        self.known: set[bytes] | None = None  # known_letters, read at the first letter
        self.producer: Any = None
        if brokers:
            from kafka import KafkaProducer

            self.producer = KafkaProducer(bootstrap_servers=brokers.split(","), linger_ms=50)

    def write_batch(self, items: list[DeadLetter]) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        groups: dict[Path, list[dict[str, Any]]] = defaultdict(list)
        to_publish: list[DeadLetter] = []
        if self.known is None:
            self.known = known_letters(self.data_dir)
        for letter in items:
            rec = letter.as_json()
            digest = _digest(rec)
            if digest in self.known:  # filed already, maybe in another hour: not twice
                continue
            self.known.add(digest)
            # Filed by the time the message reached Kafka, so a replay files it the same way.
            when = parse_iso(letter.at) if letter.at else now
            rec["at"] = letter.at = when.isoformat()
            groups[deadletter_path(self.data_dir, when, self.tz)].append(rec)
            if self.producer is not None and not letter.published:
                to_publish.append(letter)
        # The disk first: the files are the record that is never lost; the topic is a feed
        # for whoever watches it, and a refusal there must not cost the letter or the run.
        for path, recs in groups.items():
            # Files are rewritten whole: other workers (threads, or a cluster's processes)
            # may be adding to the same hour's file.
            with reports_lock(self.data_dir, "deadletters"):
                if append_deadletters(path, recs):
                    write_deadletter_report(self.data_dir, path.parent.name)
                    refresh_day_reports(self.data_dir, path.parent.name)
        if to_publish:
            self._publish(to_publish)

    def _publish(self, letters: list[DeadLetter]) -> None:
        """To ``shoal.deadletter``, as collectors send them (:meth:`DeadLetter.as_message`:
        a record over Kafka's message limit, the usual reason for a letter, keeps its head)."""
        from kafka.errors import KafkaError

        failed: list[str] = []
        for letter in letters:
            try:
                self.producer.send(DEADLETTER_TOPIC, key=letter.source.encode(
                    "utf-8", "backslashreplace"), value=orjson.dumps(letter.as_message()))
            except KafkaError as exc:
                failed.append(f"{letter.source}: {exc!r}")
        try:
            self.producer.flush(30)
        except KafkaError as exc:
            failed.append(f"flush: {exc!r}")
        if failed:
            log.warning("dead letters kept on disk but not sent to the topic", extra={
                "fields": {"topic": DEADLETTER_TOPIC, "count": len(failed),
                           "first": failed[0][:300], "files": str(self.data_dir / FOLDER)}})

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(5)


class DeadLetterSink(DynamicSink[DeadLetter]):
    def __init__(self, data_dir: Path, brokers: str | None = None, tz: str = "UTC"):
        self.data_dir = data_dir
        self.brokers = brokers
        self.tz = tz

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.data_dir, self.brokers, self.tz)
