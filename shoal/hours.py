"""Which hour a post belongs to, and what that hour's files are called.

An hour is identified by the UTC instant it starts at (an ``int`` of epoch seconds), never by
its name: in a zone with summer time the autumn hour that happens twice has two distinct
starts but the same wall-clock name, so the *name* gets a suffix for the second occurrence
(``2021-10-31_02`` then ``2021-10-31_02b``), and the spring hour that never happens has no
start at all, so no file can be named after it. Every name still sorts in time order within
its day because ``02`` < ``02b`` < ``03``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

HOUR = 3600


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """``UTC`` or an IANA zone; raises ``ValueError`` with the bad name."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError for odd keys
        raise ValueError(f"unknown time zone {name!r}") from exc


def hour_start(ts: datetime, tz: tzinfo = UTC) -> int:
    """The UTC epoch second at which the local hour containing ``ts`` begins.

    Zones whose offset is not a whole number of hours (India, Nepal) have hours that do not
    start on UTC hour boundaries, so the floor is taken in local time.
    """
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if tz is UTC:
        epoch = int(ts.timestamp())
        return epoch - epoch % HOUR
    local = ts.astimezone(tz)
    floored = local.replace(minute=0, second=0, microsecond=0)
    return int(floored.timestamp())


@dataclass(frozen=True, slots=True)
class HourName:
    day: str  # YYYY-mm-dd
    label: str  # hh, or hhb for the repeated autumn hour

    @property
    def stem(self) -> str:
        """``YYYY-mm-dd_hh``: what the hour's file names start with."""
        return f"{self.day}_{self.label}"


@lru_cache(maxsize=65536)
def hour_name(start: int, tz_name: str = "UTC") -> HourName:
    tz = zone(tz_name)
    local = datetime.fromtimestamp(start, UTC).astimezone(tz)
    label = f"{local.hour:02d}"
    if tz is not UTC:
        # fold=1 marks the second of two identical wall times (the repeated autumn hour).
        earlier = (datetime.fromtimestamp(start, UTC) - timedelta(hours=1)).astimezone(tz)
        if earlier.hour == local.hour and earlier.date() == local.date():
            label += "b"
    return HourName(local.strftime("%Y-%m-%d"), label)


def hour_end(start: int, tz_name: str = "UTC") -> int:
    """The UTC epoch second at which the next local hour begins (always start + 1 h)."""
    del tz_name  # local hours are one real hour long even across a change
    return start + HOUR


def iso_utc(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(microsecond=0).isoformat()


def parse_iso(value: str) -> datetime:
    """Parse ISO 8601 (with ``Z`` or an offset) into an aware UTC datetime."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
