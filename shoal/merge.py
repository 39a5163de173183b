"""The hour merge: what an hour holds, as an order-free union of everything written for it.

Sealing an hour (``connectors.store.seal``) loads its sealed files and its chunks into an
:class:`HourState` and writes the state back. Every rule here makes the result independent of
the order in which copies, chunks and re-seals arrive: the earliest retrieval of a post wins,
the newest stats of a user, a fetched media row beats an unfetched one. That is what makes
sealing idempotent and replays byte-identical. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

# A post's payload as it came, for the hour's raw archive: (retrieved_at the stage used, post
# format, the Kafka message value, byte for byte). Compared as a tuple to break ties.
RawCopy = tuple[str, str, bytes]


@dataclass
class HourState:
    """Everything an hour holds, as plain strings, keyed for an order-free union."""

    posts: dict[str, dict[str, str]] = field(default_factory=dict)
    # The raw payload of the copy whose row won (see add_post), for the raw archive.
    raw: dict[str, RawCopy] = field(default_factory=dict)
    collectors: dict[str, set[str]] = field(default_factory=dict)
    users: dict[str, dict[str, str]] = field(default_factory=dict)
    media: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    # Posts no copy of which arrived within the allowed lateness (see StageLogic).
    late_ids: set[str] = field(default_factory=set)
    on_time: set[str] = field(default_factory=set)
    late_copies: set[str] = field(default_factory=set)

    @property
    def late(self) -> int:
        return len(self.late_ids)

    def settle_late(self) -> None:
        """A post is late if every copy of it was; an on-time copy anywhere clears it."""
        self.late_ids |= self.late_copies - self.on_time
        self.late_ids -= self.on_time
        self.late_copies.clear()
        self.on_time.clear()

    def add_post(self, row: dict[str, str], collectors: Iterable[str],
                 raw: RawCopy | None = None) -> bool:
        """Merge one copy of a post; True if the id is new to the hour.

        The raw payload kept is the one of the copy whose row wins; between copies with equal
        rows, the smallest ``raw`` tuple (a copy without one loses), so that the archive too
        is the same whatever the order copies arrive in.
        """
        pid = row["id"]
        known = self.posts.get(pid)
        if known is None:
            self.posts[pid] = row
            self.collectors[pid] = set(collectors)
            if raw is not None:
                self.raw[pid] = raw
            return True
        # Copies from different collectors differ in retrieval time and counters; keep the
        # earliest retrieval so the choice does not depend on arrival order.
        if row is not known and row != known:
            if _earlier(row, known):
                self.posts[pid] = row
                if raw is not None:
                    self.raw[pid] = raw
                else:
                    self.raw.pop(pid, None)
        elif raw is not None:
            have = self.raw.get(pid)
            if have is None or raw < have:
                self.raw[pid] = raw
        self.collectors[pid].update(collectors)
        return False

    def add_user(self, row: dict[str, str]) -> None:
        uid = row["id"]
        known = self.users.get(uid)
        # Newest stats win; ties broken by content so the result is order-free.
        if known is None or (row != known and _earlier(known, row)):
            self.users[uid] = row

    def add_media(self, row: dict[str, str]) -> None:
        key = (row["post_id"], int(row["position"] or 0))
        known = self.media.get(key)
        if known is None or _media_rank(row) > _media_rank(known):
            self.media[key] = row

def _dumps(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)

def _earlier(a: dict[str, str], b: dict[str, str]) -> bool:
    """Does ``a`` sort before ``b`` by retrieval time, then content (serialised only on ties)?"""
    ta, tb = a.get("retrieved_at", ""), b.get("retrieved_at", "")
    if ta != tb:
        return ta < tb
    return _dumps(a) < _dumps(b)

def _media_rank(row: dict[str, str]) -> tuple[int, str, bytes]:
    # A fetched result beats an unfetched row; success beats failure; then content order.
    fetched = 1 if row.get("fetched_at") else 0
    ok = 1 if row.get("sha256") else 0
    return (fetched + ok, row.get("fetched_at", ""), _dumps(row))

def sort_ids(ids: Iterable[str]) -> list[str]:
    """Numeric ids numerically (tweet ids), any others after them, lexicographically."""
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))

def collector_counts(combos: dict[str, int], everyone: list[str]) -> tuple[dict[str, int], int]:
    """Unique IDs per collector, and how many IDs not every collector delivered."""
    per: dict[str, int] = dict.fromkeys(everyone, 0)
    for combo, n in combos.items():
        for c in combo.split("|"):
            if c:
                per[c] = per.get(c, 0) + n
    total = sum(combos.values())
    return per, total - combos.get("|".join(sorted(per)), 0)

@dataclass(frozen=True)
class HourSummary:
    platform: str
    start: int
    day: str
    label: str
    collectors: dict[str, int]
    total: int
    diff: int
    late: int
    users: int
    media: int
    resealed: bool
    combos: dict[str, int]
