"""What found a post travels with it: the ``query`` column, and ``{query}`` folders for its
media. The data scientist's keyword images land in one folder per keyword, ``data:`` URLs
decoded like any other."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import Publisher, ensure_topics
from shoal.fetch.policy import FetchConfig
from shoal.model import RawPost
from tests.loopback_server import MediaServer
from tests.pipeline import read_csv_xz, run_flow


def _png(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_keyword_images_land_in_one_folder_per_keyword(tmp_path: Path) -> None:
    server = MediaServer(latency=0.0).start()
    try:
        base = f"http://img.test:{server.port}"
        inline = "data:image/png;base64," + base64.b64encode(_png("red")).decode()
        results = [
            ("bike lane", f"{base}/photo/a.jpg"),
            ("bike lane", inline),
            ("saccage", f"{base}/photo/b.jpg"),
            # The same image found by a second keyword: one request, a file in both folders.
            ("saccage", f"{base}/photo/a.jpg"),
        ]
        with EmbeddedBroker() as broker:
            ensure_topics(broker.bootstrap, 1)
            pub = Publisher(broker.bootstrap, "images")
            for n, (keyword, url) in enumerate(results):
                payload = {"id": f"r{n}", "image": url, "title": f"result {n}", "query": keyword,
                           "url": "https://example.org/page", "found_at": "2026-12-01T10:00:00Z"}
                pub.post(RawPost("images", f"r{n}", "image-search", payload, f"test:{n}"))
            pub.close()
            fetch = FetchConfig(throttle=0.0, resolve={"img.test": "127.0.0.1"},
                                folder_strategy="flat",
                                filename_template="{query}/{post_id}.{ext}")
            run_flow(broker.bootstrap, tmp_path / "d", media=True, fetch=fetch,
                     reseal_interval=0.2)
    finally:
        server.stop()
    requests = server.log
    (posts_file,) = (tmp_path / "d" / "images").glob("*/*_posts.csv.xz")
    posts = {r["id"]: r for r in read_csv_xz(posts_file)}
    assert {pid: r["query"] for pid, r in posts.items()} == {
        "r0": "bike lane", "r1": "bike lane", "r2": "saccage", "r3": "saccage"}
    (media_file,) = (tmp_path / "d" / "images").glob("*/*_media.csv.xz")
    rows = {r["post_id"]: r for r in read_csv_xz(media_file)}
    assert all(r["sha256"] and not r["error"] for r in rows.values()), rows
    assert {pid: r["path"] for pid, r in rows.items()} == {
        "r0": "media/bike_lane/r0.jpg", "r1": "media/bike_lane/r1.png",
        "r2": "media/saccage/r2.jpg", "r3": "media/saccage/r3.jpg"}
    assert (tmp_path / "d" / rows["r1"]["path"]).read_bytes() == _png("red")
    first, again = (tmp_path / "d" / rows["r0"]["path"]), (tmp_path / "d" / rows["r3"]["path"])
    assert first.read_bytes() == again.read_bytes() and rows["r3"]["sha256"] == rows["r0"]["sha256"]
    assert first.stat().st_ino == again.stat().st_ino  # a hard link: stored once on disk
    assert len(requests) == 2, requests  # a.jpg asked once, b.jpg once
