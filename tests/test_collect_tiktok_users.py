"""``shoal collect tiktok --users`` through yt-dlp against www.tiktok.com of our own.

yt-dlp is unchanged: the collector process trusts a test CA and resolves www.tiktok.com to
our loopback server (``SHOAL_RESOLVE``), which answers the profile page and the paged
``/api/creator/item_list/`` as TikTok does (tests/fake_tiktok_web.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.fake_tiktok_web import HOSTS, FakeTikTokWeb, accounts
from tests.live_helpers import KafkaTap, collector_name, finish
from tests.tls import TestCA, TlsServer

ROOT = Path(__file__).resolve().parents[1]


def collector(server: TlsServer, ca: TestCA, brokers: str, name: str, tmp: Path,
              *users: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "TIKTOK_"))}
    env.update(ca.client_env(), SHOAL_RESOLVE=server.resolve_spec(HOSTS))
    argv = [sys.executable, "-m", "shoal", "collect", "tiktok", "--brokers", brokers,
            "--collector", name, "--users", *users, "--state", str(tmp / "state.json"),
            "--retries", "1", "--timeout", "10"]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)


def test_users_paged_private_missing_and_a_restart(fixtures: Path, brokers: str,
                                                   tap: KafkaTap, tmp_path: Path) -> None:
    fake: FakeTikTokWeb = accounts(fixtures, {"alice": 37, "bob": 4}, private=("locked",))
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("ttu")
    users = ("alice", "@locked", "ghost", "bob")
    with TlsServer(fake.app(), ca) as server:
        code, logs = finish(collector(server, ca, brokers, name, tmp_path, *users), 60)
        assert code == 0, [x.get("said") or x for x in logs][-8:]
        tap.settle(1.0)
        first = list(tap.posts(name))
        pages = [q for path, q in fake.requests if path == "/api/creator/item_list/"]

        # Every video of both public accounts once, found by its account.
        keys = Counter(p["key"] for p in first)
        expected = {f"tiktok:{v['id']}": u for u in ("alice", "bob")
                    for v in fake.users[u].videos}
        assert set(keys) == set(expected) and max(keys.values()) == 1
        for p in first:
            assert p["payload"]["query"] == f"@{expected[p['key']]}"
            assert p["payload"]["username"] == expected[p["key"]]
            assert p["format"] == "tiktok-research"
        # alice's 37 videos came in pages of 15 (3 pages), each page older than the last.
        alice = [q for q in pages if q["secUid"] == fake.users["alice"].sec_uid]
        assert len(alice) == 3
        assert int(alice[1]["cursor"]) == fake.users["alice"].videos[14]["createTime"] * 1000

        # The run log: one line per user, the private and the missing one with their outcome,
        # and the batch went on to bob after them.
        runs = [json.loads(line) for line in
                (tmp_path / "state.json.runs.jsonl").read_text().splitlines()]
        assert [(r["target"], r["outcome"], r["posts"]) for r in runs] == [
            ("@alice", "ok", 37), ("@locked", "private", 0), ("@ghost", "not-found", 0),
            ("@bob", "ok", 4)]
        assert sorted((tmp_path / "@alice_post_ids.txt").read_text().split()) == sorted(
            v["id"] for v in fake.users["alice"].videos)

        # A restart lists every account again and publishes nothing twice.
        code, logs = finish(collector(server, ca, brokers, name, tmp_path, *users), 60)
        assert code == 0, logs[-5:]
    tap.settle(1.0)
    assert len(tap.posts(name)) == len(first)
    again = [json.loads(line) for line in
             (tmp_path / "state.json.runs.jsonl").read_text().splitlines()][4:]
    assert [(r["target"], r["posts"], r["seen"]) for r in again if r["outcome"] == "ok"] == [
        ("@alice", 0, 37), ("@bob", 0, 4)]


def test_a_missing_user_named_private_is_not_found(fixtures: Path, brokers: str,
                                                   tmp_path: Path) -> None:
    """yt-dlp's error names the user: a missing ``privateer`` is not-found (the words
    'private' in the name are no private account), and ``BOB``/``@bob`` is one account."""
    fake: FakeTikTokWeb = accounts(fixtures, {"bob": 2})
    ca = TestCA(tmp_path / "ca", HOSTS)
    with TlsServer(fake.app(), ca) as server:
        code, logs = finish(collector(server, ca, brokers, collector_name("ttu"), tmp_path,
                                      "privateer", "BOB", "@bob"), 60)
    assert code == 0, logs[-5:]
    runs = [json.loads(line) for line in
            (tmp_path / "state.json.runs.jsonl").read_text().splitlines()]
    assert [(r["target"], r["outcome"], r["posts"]) for r in runs] == [
        ("@privateer", "not-found", 0), ("@bob", "ok", 2)]


def test_max_posts_caps_a_user_listing(fixtures: Path, brokers: str, tap: KafkaTap,
                                       tmp_path: Path) -> None:
    """--max-posts 5 of an account of 37: five videos, from its first page only."""
    fake: FakeTikTokWeb = accounts(fixtures, {"alice": 37})
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("ttu")
    with TlsServer(fake.app(), ca) as server:
        code, logs = finish(collector(server, ca, brokers, name, tmp_path, "alice",
                                      "--max-posts", "5"), 60)
    assert code == 0, logs[-5:]
    tap.settle(0.5)
    assert len(tap.posts(name)) == 5
    assert len([p for p, _ in fake.requests if p == "/api/creator/item_list/"]) == 1
