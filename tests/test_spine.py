"""Every Twitter fixture kind through the real broker and the real Bytewax dataflow.

Expected values are computed here straight from the fixture files (not through shoal's
readers), so a reader bug cannot hide itself.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from connectors.store.catalog import query
from tests.pipeline import all_ids, all_rows, pipeline, read_csv_xz, read_xz_lines, report_lines

V2 = "twitter-v2/DocNow__twarc-csv/test-data"
V1 = "twitter-v1/bear__python-twitter/testdata"


def v2_ids(path: Path) -> set[str]:
    ids: set[str] = set()
    text = path.read_text()
    try:
        pages = [json.loads(text)]
    except json.JSONDecodeError:
        pages = []
        for line in text.splitlines():
            try:
                pages.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    for page in pages:
        data = page.get("data", [])
        for tweet in data if isinstance(data, list) else [data]:
            ids.add(tweet["id"])
    return ids


def v1_ids(path: Path) -> set[str]:
    text = path.read_text()
    try:
        values = [json.loads(text)]
    except json.JSONDecodeError:
        values = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids: set[str] = set()
    for value in values:
        if isinstance(value, dict) and "statuses" in value:
            value = value["statuses"]
        for tweet in value if isinstance(value, list) else [value]:
            if isinstance(tweet, dict) and "id_str" in tweet and "user" in tweet:
                ids.add(tweet["id_str"])
    return ids


CASES = {
    "brexit": (f"{V2}/brexit.jsonl", v2_ids),
    "kpop": (f"{V2}/kpop.jsonl", v2_ids),
    "withheld": (f"{V2}/withheld.jsonl", v2_ids),
    "stream-err": (f"{V2}/streaming_output_with_error.jsonl", v2_ids),
    "v2-single": ("twitter-v2/medialab__twitwi/test/resources/payload-v2.json", v2_ids),
    "v1-home": (f"{V1}/get_home_timeline.json", v1_ids),
    "v1-stream": (f"{V1}/streaming/lines.json", v1_ids),
    "v1-search": (f"{V1}/get_search_raw.json", v1_ids),
    "v1-user-stream": ("twitter-v1/sferik__twitter-ruby/test/fixtures/track_streaming_user.json",
                       v1_ids),
    "csv": ("minet-csv/medialab__twitwi/test/resources/tweet-export.csv",
            lambda p: {r["id"] for r in csv.DictReader(p.open(encoding="utf-8"))}),
}


@pytest.fixture(scope="module")
def twitter_run(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("spine")
    files = [(name, fixtures / rel) for name, (rel, _) in CASES.items()]
    pipeline(out, files)
    expected = {name: fn(fixtures / rel) for name, (rel, fn) in CASES.items()}
    return out, expected


def test_every_collected_tweet_once(twitter_run: tuple[Path, dict]) -> None:
    out, expected = twitter_run
    ids = all_ids(out)
    union = set().union(*expected.values())
    assert len(ids) == len(set(ids)), "an ID appears in two hours or twice in one"
    assert set(ids) == union
    rows = all_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(ids)


def test_per_file_counts_match_the_fixtures(twitter_run: tuple[Path, dict]) -> None:
    out, expected = twitter_run
    seen: Counter[str] = Counter()
    for row in all_rows(out):
        for collector in row["collectors"].split("|"):
            seen[collector] += 1
    for name, ids in expected.items():
        assert seen[name] == len(ids), name
    # Figures SOURCES.md gives for these files, as a check on the check.
    assert len(expected["brexit"]) == 100
    assert len(expected["stream-err"]) == 7
    assert len(expected["v1-user-stream"]) == 1


def test_ids_files_sorted_numerically_and_rows_match(twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    for path in (out / "twitter").glob("*/*_IDs.txt.xz"):
        ids = read_xz_lines(path)
        assert ids == sorted(ids, key=int)
        rows = read_csv_xz(Path(str(path).replace("_IDs.txt.xz", "_tweets.csv.xz")))
        assert [r["id"] for r in rows] == ids
        hour = path.name[11:13]
        for r in rows:
            # created_at is UTC and names the hour (default zone UTC).
            assert r["created_at"][11:13] == hour and r["created_at"].endswith("+00:00")


def test_columns_of_the_2021_pipeline(twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    path = next((out / "twitter").glob("*/*_tweets.csv.xz"))
    header = read_csv_xz(path)[0].keys()
    for col in ("id", "conversation_id", "author_id", "created_at", "retrieved_at", "source",
                "lang", "text", "reference_type", "referenced_tweet_id", "author.created_at",
                "author.location", "author.name", "author.username", "author.verified",
                "author.protected", "author.public_metrics.followers_count",
                "author.public_metrics.following_count", "author.public_metrics.tweet_count",
                "author.public_metrics.listed_count", "hashtags", "media_keys", "media_types",
                "media_urls", "collectors"):
        assert col in header


def test_users_one_row_per_author(twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    for path in (out / "twitter").glob("*/*_users.csv.xz"):
        users = read_csv_xz(path)
        ids = [u["id"] for u in users]
        assert len(ids) == len(set(ids))
        tweets = read_csv_xz(Path(str(path).replace("_users", "_tweets")))
        assert set(ids) >= {t["author_id"] for t in tweets if t["author_id"]}


def test_media_urls_match_twitwi_oracle(fixtures: Path, twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    oracle = json.loads(
        (fixtures / "twitter-v2/medialab__twitwi/test/resources/normalized-tweets-v2.json")
        .read_text()
    )
    rows = {r["id"]: r for r in all_rows(out)}
    checked = 0
    for tweet in oracle:
        if tweet["id"] in rows and tweet.get("media_urls"):
            assert rows[tweet["id"]]["media_urls"].split("|") == tweet["media_urls"]
            checked += 1
    assert checked >= 1


def test_catalog_answers_sql(twitter_run: tuple[Path, dict]) -> None:
    out, expected = twitter_run
    _names, rows = query(out, "SELECT count(*), count(DISTINCT id) FROM posts")
    assert rows[0][0] == rows[0][1] == len(set().union(*expected.values()))
    _, rows = query(out, "SELECT sum(total) FROM reports WHERE platform = 'twitter'")
    assert rows[0][0] == len(set().union(*expected.values()))
    _, rows = query(out, "SELECT count(*) FROM users")
    assert rows[0][0] > 0


def test_day_report_totals(twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    total = 0
    for report in (out / "twitter").glob("*/*_report.txt"):
        lines = report_lines(report)
        header = lines[0].split("\t")
        assert header[0] == "hour" and header[-4:] == ["total", "diff", "diff %", "late"]
        for line in lines[1:]:
            total += int(dict(zip(header, line.split("\t"), strict=True))["total"])
    assert total == len(all_ids(out))


def test_nothing_half_written(twitter_run: tuple[Path, dict]) -> None:
    out, _ = twitter_run
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []
    assert not any((out / "_work" / "chunks").rglob("*.jsonl"))
