"""Fetch edges through ``shoal fetch``'s real CLI against the loopback test server: an
over-long host name is an invalid URL (not an internal error), and a slow host holds a URL
no longer than ``--url-deadline``, however many retries ``--retries`` allows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from shoal.fetch.policy import FetchConfig, check_url
from tests.test_fetcher import HOSTS, MediaServer
from tests.test_fetcher import server as server  # the fixture, shared by name

RESOLVE = [arg for host, ip in HOSTS.items() for arg in ("--resolve", f"{host}={ip}")]
LONG_LABEL = "a" * 64


def fetch(tmp_path: Path, urls: list[str], *flags: str) -> dict[str, dict[str, str]]:
    source, report = tmp_path / "in.csv", tmp_path / "report.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["url"])
        writer.writerows([u] for u in urls)
    proc = subprocess.run(
        [sys.executable, "-m", "shoal", "fetch", "url", "-i", str(source), "-o", str(report),
         "-O", str(tmp_path / "dl"), "--throttle", "0", *RESOLVE, *flags],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(report, newline="", encoding="utf-8") as fh:
        return {r["fetch_url"]: r for r in csv.DictReader(fh)}


def test_over_long_host_names_are_invalid_urls() -> None:
    cfg = FetchConfig()
    assert check_url(f"http://{'a' * 63}.example.com/x.jpg", cfg) == ""
    assert check_url("http://bücher.example/x.jpg", cfg) == ""
    for url, why in (
        (f"http://{LONG_LABEL}.example.com/x.jpg", "host label longer than 63 characters"),
        (f"http://{'ü' * 64}.example/x.jpg", "host label longer than 63 characters"),
        ("http://" + "abcdefghi." * 26 + "com/", "host name longer than 253 characters"),
        ("http://a..b.example/", "empty label in host name"),
    ):
        assert check_url(url, cfg) == f"refused: invalid URL ({why})", url


def test_long_host_label_and_url_deadline_through_the_cli(
    server: MediaServer, tmp_path: Path
) -> None:
    slow = server.url("img1.test", "/img/deadline-slow?delay=30")
    quick = server.url("img2.test", "/img/deadline-quick")
    long_host = f"http://{LONG_LABEL}.img1.test:{server.port}/img/x.jpg"
    rows = fetch(tmp_path, [slow, quick, long_host],
                 "--timeout", "1", "--retries", "6", "--url-deadline", "2.5")

    assert rows[long_host]["fetch_error"] == (
        "refused: invalid URL (host label longer than 63 characters)")
    assert rows[quick]["fetch_error"] == "" and rows[quick]["fetch_http_status"] == "200"

    # Every attempt times out after 1 s; --retries 6 alone would try 7 times. The deadline
    # stops it after the attempts that fit, and says so.
    error = rows[slow]["fetch_error"]
    assert "--url-deadline 2.5s" in error, error
    attempts = server.count("/img/deadline-slow?delay=30")
    assert 1 <= attempts < 7
    if "attempt" in error:
        assert f"after {attempts} attempt" in error
