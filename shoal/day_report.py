"""The day report as data: posts per hour per collector, total, diff, diff %, late, dead letters.

This is the lab's mailed report (``DIR/<platform>/DAY/DAY_report.txt``) rebuilt from the
catalog's ``reports`` rows, plus what a picture needs: every hour of the day on the axis,
the hours nothing was sealed for marked as gaps, so a collector that died at 14:00 or an hour
that never arrived is seen at a glance. Pure: rows in, a report out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shoal.hours import HourName, day_hour_names, hour_name


@dataclass(frozen=True)
class HourRow:
    """One sealed hour of one platform (a row of the ``reports`` view)."""

    platform: str
    hour: str  # the hour's name within its day: "00".."23", "02b" for a repeated hour
    start: int  # UTC epoch seconds
    collectors: Mapping[str, int]
    total: int
    diff: int
    late: int

    @property
    def diff_pct(self) -> float:
        return 100.0 * self.diff / self.total if self.total else 0.0


# The columns of the day tables and of the live page's hours besides the collectors.
COLUMNS = ("platform", "day", "hour", "total", "diff", "diff %", "late")


def collector_column(name: str) -> str:
    """The header of collector ``name``'s column, never one of :data:`COLUMNS`.

    ``total``, ``late`` or ``hour`` are valid collector names: the header then had two
    ``total`` columns, and ``--format json`` (a dict per row) kept one of their numbers, the
    collector's lost; the HTML tables showed two columns alike. (The sealed day report file
    keeps the bare name: its columns are read by position.)
    """
    return f"{name} (collector)" if name in COLUMNS else name


@dataclass(frozen=True)
class DayReport:
    day: str
    platforms: tuple[str, ...]
    collectors: tuple[str, ...]  # every collector seen on the day's platforms, sorted
    hours: tuple[HourRow, ...]  # sealed hours, in time order
    deadletters: Mapping[str, int] = field(default_factory=dict)  # reason -> count (all platforms)
    # The hours the local day has (23, 24 or 25 around a summer-time change); see axis().
    names: tuple[str, ...] = tuple(f"{i:02d}" for i in range(24))

    @property
    def deadletter_total(self) -> int:
        return sum(self.deadletters.values())

    def header(self) -> list[str]:
        multi = len(self.platforms) > 1
        return [*(["platform"] if multi else []), "hour",
                *(collector_column(c) for c in self.collectors), "total", "diff", "diff %", "late"]

    def table(self) -> list[list[str]]:
        """The report's rows as text cells, like the day report file."""
        multi = len(self.platforms) > 1
        out = []
        for h in self.hours:
            cells = [*([h.platform] if multi else []), h.hour]
            cells += [str(h.collectors.get(c, 0)) for c in self.collectors]
            cells += [str(h.total), str(h.diff), f"{h.diff_pct:.2f}", str(h.late)]
            out.append(cells)
        return out

    def values(self) -> list[list[str | int | float]]:
        """:meth:`table` with numbers as numbers (diff % rounded to 2 places), for JSON."""
        multi = len(self.platforms) > 1
        out: list[list[str | int | float]] = []
        for h in self.hours:
            cells: list[str | int | float] = [*([h.platform] if multi else []), h.hour]
            cells += [h.collectors.get(c, 0) for c in self.collectors]
            cells += [h.total, h.diff, round(h.diff_pct, 2), h.late]
            out.append(cells)
        return out

    def axis(self) -> list[str]:
        """Hour names for a chart: every hour the day has in its zone, plus any sealed one.

        With the zone the hours were named in, the spring hour that never happens is not on
        the axis (it was shaded as "nothing sealed", a dead collector that was not), and
        the repeated autumn hour ("02b") is, sealed or not.
        """
        return sorted(set(self.names) | {h.hour for h in self.hours})

    def series(self) -> dict[str, list[int | None]]:
        """Posts per hour per collector along :meth:`axis`; ``None`` where no hour was sealed
        (a gap: nothing arrived, or sealing is behind), 0 where a collector delivered none."""
        axis = self.axis()
        sealed: dict[str, list[HourRow]] = {}
        for h in self.hours:
            sealed.setdefault(h.hour, []).append(h)
        out: dict[str, list[int | None]] = {}
        for c in self.collectors:
            values: list[int | None] = []
            for name in axis:
                rows = sealed.get(name)
                values.append(None if rows is None else sum(r.collectors.get(c, 0) for r in rows))
            out[c] = values
        return out

    def misnamed(self, tz: str) -> list[str]:
        """Sealed hours whose name is not what ``tz`` calls their start: the hours were named
        in another zone (``--tz`` of ``up``/``process``), so the axis in ``tz`` is wrong."""
        return [h.hour for h in self.hours
                if hour_name(h.start, tz) != HourName(self.day, h.hour)]

    def gaps(self) -> list[str]:
        """Hours of the axis with nothing sealed."""
        present = {h.hour for h in self.hours}
        return [name for name in self.axis() if name not in present]


def build(
    day: str, rows: Iterable[HourRow], deadletters: Mapping[str, int] | None = None,
    tz: str = "UTC",
) -> DayReport:
    """The report of ``day``; ``tz`` is the zone its hours were named in (``--tz``)."""
    ordered = tuple(sorted(rows, key=lambda r: (r.start, r.platform)))
    collectors = sorted({c for r in ordered for c in r.collectors})
    platforms = sorted({r.platform for r in ordered})
    return DayReport(day, tuple(platforms), tuple(collectors), ordered, dict(deadletters or {}),
                     tuple(day_hour_names(day, tz)))
