"""Image spread through the real dataflow: copies of a picture group with it, a stranger not.

A loopback media server of ours serves an original picture (made with Pillow: a gradient
and shapes) and copies of it (re-encoded JPEG quality 60, resized to half, cropped by 5 %)
and a different picture. Generated posts point at them; the real pipeline (broker, Bytewax
flow, fetch engine) downloads every file, hashes it, seals it; ``shoal report images``
must then put the original and its three copies in one group and the stranger alone, with
exact counts of posts, authors and files.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from PIL import Image

from connectors.fetch.phash import phash_of_bytes
from shoal.app.cli import main
from shoal.fetch.policy import FetchConfig
from shoal.spread import hamming, parse_hash
from tests.images import HOST, PictureServer, variants
from tests.pipeline import pipeline, read_csv_xz
from tests.posts import Post, write_pages

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


# (post, author, picture, hashtags): the original is posted twice, by two authors.
POSTS = [
    ("alice", "original.png", ("Spread", "paris")),
    ("bob", "q60.jpg", ("spread", "Velo")),
    ("carol", "half.jpg", ("SPREAD",)),
    ("alice", "crop.jpg", ("spread", "paris")),
    ("dave", "stranger.jpg", ("other",)),
    ("erin", "original.png", ("spread", "PARIS")),
]


@pytest.fixture(scope="module")
def spread_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Post]]]:
    root = tmp_path_factory.mktemp("spread")
    with PictureServer() as server:
        posts = [Post(T0 + timedelta(minutes=5 * i), author, f"look {i}", tags,
                      (server.url(picture),), seq=i)
                 for i, (author, picture, tags) in enumerate(POSTS)]
        feed = write_pages(root / "feed.jsonl", posts)
        fetch = FetchConfig(resolve={HOST: "127.0.0.1"}, throttle=0.0, domain_parallelism=4,
                            retries=1)
        pipeline(root / "out", [("search", feed)], partitions=2, media=True, fetch=fetch)
        # Every distinct picture was asked for once (the original's two posts share one URL).
        assert server.hits == dict.fromkeys(server.files, 1)
    yield root / "out", posts


def test_every_fetched_image_has_its_phash_in_the_media_rows(
    spread_dir: tuple[Path, list[Post]],
) -> None:
    out, posts = spread_dir
    rows = [r for p in sorted(out.glob("twitter/*/*_media.csv.xz")) for r in read_csv_xz(p)]
    assert len(rows) == len(posts)
    files = variants()
    for row in rows:
        name = row["url"].rsplit("/", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{16}", row["phash"]), row
        # The hash the engine stored is the hash of the bytes the server sent.
        assert row["phash"] == phash_of_bytes(files[name])
        assert list(row)[-2:] == ["phash", "resolved"]  # appended: the others keep their places
    # The media view has it too.
    code, stdout = _run(["query", "--data-dir", str(out), "--format", "json",
                         "SELECT count(*) AS n FROM media WHERE length(phash) = 16"])
    assert code == 0 and orjson.loads(stdout.splitlines()[0])["n"] == len(posts)


def test_copies_group_with_their_original_and_the_stranger_stays_alone(
    spread_dir: tuple[Path, list[Post]], tmp_path: Path,
) -> None:
    out, posts = spread_dir
    files = variants()
    hashes = {n: parse_hash(phash_of_bytes(b)) for n, b in files.items()}
    # The copies are near the original, the stranger far: the premise of the grouping.
    assert all(hamming(hashes["original.png"], hashes[n]) <= 8
               for n in ("q60.jpg", "half.jpg", "crop.jpg"))
    assert hamming(hashes["original.png"], hashes["stranger.jpg"]) > 8

    page = tmp_path / "images.html"
    code, stdout = _run(["report", "images", "--data-dir", str(out), "--format", "json",
                         "--html", str(page)])
    assert code == 0
    groups = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(groups) == 2
    big, alone = groups
    assert big["posts"] == 5  # the original twice, and its three copies
    assert big["authors"] == 4  # alice twice
    assert big["files"] == 4
    assert big["platforms"] == "twitter"
    assert big["first seen"] == "2024-03-01T10:00:00Z"
    assert big["last seen"] == "2024-03-01T10:25:00Z"
    assert big["top hashtags"].startswith("#spread(5) #paris(3)")
    # The representative is the file most posts used: the original.
    assert big["representative"].endswith(".png")
    assert alone["posts"] == 1 and alone["authors"] == 1 and alone["files"] == 1
    assert alone["top hashtags"] == "#other(1)"
    stranger = next(p for p in posts if p.photos[0].endswith("stranger.jpg"))
    assert alone["representative"].endswith(".jpg") and stranger.author == "dave"

    # A distance of 0 splits the group into its distinct hashes (the crop differs).
    code, stdout = _run(["report", "images", "--data-dir", str(out), "--format", "json",
                         "--distance", "0"])
    sizes = sorted(orjson.loads(line)["posts"] for line in stdout.splitlines())
    twins = sum(hashes[n] == hashes["original.png"] for n in files) - 1  # same hash exactly
    assert code == 0 and len(sizes) == len(set(hashes.values()))
    assert max(sizes) == 2 + twins  # the original's two posts, and its exact-hash copies

    # The page shows one thumbnail per group, each a decodable JPEG.
    html = page.read_text()
    thumbs = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(thumbs) == 2
    for data in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "JPEG" and max(img.size) <= 160


def _run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()
