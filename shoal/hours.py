"""Which hour a post belongs to, and what that hour's files are called.

An hour is identified by the UTC instant it starts at (an ``int`` of epoch seconds), never by
its name: in a zone with summer time the autumn hour that happens twice has two distinct
starts but the same wall-clock name, so the *name* gets a suffix for the second occurrence
(``2021-10-31_02`` then ``2021-10-31_02b``), and the spring hour that never happens has no
start at all, so no file can be named after it. Every name still sorts in time order within
its day because ``02`` < ``02b`` < ``03``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
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


def day_hour_names(day: str, tz_name: str = "UTC") -> list[str]:
    """The names of the hours that happen on local ``day`` (``YYYY-mm-dd``), in time order.

    24 on most days; 23 on the spring day of a summer-time change (its skipped hour never
    happens) and 25 on the autumn day (``02`` then ``02b``). A day report's axis is these
    hours: an hour that never happened is no gap, and an unsealed repeated hour is one.
    """
    tz = zone(tz_name)
    first = date.fromisoformat(day)
    start = hour_start(datetime(first.year, first.month, first.day, tzinfo=tz), tz)
    end = hour_start(datetime.combine(first + timedelta(days=1), datetime.min.time(), tz), tz)
    return [hour_name(at, tz_name).label for at in range(start, end, HOUR)
            if hour_name(at, tz_name).day == day]


def iso_utc(ts: datetime) -> str:
    return ts.astimezone(UTC).replace(microsecond=0).isoformat()


# Real UTC offsets run from -12:00 to +14:00. Anything beyond +-14:00 is not a place on Earth
# but a corrupted value, and applying it would move a post by up to days into the wrong hour.
MAX_UTC_OFFSET = timedelta(hours=14)
_OFFSET = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?")


def utc_offset(text: str) -> timedelta:
    """``+hh:mm``, ``+hhmm``, ``+hh`` or ``Z`` -> the offset it names.

    Raises ``ValueError`` naming the problem for a malformed offset (minutes past 59,
    seconds, stray characters) or one beyond +-14:00. :func:`datetime.fromisoformat` alone is
    not enough: it takes ``+05:99`` as ``+06:39`` and anything up to +-23:59.
    """
    if text in ("Z", "z"):
        return timedelta(0)
    match = _OFFSET.fullmatch(text)
    if match is None:
        raise ValueError(f"malformed UTC offset {text!r}")
    sign, hours, minutes = match[1], int(match[2]), int(match[3] or 0)
    offset = timedelta(hours=hours, minutes=minutes)
    if hours > 14 or offset > MAX_UTC_OFFSET:
        raise ValueError(f"UTC offset {text!r} out of range (beyond +-14:00)")
    if minutes > 59:
        raise ValueError(f"malformed UTC offset {text!r} (minutes past 59)")
    return -offset if sign == "-" else offset


def _offset_text(value: str) -> str:
    """The offset at the end of an ISO date-time: from the last sign after the time starts."""
    if value.endswith(("Z", "z")):
        return ""
    time_at = max(value.find("T"), value.find("t"), value.find(" "))
    at = max(value.rfind("+"), value.rfind("-"))
    return value[at:] if 0 < time_at < at else ""


def parse_iso(value: str) -> datetime:
    """Parse ISO 8601 (with ``Z`` or an offset) into an aware UTC datetime.

    The one place a textual time is read, for every platform's normaliser and the CLI:
    raises ``ValueError`` for an unparseable value or an impossible offset (see
    :func:`utc_offset`), so that no reader moves a post by an offset nobody lives at.
    """
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        offset = _offset_text(value)
        if offset:
            utc_offset(offset)  # a clearer reason when it is the offset that is wrong
        raise
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    offset = _offset_text(value)
    if offset:
        utc_offset(offset)
    return dt.astimezone(UTC)


def parse_day(text: str) -> date:
    """A calendar day written ``YYYY-MM-DD`` or ``YYYYMMDD``; ValueError names the text."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date (YYYY-MM-DD): {text!r}")
