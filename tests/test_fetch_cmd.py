"""``shoal fetch`` end to end: a generated CSV, our loopback server, the report, --resume."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from shoal.app import fetch_cmd
from shoal.app.fetch_cmd import FETCH_COLUMNS
from tests.test_fetcher import HOSTS, MediaServer
from tests.test_fetcher import server as server  # the fixture, shared by name

RESOLVE = [arg for host, ip in HOSTS.items() for arg in ("--resolve", f"{host}={ip}")]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shoal")
    fetch_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["fetch", *argv])


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_fetch_explodes_reports_every_url_and_resumes(
    server: MediaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img1, img2 = server.url("img1.test", "/img/cmd-a"), server.url("img2.test", "/img/cmd-b")
    missing = server.url("img1.test", "/status/cmd?code=404")
    rows = [
        {"post_id": "1", "platform": "twitter", "media_urls": f"{img1}|{img2}"},
        {"post_id": "2", "platform": "twitter", "media_urls": missing},
        {"post_id": "3", "platform": "bluesky", "media_urls": "file:///etc/passwd"},
        {"post_id": "4", "platform": "bluesky", "media_urls": ""},
    ]
    source, report, out = tmp_path / "posts.csv", tmp_path / "report.csv", tmp_path / "dl"
    write_csv(source, rows)
    argv = ["media_urls", "-i", str(source), "--explode", "|", "-O", str(out), "-o", str(report),
            "--throttle", "0.05", "--domain-parallelism", "2", "--retries", "1", *RESOLVE,
            "--filename-template", "{platform}_{post_id}_{position}.{ext}",
            "--folder-strategy", "prefix-2"]
    assert fetch_cmd.run(parse(argv)) == 0

    got = {r["fetch_url"]: r for r in read_csv(report) if r["fetch_url"]}
    assert set(got) == {img1, img2, missing, "file:///etc/passwd"}
    assert list(read_csv(report)[0]) == ["post_id", "platform", "media_urls", *FETCH_COLUMNS]
    for url, position in ((img1, 0), (img2, 1)):
        row = got[url]
        assert (row["post_id"], row["fetch_http_status"], row["fetch_error"]) == ("1", "200", "")
        assert row["fetch_position"] == str(position) and row["fetch_original_index"] == "0"
        assert row["media_urls"] == f"{img1}|{img2}"  # exploded rows repeat the input row
        assert row["fetch_path"].endswith(f"/twitter_1_{position}.jpg")
        assert row["fetch_path"].split("/")[1] == row["fetch_sha256"][:2]  # prefix-2
        assert (out / row["fetch_path"]).read_bytes()[:3] == b"\xff\xd8\xff"
        assert row["fetch_mimetype"] == "image/jpeg" and int(row["fetch_bytes"]) > 0
    assert (got[missing]["fetch_http_status"], got[missing]["fetch_error"]) == ("404", "http 404")
    assert got["file:///etc/passwd"]["fetch_error"].startswith("refused: scheme 'file'")
    # The row without a URL has its line too, with only its index.
    [empty] = [r for r in read_csv(report) if not r["fetch_url"]]
    assert empty["post_id"] == "4" and empty["fetch_original_index"] == "3"
    assert all(empty[c] == "" for c in FETCH_COLUMNS[1:])

    # A new row arrives; --resume fetches only its URL and appends to the report.
    img3 = server.url("img3.test", "/img/cmd-c")
    write_csv(source, [*rows, {"post_id": "5", "platform": "twitter", "media_urls": img3}])
    before = len(server.hits)
    assert fetch_cmd.run(parse([*argv, "--resume"])) == 0
    again = read_csv(report)
    assert [r["fetch_url"] for r in again].count(img1) == 1 and again[-1]["fetch_url"] == img3
    assert again[-1]["fetch_error"] == "" and len(again) == 6
    assert [h.path for h in server.hits[before:]] == ["/img/cmd-c"]

    # Without -o the report goes to stdout; the ledger answers for what is on disk.
    assert fetch_cmd.run(parse(["media_urls", "-i", str(source), "-O", str(out), *RESOLVE,
                                "--explode", "|"])) == 0
    lines = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert {r["fetch_url"] for r in lines} == set(got) | {img3, ""}
    assert len(server.hits) == before + 2  # only the 404 was asked again


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", "-i", "{csv}"], "no column 'nope'"),
        (["media_urls", "-i", "{tmp}/missing.csv"], "input file not found"),
        (["media_urls", "-i", "{csv}", "--resume"], "--resume needs -o"),
        (["media_urls", "-i", "{csv}", "--folder-strategy", "weird"], "unknown folder strategy"),
        (["media_urls", "-i", "{csv}", "--filename-template", "{evil.__class__}"],
         "bad filename template"),
        (["media_urls", "-i", "{csv}", "--resolve", "nonsense"], "--resolve wants HOST=IP"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    source = tmp_path / "in.csv"
    write_csv(source, [{"media_urls": "http://img1.test/x"}])
    argv = [a.replace("{csv}", str(source)).replace("{tmp}", str(tmp_path)) for a in argv]
    assert fetch_cmd.run(parse([*argv, "-O", str(tmp_path / "o")])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
