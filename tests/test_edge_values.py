"""Impossible values are dead letters with a reason; odd characters stay faithful and every
output CSV still reads back exactly, through ``shoal up`` (real broker, real dataflow)."""

from __future__ import annotations

import csv
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shoal.hours import parse_iso, utc_offset
from shoal.ids import valid_id

SHOAL = [sys.executable, "-m", "shoal"]
WHEN = "2021-05-11T21:36:01.000Z"

# Text a post may really hold: every kind of control character, line and paragraph
# separators, a literal backslash-u escape, CSV's own quote and delimiter.
ODD_TEXTS = [
    "nul\x00inside",
    "cr\ronly",
    "crlf\r\nend",
    "lf\nonly",
    "vt\x0b and ff\x0c",
    "esc\x1b[31mred\x1b[0m",
    "literal \\udc80 escape",
    "line\u2028para\u2029sep",
    "nel\x85 and del\x7f",
    'a "quote", a comma',
    "\r",
    "trailing cr\r",
    "\ufeffbom first",
]


def v2_tweet(tid: Any, text: str = "t", created_at: str = WHEN, name: str = "Ann") -> str:
    return json.dumps({
        "id": tid, "text": text, "created_at": created_at, "author_id": "77",
        "conversation_id": str(tid), "author": {"id": "77", "username": "ann", "name": name},
    })


def v1_tweet(tid: str, created_at: str) -> str:
    return json.dumps({"id_str": tid, "text": "v1", "created_at": created_at,
                       "user": {"id_str": "78", "screen_name": "bob"}})


