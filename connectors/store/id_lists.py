"""Per TikTok query, the IDs of its posts and of its downloaded videos: views and files.

The people who collected TikTok per hashtag kept, for each hashtag, the list of post IDs
they had and the list of videos they had downloaded. Here both lists are derived from the
sealed hours, so they are always what the data dir holds, and exist twice:

* DuckDB views in the catalog (``shoal query``, ``duckdb shoal.duckdb``; their SQL is
  ``connectors.store.catalog.DERIVED_VIEWS``):

  - ``tiktok_post_ids(query, post_id)``: every TikTok post under the query that found it
    (``london``, ``@alice``); a post found by a hashtag query is also listed under every
    other hashtag query whose hashtag it carries (the collector publishes a video found by
    two hashtags once, under the first; it belongs to both);
  - ``tiktok_video_ids(query, post_id, path)``: those of them whose video was downloaded
    (a media row of type ``video`` with a stored file that is a video, ``mimetype``
    ``video/*``: a video page stored in its place is not a video; ``path`` is relative to
    the data dir);

* files, ``DIR/ids/tiktok/<query>/posts.txt`` and ``videos.txt``: the same IDs, one a line,
  sorted (numerically), each once. They are rewritten after TikTok hours are sealed (by
  the dataflow's sealer once none of its TikTok seals is under way: a replay's burst of
  hours is read once, not once per hour) and when the dataflow starts, each atomically and
  only when its content changed, from the sealed data alone: a crash at any point and a
  restart leave whole files that never hold a line twice. ``<query>`` is
  :func:`shoal.names.query_folder` of the query.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from connectors.store.catalog import DERIVED_VIEWS, POST_IDS, VIDEO_IDS, view_sql
from connectors.store.disk import atomic_write
from shoal.merge import sort_ids
from shoal.names import query_folder

FOLDER = Path("ids") / "tiktok"


def id_lists(data_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``{query: (post ids, downloaded video ids)}`` from the sealed hours, each sorted."""
    con = duckdb.connect(config={"threads": 1})
    try:
        for table in ("posts", "media"):
            con.execute(view_sql(data_dir, table))
        for name, select in DERIVED_VIEWS.items():
            con.execute(f"CREATE VIEW {name} AS {select}")
        out: dict[str, tuple[list[str], list[str]]] = {}
        for query, post_id in con.execute(f"SELECT query, post_id FROM {POST_IDS}").fetchall():
            out.setdefault(query, ([], []))[0].append(post_id)
        for query, post_id in con.execute(
                f"SELECT DISTINCT query, post_id FROM {VIDEO_IDS}").fetchall():
            out.setdefault(query, ([], []))[1].append(post_id)
    except duckdb.IOException:  # nothing sealed yet: no Parquet file to read
        return {}
    finally:
        con.close()
    return {q: (sort_ids(set(p)), sort_ids(set(v))) for q, (p, v) in out.items()}


def write_id_files(data_dir: Path) -> int:
    """Bring ``DIR/ids/tiktok/<query>/{posts,videos}.txt`` up to date with the sealed hours;
    returns how many files were (re)written. Callers serialise it (the reports lock)."""
    written = 0
    for query, (posts, videos) in id_lists(data_dir).items():
        folder = data_dir / FOLDER / query_folder(query)
        for name, ids in (("posts.txt", posts), ("videos.txt", videos)):
            path = folder / name
            data = "".join(f"{i}\n" for i in ids).encode()
            if path.exists() and path.read_bytes() == data:
                continue
            atomic_write(path, data)
            written += 1
    return written
