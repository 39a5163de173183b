"""What the reports and the live page read from the catalog, query by query.

Every function takes a connection from :func:`readonly` (``catalog.connect_readonly``: a
read-only DuckDB connection over ``shoal.duckdb``, which the writer replaces by renaming and
never locks, so readers never wait for it and it never waits for them) and returns plain
rows for the pure modules (``shoal.hashtags``, ``shoal.day_report``, ``shoal.spread``) to
turn into tables. Filters are SQL parameters, never pasted into the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from connectors.store.catalog import connect_readonly
from connectors.store.deadletters import FOLDER, reasons_on
from shoal.day_report import HourRow
from shoal.spread import ImageUse


def readonly(data_dir: Path) -> duckdb.DuckDBPyConnection:
    return connect_readonly(data_dir)


@dataclass(frozen=True)
class PostFilter:
    """Which posts a report looks at: a platform, a creation-time window [since, until)."""

    platform: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    day: str | None = None  # the hourly files' day (partition), e.g. "2021-05-11"
    hour: str | None = None  # the hour's name within ``day`` ("18", "02b")

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        a = f"{alias}." if alias else ""
        parts: list[str] = ["true"]
        params: list[Any] = []
        for column, value in (("platform", self.platform), ("day", self.day),
                              ("hour", self.hour)):
            if value is not None:
                parts.append(f"{a}{column} = ?")
                params.append(value)
        if self.since is not None:
            parts.append(f"{a}created_at >= ?")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"{a}created_at < ?")
            params.append(self.until)
        return " AND ".join(parts), params


def columns(con: duckdb.DuckDBPyConnection, view: str) -> set[str]:
    cur = con.execute(f"SELECT * FROM {view} LIMIT 0")
    return {d[0] for d in cur.description or []}


def hashtag_posts(
    con: duckdb.DuckDBPyConnection, selection: PostFilter, with_text: bool = False
) -> Iterator[tuple[str | None, str | None]]:
    """(hashtags, text) of each distinct selected post; text only when asked for.

    The text is ``full_text`` where the catalog has it: ``text`` is the API's, truncated for
    retweets and long tweets (a retweet is "RT @user: " and 140 characters), so a ``--query``
    word past the cut was never found - in a 1% sample, most of the posts are retweets.
    """
    where, params = selection.where()
    text = "NULL"
    if with_text:
        text = ("any_value(coalesce(full_text, text))" if "full_text" in columns(con, "posts")
                else "any_value(text)")
    cur = con.execute(
        f"SELECT any_value(hashtags), {text} FROM posts WHERE {where} GROUP BY platform, id",
        params,
    )
    while batch := cur.fetchmany(10_000):
        yield from batch


def day_hours(con: duckdb.DuckDBPyConnection, day: str, platform: str | None) -> list[HourRow]:
    """The ``reports`` rows of a day (every platform, or one)."""
    where, params = PostFilter(platform=platform, day=day).where()
    rows = con.execute(
        "SELECT platform, hour, epoch(hour_start)::BIGINT, collectors, total, diff, late "
        f"FROM reports WHERE {where} ORDER BY hour_start, platform", params,
    ).fetchall()
    return [HourRow(p, h, int(start), dict(coll or {}), int(total), int(diff), int(late))
            for p, h, start, coll, total, diff, late in rows]


def latest_hours(con: duckdb.DuckDBPyConnection, limit: int = 24) -> list[dict[str, Any]]:
    """The newest sealed hours of every platform, newest first."""
    rows = con.execute(
        "SELECT platform, day, hour, epoch(hour_start)::BIGINT, collectors, total, diff, late "
        "FROM reports ORDER BY hour_start DESC, platform LIMIT ?", [limit],
    ).fetchall()
    return [{"platform": p, "day": d, "hour": h, "start": int(s), "collectors": dict(c or {}),
             "total": int(t), "diff": int(df), "late": int(lt)}
            for p, d, h, s, c, t, df, lt in rows]


def sealed_per_platform(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int]]:
    """(platform, hours sealed, posts) per platform."""
    rows = con.execute(
        "SELECT platform, count(*), sum(total)::BIGINT FROM reports GROUP BY platform "
        "ORDER BY platform"
    ).fetchall()
    return [(p, int(n), int(t or 0)) for p, n, t in rows]


def platforms(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The platforms with a sealed hour."""
    return [str(p) for (p,) in con.execute(
        "SELECT DISTINCT platform FROM reports ORDER BY platform").fetchall()]


def newest_hour(con: duckdb.DuckDBPyConnection) -> tuple[str, str] | None:
    """(day, hour) of the most recently started sealed hour, if any."""
    row = con.execute("SELECT day, hour FROM reports ORDER BY hour_start DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "" if value is None else str(value)


def image_uses(con: duckdb.DuckDBPyConnection, selection: PostFilter) -> list[ImageUse]:
    """Fetched images with a perceptual hash, each with its post's facts.

    Catalogs sealed before hashes existed have no ``phash`` column: no images, not an error.
    """
    if "phash" not in columns(con, "media"):
        return []
    where, params = selection.where("p")
    rows = con.execute(
        "SELECT m.platform, m.post_id, coalesce(p.author_id, p.\"author.username\", ''), "
        "p.created_at, coalesce(p.hashtags, ''), m.phash, coalesce(m.sha256, ''), "
        "coalesce(m.path, '') FROM media m JOIN posts p ON p.platform = m.platform "
        f"AND p.id = m.post_id WHERE coalesce(m.phash, '') <> '' AND {where}", params,
    ).fetchall()
    return [ImageUse(pl, pid, author, _iso(created), tags, ph, sha, path)
            for pl, pid, author, created, tags, ph, sha, path in rows]


def media_path(con: duckdb.DuckDBPyConnection, sha256: str) -> str | None:
    row = con.execute(
        "SELECT path FROM media WHERE sha256 = ? AND coalesce(path, '') <> '' LIMIT 1", [sha256]
    ).fetchone()
    return str(row[0]) if row else None


def fetch_outcomes(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(host, outcome, media rows): ``ok``, the error's kind, or ``not fetched``."""
    rows = con.execute(
        "SELECT coalesce(nullif(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://([^/:?#]+)', 1),"
        " ''), 'data') AS host, CASE WHEN fetched_at IS NULL THEN 'not fetched' "
        "WHEN coalesce(error, '') = '' THEN 'ok' ELSE split_part(error, ':', 1) END AS outcome,"
        " count(*) FROM media GROUP BY ALL ORDER BY host, outcome"
    ).fetchall()
    return [(h, o, int(n)) for h, o, n in rows]


def deadletters_by_reason(data_dir: Path, day: str | None = None) -> dict[str, int]:
    """Dead letters filed under ``day`` (every day if None), by reason."""
    root = data_dir / FOLDER
    days = [day] if day else sorted(p.name for p in root.iterdir() if p.is_dir()) \
        if root.is_dir() else []
    total: dict[str, int] = {}
    for d in days:
        for reason, n in reasons_on(data_dir, d).items():
            total[reason] = total.get(reason, 0) + n
    return total