def shoal(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def dead_letters(data: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((data / "_deadletter").glob("*/*_deadletter.jsonl.xz")):
        out += [json.loads(line) for line in lzma.decompress(path.read_bytes()).splitlines()]
    return out


def test_offsets_and_ids_are_checked_once_for_every_reader() -> None:
    assert utc_offset("+14:00").total_seconds() == 14 * 3600
    assert utc_offset("-0530").total_seconds() == -(5 * 3600 + 30 * 60)
    for bad in ("+9999", "+99:99", "+14:01", "-15:00", "+05:99", "+5", "+05:30:00", "05:00"):
        with pytest.raises(ValueError, match="UTC offset"):
            utc_offset(bad)
    # fromisoformat alone takes these (and moves the post by hours or days): we do not.
    for bad in ("2021-05-11T21:36:01+23:59", "2021-05-11T21:36:01+05:99",
                "2021-05-11T21:36:01+99:99"):
        with pytest.raises(ValueError, match="UTC offset"):
            parse_iso(bad)
    assert parse_iso("2021-05-11T21:36:01-12:00").isoformat() == "2021-05-12T09:36:01+00:00"
    assert [valid_id(v) for v in ("1", 1, "9223372036854775807")] == ["1", "1",
                                                                     "9223372036854775807"]
    odd: tuple[object, ...] = (0, "0", -5, "-5", "00012", "9223372036854775808", "1" * 20,
                               True, 1.0, "٣")
    for value in odd:
        assert valid_id(value) is None, value


def test_impossible_values_are_dead_letters_and_odd_text_reads_back(tmp_path: Path) -> None:
    good = {str(1000 + i): text for i, text in enumerate(ODD_TEXTS)}
    names = {tid: f"name {text}" for tid, text in good.items()}  # the users file too
    bad_v2 = {
        # id -> (created_at, what the dead letter's reason must say)
        "0": (WHEN, "invalid id '0'"),
        "00012": (WHEN, "invalid id '00012'"),
        "99999999999999999999": (WHEN, "invalid id"),
        "2001": ("2021-05-11T21:36:01+99:99", "out of range"),
        "2002": ("2021-05-11T21:36:01+15:00", "out of range"),
        "2003": ("2021-05-11T21:36:01+05:99", "malformed UTC offset"),
    }
    lines = [v2_tweet(tid, text, name=names[tid]) for tid, text in good.items()]
    lines += [v2_tweet(tid, created_at=when) for tid, (when, _) in bad_v2.items()]
    lines.append(v2_tweet(-5))
    lines.append(v2_tweet(0))
    # A lone surrogate cannot be written as UTF-8: the line is kept as a dead letter.
    lines.append('{"id": "3001", "text": "lone \\ud800", "author_id": "77"}')
    v2 = tmp_path / "v2.jsonl"
    v2.write_text("\n".join(lines) + "\n", encoding="utf-8")
    v1 = tmp_path / "v1.jsonl"
    v1.write_text("\n".join([
        v1_tweet("4001", "Tue May 11 21:36:01 +0000 2021"),
        v1_tweet("4002", "Tue May 11 21:36:01 +9999 2021"),  # 4 days and 3 hours off
        v1_tweet("4003", "Tue May 11 21:36:01 +0560 2021"),
    ]) + "\n")
    data = tmp_path / "d"
    shoal("up", "--source", f"file:{v2}", "--source", f"file:{v1}", "--data-dir", str(data),
          "--idle-exit", "1", "--no-media")

    # Every impossible record is one dead letter on disk, with its reason.
    letters = dead_letters(data)
    reasons = [str(d["reason"]) for d in letters]
    for tid, (_, why) in bad_v2.items():
        assert any(why in r and (tid in r or tid in str(d["raw"]))
                   for r, d in zip(reasons, letters, strict=True)), (tid, reasons)
    assert sum("invalid id -5" in r for r in reasons) == 1
    assert sum("invalid id 0 " in r for r in reasons) == 1
    assert sum("surrogate" in r for r in reasons) == 1
    assert sum("'+9999'" in r and "out of range" in r for r in reasons) == 1
    assert sum("'+0560'" in r and "malformed" in r for r in reasons) == 1
    assert len(letters) == len(bad_v2) + 5

    # The good posts, and only they, are in the one hour they belong to, text unchanged.
    (posts_file,) = sorted(data.glob("twitter/*/*_tweets.csv.xz"))
    assert posts_file.name == "2021-05-11_21_tweets.csv.xz"
    text = lzma.decompress(posts_file.read_bytes()).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    # NUL is the one character not kept as is (U+FFFD instead, see shoal.chunks): pandas'
    # default reader, among others, cuts a field at a NUL.
    written = {tid: t.replace("\x00", "\ufffd") for tid, t in good.items()}
    assert {r["id"]: r["text"] for r in rows} == {**written, "4001": "v1"}
    users_text = lzma.decompress(data.glob("twitter/*/*_users.csv.xz").__next__().read_bytes())
    users = list(csv.DictReader(io.StringIO(users_text.decode("utf-8"), newline="")))
    assert {u["name"] for u in users} & set(names.values())  # odd names read back too

    # DuckDB's own CSV reader, sniffing the dialect by itself, reads back the same rows.
    plain = tmp_path / "tweets.csv"
    plain.write_text(text, encoding="utf-8", newline="")
    with duckdb.connect() as con:
        got = con.execute(f"SELECT id, text FROM read_csv('{plain}', all_varchar=true)").fetchall()
    assert {i: t or "" for i, t in got} == {r["id"]: r["text"] for r in rows}
    assert len(got) == len(rows)

    # The catalog (built from the same CSV) and `shoal query --format csv` agree too.
    # (bytes: text mode would turn every \r of the output into \n before csv sees it)
    out = subprocess.run([*SHOAL, "query", "--data-dir", str(data), "--format", "csv",
                          "SELECT id, text FROM posts ORDER BY id"],
                         capture_output=True, timeout=120, check=True).stdout.decode("utf-8")
    queried = list(csv.DictReader(io.StringIO(out, newline="")))
    assert {r["id"]: r["text"] for r in queried} == {r["id"]: r["text"] for r in rows}


def test_an_impossible_count_is_an_empty_cell_in_every_format() -> None:
    """A JSON count of -5 was kept while the CSV readers blanked "-7"; digits of another
    script ("١٢") were kept as they came, and no reader of the CSV takes them for a number."""
    from shoal.normalise import normalise

    def v2(metrics: dict[str, Any]) -> dict[str, str]:
        payload = {"id": "1", "text": "t", "created_at": "2021-05-11T10:00:00.000Z",
                   "author_id": "2", "public_metrics": metrics}
        return normalise("twitter-v2", payload, "2021-05-11T11:00:00+00:00").post

    row = v2({"retweet_count": -5, "like_count": -1.0, "reply_count": "١٢",
              "quote_count": 3, "impression_count": "40"})
    assert row["public_metrics.retweet_count"] == ""
    assert row["public_metrics.like_count"] == ""
    assert row["public_metrics.reply_count"] == ""
    assert row["public_metrics.quote_count"] == "3"
    assert row["public_metrics.impression_count"] == "40"


def test_an_impossible_author_count_is_an_empty_cell_in_every_format() -> None:
    """Followers, following, posts and lists of an author are counts too: -5, -1.0 and
    "١٢" are unknown (an empty cell), 3 and "40" are kept, in the users file and the post."""
    from shoal.normalise import normalise

    odd = {"followers_count": -5, "following_count": "١٢", "tweet_count": 3,
           "listed_count": -1.0}
    v2 = normalise("twitter-v2", {
        "id": "1", "text": "t", "created_at": "2021-05-11T10:00:00.000Z", "author_id": "2",
        "author": {"id": "2", "username": "a", "public_metrics": odd},
    }, "2021-05-11T11:00:00+00:00")
    v1 = normalise("twitter-v1", {
        "id_str": "1", "text": "t", "created_at": "Tue May 11 10:00:00 +0000 2021",
        "user": {"id_str": "2", "screen_name": "a", "followers_count": -5,
                 "friends_count": "١٢", "statuses_count": 3, "listed_count": -1.0},
    }, "2021-05-11T11:00:00+00:00")
    masto = normalise("mastodon-status", {
        "id": "1", "uri": "https://m.example/1", "url": "https://m.example/@a/1",
        "content": "<p>t</p>", "created_at": "2021-05-11T10:00:00.000Z",
        "account": {"id": "2", "username": "a", "acct": "a", "followers_count": -5,
                    "following_count": "١٢", "statuses_count": 3},
    }, "2021-05-11T11:00:00+00:00")
    for got in (v2, v1, masto):
        user = got.user or {}
        assert (user["followers_count"], user["following_count"], user["tweet_count"]) == (
            "", "", "3"), user
    for got in (v2, v1):
        assert (got.user or {})["listed_count"] == ""
        assert got.post["author.public_metrics.followers_count"] == ""
        assert got.post["author.public_metrics.tweet_count"] == "3"
