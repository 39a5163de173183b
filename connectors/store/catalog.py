"""The DuckDB query surface: hive-partitioned Parquet per sealed hour, and views over it.

``shoal.duckdb`` holds only views over ``_parquet/<table>/platform=/day=/hour=/data.parquet``.
The writer publishes each hour's Parquet file under a temporary name and renames it, and
opens the catalog file only to (re)create the views, so readers (``duckdb -readonly``, ``shoal
query``) are never locked out while the dataflow keeps sealing hours.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb

from connectors.store.layout import PARQUET, HourPaths
from shoal.merge import HourSummary
from shoal.model import ENGAGEMENT_COLUMNS, MEDIA_FILE_COLUMNS, POST_COLUMNS, USER_COLUMNS

CATALOG = "shoal.duckdb"
TABLES = ("posts", "users", "media", "reports")
SCHEMA_PARTITION = "platform=_schema/day=_schema/hour=_schema"
# Views over the tables' views: per TikTok query, its posts and its downloaded videos
# (what they mean, and the files that mirror them: connectors/store/id_lists.py).
POST_IDS, VIDEO_IDS = "tiktok_post_ids", "tiktok_video_ids"
DERIVED_VIEWS: dict[str, str] = {
    POST_IDS: """
        WITH found AS (
            SELECT id AS post_id, query, query LIKE '@%' AS by_user,
                   string_split(lower(coalesce(hashtags, '')), '|') AS tags
            FROM posts WHERE platform = 'tiktok' AND coalesce(query, '') <> ''
        ),
        hashtag_queries AS (SELECT DISTINCT query FROM found WHERE NOT by_user)
        SELECT DISTINCT query, post_id FROM (
            SELECT query, post_id FROM found
            UNION ALL
            SELECT h.query, f.post_id FROM found f JOIN hashtag_queries h
                ON NOT f.by_user AND list_contains(f.tags, lower(h.query))
        )""",
    VIDEO_IDS: f"""
        SELECT DISTINCT p.query, p.post_id, m.path
        FROM {POST_IDS} p JOIN media m ON m.platform = 'tiktok' AND m.post_id = p.post_id
        WHERE m.type = 'video' AND coalesce(m.path, '') <> ''
            AND coalesce(m.mimetype, '') LIKE 'video/%'""",
}

_BIGINT = {
    "author.public_metrics.followers_count",
    "author.public_metrics.following_count",
    "author.public_metrics.tweet_count",
    "author.public_metrics.listed_count",
    "followers_count",
    "following_count",
    "tweet_count",
    "listed_count",
    "position",
    "http_status",
    "attempts",
    "bytes",
    *ENGAGEMENT_COLUMNS,
}
_DOUBLE = {"geo.lat", "geo.lng"}
_TIMESTAMP = {"created_at", "retrieved_at", "author.created_at", "fetched_at"}
_BOOLEAN = {"author.verified", "author.protected", "verified", "protected"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _select(columns: tuple[str, ...]) -> str:
    parts = []
    for c in columns:
        if c in _BIGINT:
            parts.append(f"TRY_CAST({_q(c)} AS BIGINT) AS {_q(c)}")
        elif c in _TIMESTAMP:
            parts.append(f"TRY_CAST({_q(c)} AS TIMESTAMPTZ) AS {_q(c)}")
        elif c in _BOOLEAN:
            parts.append(f"TRY_CAST({_q(c)} AS BOOLEAN) AS {_q(c)}")
        elif c in _DOUBLE:
            parts.append(f"TRY_CAST({_q(c)} AS DOUBLE) AS {_q(c)}")
        else:
            parts.append(_q(c))
    return ", ".join(parts)


_COLUMNS: dict[str, tuple[str, ...]] = {
    "posts": POST_COLUMNS,
    "users": USER_COLUMNS,
    "media": MEDIA_FILE_COLUMNS,
}


def _publish(con: duckdb.DuckDBPyConnection, select_sql: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{uuid.uuid4().hex[:8]}.parquet.tmp")
    try:
        con.execute(f"COPY ({select_sql}) TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
        os.replace(tmp, target)
    except BaseException:  # a full disk must not keep the half-written copy
        tmp.unlink(missing_ok=True)
        raise


class Catalog:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.con = duckdb.connect(config={"threads": 1, "preserve_insertion_order": True})

    def ensure(self) -> None:
        """Seed an empty file per table (so views work before the first seal) and the views."""
        root = self.data_dir / PARQUET
        for table in TABLES:
            seed = root / table / SCHEMA_PARTITION / "data.parquet"
            if seed.exists():
                continue
            if table == "reports":
                sql = _empty_reports_sql()
            else:
                cols = ", ".join(f"NULL::VARCHAR AS {_q(c)}" for c in _COLUMNS[table])
                sql = f"SELECT {_select(_COLUMNS[table])} FROM (SELECT {cols}) WHERE false"
            _publish(self.con, sql, seed)
        write_views(self.data_dir)

    def publish_hour(
        self,
        paths: HourPaths,
        posts_csv: bytes,
        users_csv: bytes,
        media_csv: bytes,
    ) -> None:
        """The hour's posts, users and media; its report row is published on its own."""
        for table, data in (("posts", posts_csv), ("users", users_csv), ("media", media_csv)):
            tmp_csv = paths.data_dir / "_work" / f"{uuid.uuid4().hex}.csv"
            tmp_csv.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp_csv.write_bytes(data)
                cols = _COLUMNS[table]
                spec = "{" + ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in cols) + "}"
                src = (
                    f"read_csv({_lit(str(tmp_csv))}, header=true, columns={spec}, "
                    f"quote='\"', escape='\"', auto_detect=false, parallel=false, "
                    f"strict_mode=false, max_line_size=1073741824)"
                )
                _publish(self.con, f"SELECT {_select(cols)} FROM {src}", paths.parquet(table))
            finally:
                tmp_csv.unlink(missing_ok=True)

    def publish_report(self, paths: HourPaths, summary: HourSummary) -> None:
        collectors = ", ".join(f"{_lit(k)}: {v}" for k, v in summary.collectors.items())
        sql = (
            f"SELECT to_timestamp({summary.start}) AS hour_start, "
            f"MAP {{{collectors}}}::MAP(VARCHAR, BIGINT) AS collectors, "
            f"{summary.total}::BIGINT AS total, {summary.diff}::BIGINT AS diff, "
            f"{summary.late}::BIGINT AS late, {summary.users}::BIGINT AS users, "
            f"{summary.media}::BIGINT AS media"
        )
        _publish(self.con, sql, paths.parquet("reports"))

    def close(self) -> None:
        self.con.close()


