"""``shoal report hashtags`` over data dirs made by the real pipeline.

The expected table is counted here straight from the sealed hourly CSV files (not through
the catalog or ``shoal.hashtags``): per distinct post, its hashtags case-folded, counted
once; the ratio is that count over the number of selected posts.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from PIL import Image

from shoal.app.cli import main
from shoal.charts import HASHTAG_SIZE
from tests.pipeline import pipeline, read_csv_xz
from tests.posts import Post, write_pages

T0 = datetime(2023, 6, 1, 9, 0, tzinfo=UTC)
# Case variants that must count as one hashtag each (Unicode case folding: ß folds to ss).
TAGS = ("London", "london", "LONDON", "Straße", "STRASSE", "été", "ÉTÉ", "velo", "Velo",
        "paris", "kpop", "Brexit", "ΣΊΣΥΦΟΣ", "σίσυφος")
WORDS = ("bike", "BIKE lane", "rain", "café", "street", "Bike")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def report(data_dir: Path, *extra: str) -> list[dict[str, object]]:
    code, out, err = run(["report", "hashtags", "--data-dir", str(data_dir), "--format", "json",
                          "--top", "100000", *extra])
    assert code == 0, err
    return [orjson.loads(line) for line in out.splitlines()]


def sealed_posts(data_dir: Path) -> list[dict[str, str]]:
    """Every sealed post of every platform, once per (platform, id)."""
    seen: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted(data_dir.glob("*/*/*_*.csv.xz")):
        if not path.name.endswith(("_tweets.csv.xz", "_posts.csv.xz")):
            continue
        for row in read_csv_xz(path):
            seen.setdefault((path.parts[-3], row["id"]), {**row, "_platform": path.parts[-3]})
    return list(seen.values())


def direct_count(rows: list[dict[str, str]], keep: Callable[[dict[str, str], set[str]], bool]
                 = lambda _row, _tags: True) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    selected = 0
    for row in rows:
        tags = {t.strip().lstrip("#").casefold() for t in row["hashtags"].split("|") if t.strip()}
        if keep(row, tags):
            selected += 1
            counts.update(tags)
    return selected, counts


def assert_table(table: list[dict[str, object]], selected: int, counts: Counter[str]) -> None:
    assert {r["hashtag"]: r["posts"] for r in table} == dict(counts)
    for r in table:
        assert r["ratio"] == pytest.approx(counts[str(r["hashtag"])] / selected, abs=1e-6)
    # Most frequent first, ties by name.
    assert [(-int(str(r["posts"])), r["hashtag"]) for r in table] == sorted(
        (-int(str(r["posts"])), str(r["hashtag"])) for r in table)


@pytest.fixture(scope="module")
def fixture_dir(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hashtags-fixtures")
    files = [
        ("v2", fixtures / "twitter-v2/DocNow__twarc-csv/test-data/brexit.jsonl"),
        ("v2", fixtures / "twitter-v2/DocNow__twarc-csv/test-data/kpop.jsonl"),
        ("bsky", fixtures / "bluesky/medialab__twitwi/test/resources/bluesky-posts.json"),
        ("zee", fixtures / "instagram/craigfahner__zeeschuimer-workshop/posts.ndjson"),
    ]
    pipeline(out, files)
    return out


@pytest.fixture(scope="module")
def generated() -> list[Post]:
    rng = random.Random(14)
    posts = []
    for i in range(180):
        when = T0 + timedelta(seconds=rng.uniform(0, 3 * 3600))
        tags = tuple(rng.sample(TAGS, rng.randint(0, 4)))
        posts.append(Post(when, f"u{rng.randint(0, 30)}", rng.choice(WORDS), tags, seq=i))
    return posts


@pytest.fixture(scope="module")
def generated_dir(generated: list[Post], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hashtags-generated")
    # Two collectors: each delivers most pages; a post counts once however often it came.
    a = write_pages(root / "a.jsonl", generated[:150])
    b = write_pages(root / "b.jsonl", generated[40:])
    pipeline(root / "out", [("a", a), ("b", b)], partitions=2)
    return root / "out"


def test_fixture_table_equals_a_direct_count_over_the_hourly_files(fixture_dir: Path) -> None:
    rows = sealed_posts(fixture_dir)
    platforms = {r["_platform"] for r in rows}
    assert {"twitter", "bluesky", "instagram"} <= platforms
    selected, counts = direct_count(rows)
    assert selected == len(rows) and counts  # the fixtures do carry hashtags
    assert_table(report(fixture_dir), selected, counts)
    # One platform only.
    selected, counts = direct_count([r for r in rows if r["_platform"] == "bluesky"])
    assert_table(report(fixture_dir, "--platform", "bluesky"), selected, counts)


def test_generated_posts_fold_case_and_count_each_post_once(
    generated: list[Post], generated_dir: Path,
) -> None:
    rows = sealed_posts(generated_dir)
    assert len(rows) == len(generated)
    selected, counts = direct_count(rows)
    table = report(generated_dir)
    assert_table(table, selected, counts)
    # Known by construction, independently of the files: a post with "London" and "LONDON"
    # counts once for "london"; "Straße" and "STRASSE" are one hashtag.
    truth: Counter[str] = Counter()
    for p in generated:
        truth.update({t.casefold() for t in p.hashtags})
    assert {r["hashtag"]: r["posts"] for r in table} == dict(truth)
    # ("σίσυφος" and "ΣΊΣΥΦΟΣ" both fold to "σίσυφοσ": case folding maps the final sigma.)
    assert "strasse" in truth and "σίσυφοσ" in truth and "london" in truth
    assert not any(str(r["hashtag"]) != str(r["hashtag"]).casefold() for r in table)


def test_selection_by_hashtag_query_and_time(generated_dir: Path) -> None:
    rows = sealed_posts(generated_dir)
    selected, counts = direct_count(rows, lambda _r, tags: "london" in tags)
    table = report(generated_dir, "--with-hashtag", "#LONDON")
    assert_table(table, selected, counts)
    assert table[0]["hashtag"] == "london" and table[0]["ratio"] == 1.0
    excluded = report(generated_dir, "--with-hashtag", "London", "--exclude-with-hashtag")
    counts.pop("london")
    assert_table(excluded, selected, counts)

    selected, counts = direct_count(rows, lambda r, _t: "bike" in r["text"].casefold())
    assert 0 < selected < len(rows)
    assert_table(report(generated_dir, "--query", "Bike"), selected, counts)

    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=2, minutes=30)

    def in_window(r: dict[str, str], _t: set[str]) -> bool:
        created = datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))
        return since <= created < until

    selected, counts = direct_count(rows, in_window)
    assert 0 < selected < len(rows)
    assert_table(report(generated_dir, "--from", since.isoformat(), "--until",
                        until.isoformat().replace("+00:00", "Z")), selected, counts)


def test_top_n_and_the_png(generated_dir: Path, tmp_path: Path) -> None:
    png, page = tmp_path / "top.png", tmp_path / "top.html"
    code, out, err = run(["report", "hashtags", "--data-dir", str(generated_dir), "--top", "5",
                          "--format", "csv", "--png", str(png), "--html", str(page)])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "hashtag,posts,ratio" and len(lines) == 6
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG" and img.size == HASHTAG_SIZE
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20  # bars, text, anti-aliasing
        bar = sum(n for n, c in colours if c == (0x2B, 0x6C, 0xB0))
        assert bar > 0.05 * img.size[0] * img.size[1]  # five bars, not a blank canvas
    html = page.read_text()
    assert html.count("<tr>") == 6 and "data:image/png;base64," in html


def test_mistakes_are_one_line(tmp_path: Path, generated_dir: Path) -> None:
    for argv in (
        ["report", "hashtags", "--data-dir", str(tmp_path / "nope")],
        ["report", "hashtags", "--data-dir", str(generated_dir), "--from", "yesterday"],
        ["report", "hashtags", "--data-dir", str(generated_dir), "--top", "0"],
        ["report", "hashtags", "--data-dir", str(generated_dir), "--exclude-with-hashtag"],
        ["report", "hashtags", "--data-dir", str(generated_dir), "--platform", "twiter"],
        ["report", "day", "--data-dir", str(generated_dir), "2023-06-01", "--platform", "x"],
    ):
        code, _out, err = run(argv)
        assert code == 2 and err.startswith("shoal: error: ") and err.count("\n") == 1, err


def test_reports_on_a_data_dir_with_nothing_sealed_say_so(tmp_path: Path) -> None:
    """A fresh data dir has no views yet: each report says why in one line, not DuckDB's
    ``Catalog Error: Table with name posts does not exist!``."""
    for argv in (["report", "hashtags"], ["report", "day", "2021-05-11"], ["report", "images"]):
        code, _out, err = run([*argv, "--data-dir", str(tmp_path)])
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"shoal: error: nothing is sealed in {tmp_path} yet"), err


def test_canonically_equivalent_spellings_are_one_hashtag() -> None:
    """``café`` with a precomposed é and with e + combining accent look the same to a reader:
    one row of the table, and --with-hashtag and --query find both."""
    from shoal.hashtags import cooccurrence

    posts = [("caf\u00e9|paris", "au caf\u00e9"), ("cafe\u0301", "au cafe\u0301"),
             ("CAFE\u0301|Paris", "AU CAFE\u0301")]
    table = cooccurrence(posts)
    assert [(r.hashtag, r.posts) for r in table.rows] == [("caf\u00e9", 3), ("paris", 2)]
    assert cooccurrence(posts, with_tag="#cafe\u0301").selected == 3
    assert cooccurrence(posts, query="caf\u00e9").selected == 3


def test_query_reads_the_full_text_not_the_truncated_one() -> None:
    """A retweet's ``text`` is cut ("RT @bob: ...a p…"); --query must find words past the cut,
    as ``full_text`` holds them. Catalogs sealed before ``full_text`` existed use ``text``."""
    import duckdb

    from connectors.store.report_data import PostFilter, hashtag_posts
    from shoal.hashtags import cooccurrence

    con = duckdb.connect()
    con.execute("CREATE VIEW posts AS SELECT * FROM (VALUES "
                "('twitter', '1', 'velo', 'RT @bob: safer streets: a p…', "
                "'RT @bob: safer streets: a protected bike lane saves lives'), "
                "('twitter', '2', 'velo', 'no lane here', NULL)) "
                "AS t(platform, id, hashtags, text, full_text)")
    texts = sorted(t or "" for _tags, t in hashtag_posts(con, PostFilter(), with_text=True))
    assert texts == ["RT @bob: safer streets: a protected bike lane saves lives", "no lane here"]
    rows = hashtag_posts(con, PostFilter(), with_text=True)
    assert cooccurrence(rows, query="bike lane").selected == 1
    old = duckdb.connect()
    old.execute("CREATE VIEW posts AS SELECT 'twitter' AS platform, '1' AS id, "
                "'velo' AS hashtags, 'bike lane' AS text")
    assert list(hashtag_posts(old, PostFilter(), with_text=True)) == [("velo", "bike lane")]
