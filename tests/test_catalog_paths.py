"""The catalog's views over a data dir whose path holds glob characters (``[``, ``*``, ``?``).

The views read ``<data dir>/_parquet/<table>/*/*/*/*.parquet`` with DuckDB's glob, which took
the data dir's own ``[1]`` for a character class: over ``runs/data[1]`` every report, query
and section of ``shoal serve`` failed with "No files found", and over ``data*`` the views
could read a neighbouring data dir's files too.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from connectors.store.catalog import SCHEMA_PARTITION, connect_readonly


def seal(data_dir: Path, posts: int) -> None:
    """A minimal posts table: the schema seed and one hour of ``posts`` rows."""
    con = duckdb.connect()
    for part, n in ((SCHEMA_PARTITION, 0), ("platform=twitter/day=2024-05-02/hour=10", posts)):
        path = data_dir / "_parquet" / "posts" / part / "data.parquet"
        path.parent.mkdir(parents=True)
        con.execute(f"COPY (SELECT range::VARCHAR AS id FROM range({n})) TO '{path}' "
                    "(FORMAT parquet)")
    con.close()


@pytest.mark.parametrize("name", ["data[1]", "data[1", "da*ta", "data?"])
def test_a_data_dir_with_glob_characters_reads_its_own_files(tmp_path: Path, name: str) -> None:
    seal(tmp_path / name, 3)
    seal(tmp_path / "data1", 5)  # what data[1] matched as a pattern
    seal(tmp_path / "daXta", 7)  # what da*ta matched too
    con = connect_readonly(tmp_path / name)
    try:
        assert con.execute("SELECT count(*) FROM posts").fetchone() == (3,)
    finally:
        con.close()