def _empty_reports_sql() -> str:
    return (
        "SELECT NULL::TIMESTAMPTZ AS hour_start, NULL::MAP(VARCHAR, BIGINT) AS collectors, "
        "NULL::BIGINT AS total, NULL::BIGINT AS diff, NULL::BIGINT AS late, "
        "NULL::BIGINT AS users, NULL::BIGINT AS media WHERE false"
    )


def glob_literal(path: str) -> str:
    """``path`` as a DuckDB glob that matches only itself: ``[``, ``]``, ``*``, ``?`` bracketed.

    The views' glob began with the data dir as given: ``runs/data[1]`` read ``runs/data1``'s
    files (a character class), ``data[1`` none, and ``da*ta`` its neighbours' too.
    """
    return re.sub(r"([\[\]*?])", r"[\1]", path)


def view_sql(data_dir: Path, table: str) -> str:
    glob = glob_literal(str(data_dir.resolve() / PARQUET / table)) + "/*/*/*/*.parquet"
    return (
        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({_lit(glob)}, "
        f"hive_partitioning=true, hive_types_autocast=false, union_by_name=true) "
        f"WHERE platform <> '_schema'"
    )


def write_views(data_dir: Path) -> None:
    """(Re)create the catalog without ever locking it: build a new file, rename it over.

    A reader that has the old file open keeps reading it; the next one opens the new one.
    """
    path = data_dir / CATALOG
    tmp = data_dir / f".{CATALOG}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        con = duckdb.connect(str(tmp))
        try:
            for table in TABLES:
                con.execute(view_sql(data_dir, table))
            for name, select in DERIVED_VIEWS.items():
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {select}")
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    except BaseException:  # a full disk must not keep the half-written copy
        tmp.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{tmp}.wal")


def connect_readonly(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """A query connection over ``data_dir`` that never takes the writer's lock.

    Its views are made here, in memory, over the folder named, rather than read from
    ``shoal.duckdb``: that file names the folder it was written in (DuckDB resolves a
    relative path against the working directory, not the file), so over a copy it read the
    original, and over a moved folder nothing at all.
    """
    con = duckdb.connect()
    made = set()
    for table in TABLES:
        seed = data_dir / PARQUET / table / SCHEMA_PARTITION / "data.parquet"
        if seed.exists():
            con.execute(view_sql(data_dir, table).replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
            made.add(table)
    if {"posts", "media"} <= made:
        for name, select in DERIVED_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {select}")
    return con


def has_sealed(data_dir: Path) -> bool:
    """Has any hour ever been sealed here (is there a catalog to ask)?"""
    return (data_dir / CATALOG).exists() or any(
        (data_dir / PARQUET / table / SCHEMA_PARTITION / "data.parquet").exists()
        for table in TABLES)


def query(data_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = connect_readonly(data_dir)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in (cur.description or [])]
        return names, cur.fetchall()
    finally:
        con.close()
