"""Per TikTok query, the IDs of its posts and of its downloaded videos, as DuckDB views and
as files, through the real dataflow with videos fetched from a loopback media server.

Posts are web itemStructs (the Zeeschuimer fixture's), each with the query that found it:
two hashtags, a video carrying both (published once, under the first), a video whose file
cannot be fetched, one whose stored file is not a video, and a user's video that carries one
of the hashtags.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import Publisher, ensure_topics
from connectors.store.catalog import query
from connectors.store.id_lists import write_id_files
from shoal.fetch.policy import FetchConfig
from shoal.merge import sort_ids
from shoal.model import RawPost
from tests.loopback_server import MediaServer
from tests.pipeline import run_flow


def items(fixtures: Path) -> list[dict[str, Any]]:
    path = (fixtures / "tiktok" / "jorisheijkant__zeeschuimer-decoder" / "test-files"
            / "tiktok-test.lines-001-064.ndjson")
    return [json.loads(line)["data"] for line in path.read_text().splitlines()[:12]]


def post(template: dict[str, Any], n: int, query: str, tags: list[str], video: str) -> RawPost:
    item = copy.deepcopy(template)
    vid = str(7310000000000000000 + n)
    item.update(id=vid, createTime=1733000000 + 60 * n, query=query,
                desc=" ".join(f"#{t}" for t in tags),
                textExtra=[{"hashtagName": t, "type": 1} for t in tags])
    item["video"] = {**item["video"], "id": vid, "playAddr": video, "downloadAddr": ""}
    return RawPost("tiktok", vid, "tiktok-item", item, source=f"test:{query}")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_post_and_video_ids_per_query(fixtures: Path, tmp_path: Path) -> None:
    server = MediaServer(latency=0.0).start()
    base = f"http://v.test:{server.port}/video"
    t = items(fixtures)
    posts = [
        post(t[0], 1, "london", ["london"], f"{base}/1.mp4"),
        post(t[1], 2, "london", ["london", "paris"], f"{base}/2.mp4"),  # both hashtags
        post(t[2], 3, "london", ["london"], "http://v.test:9/video/3.mp4"),  # never fetched
        post(t[3], 4, "paris", ["paris", "fyp"], f"{base}/4.mp4"),
        post(t[4], 5, "paris", ["Paris"], f"{base}/5.mp4"),
        post(t[5], 6, "@alice", ["london"], f"{base}/6.mp4"),  # a user's, tagged london
        post(t[7], 8, "paris", ["paris"], f"{base}/8.jpg"),  # stored, but not a video
    ]
    data = tmp_path / "data"
    fetch = FetchConfig(throttle=0.0, resolve={"v.test": "127.0.0.1"}, retries=0,
                        folder_strategy="flat", filename_template="{query}/{post_id}.{ext}")
    try:
        with EmbeddedBroker() as broker:
            ensure_topics(broker.bootstrap, 1)
            pub = Publisher(broker.bootstrap, "tt")
            for p in posts:
                pub.post(p, "2024-12-01T00:00:00Z")
            pub.flush()
            run_flow(broker.bootstrap, data, media=True, fetch=fetch, reseal_interval=0.2)
            ids = {n: str(7310000000000000000 + n) for n in range(1, 9)}

            # The views, as `shoal query` reads them.
            _, rows = query(data, "SELECT query, post_id FROM tiktok_post_ids ORDER BY ALL")
            assert rows == sorted([("london", ids[1]), ("london", ids[2]), ("london", ids[3]),
                                   ("paris", ids[2]), ("paris", ids[4]), ("paris", ids[5]),
                                   ("paris", ids[8]), ("@alice", ids[6])])
            _, rows = query(data, "SELECT query, post_id, path FROM tiktok_video_ids "
                                  "ORDER BY ALL")
            assert [(q, i) for q, i, _p in rows] == sorted(
                [("london", ids[1]), ("london", ids[2]), ("paris", ids[2]), ("paris", ids[4]),
                 ("paris", ids[5]), ("@alice", ids[6])])
            for _q, _i, path in rows:
                assert (data / path).read_bytes().startswith(b"\x00\x00\x00\x18ftyp")

            # The files mirror them, one folder per query.
            root = data / "ids" / "tiktok"
            assert sorted(p.name for p in root.iterdir()) == ["@alice", "london", "paris"]
            assert lines(root / "london" / "posts.txt") == [ids[1], ids[2], ids[3]]
            assert lines(root / "london" / "videos.txt") == [ids[1], ids[2]]
            assert lines(root / "paris" / "posts.txt") == [ids[2], ids[4], ids[5], ids[8]]
            assert lines(root / "paris" / "videos.txt") == [ids[2], ids[4], ids[5]]
            assert lines(root / "@alice" / "videos.txt") == [ids[6]]

            # A crash that left a list half-written (a repeated line, a missing file), a new
            # post, and a restart over the same topic: whole lists again, each line once.
            (root / "london" / "posts.txt").write_text(f"{ids[1]}\n{ids[1]}\n{ids[2]}")
            (root / "paris" / "videos.txt").unlink()
            pub.post(post(t[6], 7, "london", ["london"], f"{base}/7.mp4"),
                     "2024-12-01T00:00:00Z")
            pub.close()
            run_flow(broker.bootstrap, data, media=True, fetch=fetch, reseal_interval=0.2)
    finally:
        server.stop()
    assert lines(root / "london" / "posts.txt") == [ids[1], ids[2], ids[3], ids[7]]
    assert lines(root / "london" / "videos.txt") == [ids[1], ids[2], ids[7]]
    assert lines(root / "paris" / "videos.txt") == [ids[2], ids[4], ids[5]]
    for path in root.glob("*/*.txt"):
        listed = lines(path)
        assert listed == sort_ids(set(listed)), path
    assert write_id_files(data) == 0  # nothing left to bring up to date


def test_a_burst_of_tiktok_seals_rewrites_the_lists_once_at_its_end(
        fixtures: Path, tmp_path: Path) -> None:
    """Each rewrite of the ID files reads every TikTok hour sealed so far: rewritten after
    every seal, a replay of n hours would read n^2 hours. The sealer rewrites them once its
    TikTok seals under way are over: never while the burst's hours are still coming in, and
    at its end they hold every post of every hour."""
    import orjson

    from connectors.store.catalog import Catalog
    from connectors.store.chunks import write_chunk
    from flows.config import FlowConfig
    from flows.seal import SealLogic
    from flows.stage import ChunkFact
    from shoal import chunks
    from shoal.hours import HOUR, hour_start, zone
    from shoal.normalise import normalise
    from shoal.options import FlowSettings, MediaSettings

    data = tmp_path / "data"
    t = items(fixtures)
    hours: list[int] = []
    posts: list[str] = []
    for n in range(8):  # eight hours, one post each
        rec = post(t[n % len(t)], n, "london", ["london"], f"http://v.test/{n}.mp4")
        assert isinstance(rec.payload, dict)
        rec.payload["createTime"] = 1733000000 + HOUR * n
        norm = normalise("tiktok-item", rec.payload, "2024-12-01T00:00:00+00:00")
        start = hour_start(norm.created_at, zone("UTC"))
        write_chunk(data, "tiktok", start, "p0", [chunks.post_line(
            "tt", norm.post, user=norm.user, media=[m.row() for m in norm.media],
            raw=orjson.dumps(rec.payload), fmt="tiktok-item",
            retrieved="2024-12-01T00:00:00+00:00")])
        hours.append(start)
        posts.append(norm.id)
    Catalog(data).ensure()
    listed = data / "ids" / "tiktok" / "london" / "posts.txt"
    cfg = FlowConfig(data_dir=data, brokers="unused:9092", partitions=1,
                     flow=FlowSettings(lateness=0.0, seal_processes=1),
                     media=MediaSettings(enabled=False))
    seal = SealLogic(cfg, None)
    seen_during: list[list[str] | None] = []
    sealed = list(seal.on_batch([(0, 1, ChunkFact(0, hours[-1] + HOUR,
                                                  tuple(("tiktok", h) for h in hours)))])[0])
    deadline = time.monotonic() + 120
    while len(sealed) < len(hours) and time.monotonic() < deadline:
        # What a reader finds in the list while the burst's seals come in, one at a time.
        seen_during.append(lines(listed) if listed.exists() else None)
        sealed += list(seal.on_notify()[0])
        time.sleep(0.02)
    assert sorted(s.start for s in sealed) == hours
    seal.on_eof()
    assert seen_during and all(seen is None for seen in seen_during), seen_during
    assert lines(listed) == sort_ids(posts)
