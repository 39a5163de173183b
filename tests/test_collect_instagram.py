"""``shoal collect instagram`` against www.instagram.com of our own (tests/fake_instagram.py).

instaloader is unchanged: the collector process trusts a test CA and resolves Instagram's
names to our loopback server (``SHOAL_RESOLVE``). The batch is six profiles: private, missing,
one whose page times out twice, one answered 429 (a 2 s window standing in for minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.collect.instagram import BatchRateController
from connectors.collect.live import Stopper
from tests.fake_instagram import HOSTS, FakeInstagram, Profile, batch, fixture_media
from tests.live_helpers import KafkaTap, collector_name, finish, live_args
from tests.pipeline import all_rows, run_flow
from tests.tls import TestCA, TlsServer

ROOT = Path(__file__).resolve().parents[1]


def session_file(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"sessionid": "s3cr3t-session", "csrftoken": "csrf1",
                                   "ds_user_id": "17841400000"}))
    return path


def collector(server: TlsServer, ca: TestCA, brokers: str, name: str, tmp: Path,
              *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ca.client_env(), "SHOAL_RESOLVE": server.resolve_spec(HOSTS)}
    argv = [sys.executable, "-m", "shoal", "collect", "instagram", "--brokers", brokers,
            "--collector", name, "--profiles", str(tmp / "profiles.txt"),
            "--login", "researcher", "--session-file", str(tmp / "session"),
            "--state", str(tmp / "state.json"), "--no-pause", "--calls-per-hour", "1000",
            "--rate-limit-wait", "2.5", "--request-timeout", "1", "--save-every", "0",
            *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)


def test_batch_survives_faults_and_a_kill(fixtures: Path, brokers: str, tap: KafkaTap,
                                          tmp_path: Path) -> None:
    fake: FakeInstagram = batch(fixtures)
    fake.delay = 0.15
    (tmp_path / "profiles.txt").write_text("alice\nbob\nghost\ncarol\ndave\nerin\n")
    session_file(tmp_path / "session")
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("ig")
    with TlsServer(fake.app(), ca) as server:
        first = collector(server, ca, brokers, name, tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(tap.posts(name)) < 8 and first.poll() is None:
            tap.poll()
        assert first.poll() is None, [x.get("said") or x for x in finish(first)[1]]
        first.send_signal(signal.SIGKILL)
        _, first_logs = finish(first, 10)
        tap.settle(0.5)
        killed_at = len(tap.posts(name))
        assert 8 <= killed_at < 20

        code, logs = finish(collector(server, ca, brokers, name, tmp_path))
        assert code == 0, logs[-5:]
        logs = first_logs + logs
        tap.settle(1.0)

    keys = Counter(p["key"] for p in tap.posts(name))
    public = [m["pk"] for p in ("alice", "carol", "dave", "erin")
              for m in fake.profiles[p].posts]
    assert set(keys) == {f"instagram:{pk}" for pk in public}
    # At least once, by design: a post is archived once Kafka acknowledged it, so a kill
    # between the two repeats that one post (the dataflow dedupes it); no other repeats.
    assert sum(n - 1 for n in keys.values()) <= 1, "a post was published twice"

    # The 429 was waited out: nothing reached the server inside the window, and the wait was
    # logged once with the time the collector resumes.
    assert fake.window_end > 0
    assert fake.violations == []
    assert fake.profiles["dave"].timeouts == 0  # its page timed out twice, then came
    waits = [x for x in logs if x.get("msg") == "rate limited"]
    assert len(waits) == 1 and waits[0]["resumes_at"]

    runs = [json.loads(line) for line in (tmp_path / "state.json.runs.jsonl").read_text()
            .splitlines()]
    outcomes = {r["target"]: r["outcome"] for r in runs}
    assert len(runs) == 6, runs
    assert outcomes == {"profile:alice": "ok", "profile:bob": "private",
                        "profile:ghost": "not-found", "profile:carol": "ok",
                        "profile:dave": "ok", "profile:erin": "ok"}
    assert all(r["started"] <= r["ended"] for r in runs)
    # The profile cut by the kill counts, in its one line, only what the second run published.
    assert 15 <= sum(r["posts"] for r in runs) <= 20
    assert all(r["media"] >= r["posts"] for r in runs)
    assert "s3cr3t-session" not in json.dumps(logs)

    # Through the real dataflow: every post once in the hourly files, media with it.
    data = tmp_path / "data"
    run_flow(brokers, data)
    rows = all_rows(data, "instagram")
    assert sorted(r["id"] for r in rows) == sorted(public)
    carousel = next(r for r in rows if r["id"] == "3828242469566363945")
    assert len(carousel["media_urls"].split("|")) > 1
    # What found each post is its query, spelt as TikTok's: the profile as @name.
    owners = {m["pk"]: p for p in ("alice", "carol", "dave", "erin")
              for m in fake.profiles[p].posts}
    assert all(r["query"] == f"@{owners[r['id']]}" for r in rows), {r["query"] for r in rows}


def test_hourly_ceiling_spans_the_whole_batch() -> None:
    """--calls-per-hour: the N+1st call waits until the first leaves the hour."""
    import instaloader

    ctx = instaloader.InstaloaderContext(sleep=False, quiet=True)
    rc = BatchRateController(ctx, stopper=Stopper(), calls_per_hour=3, rate_limit_wait=1.0,
                             calls=[])
    now = time.time()
    rc.calls = [now - 3000, now - 10, now - 5]
    assert 599 < rc.hourly_wait(now) <= 600
    rc.calls = [now - 3700, now - 10, now - 5]
    assert rc.hourly_wait(now) == 0.0


def test_refused_session_is_one_line(fixtures: Path, brokers: str, tmp_path: Path) -> None:
    fake = batch(fixtures)
    fake.login_ok = False
    (tmp_path / "profiles.txt").write_text("alice\n")
    session_file(tmp_path / "session")
    ca = TestCA(tmp_path / "ca", HOSTS)
    with TlsServer(fake.app(), ca) as server:
        code, logs = finish(collector(server, ca, brokers, collector_name("ig"), tmp_path))
    assert code == 2
    failed = [x for x in logs if x.get("msg") == "collector failed"]
    assert len(failed) == 1 and "refused the session" in failed[0]["error"]
    assert all(p != "/alice/" for _, p in fake.requests)


def test_odd_names_and_a_library_surprise(fixtures: Path, brokers: str, tap: KafkaTap,
                                          tmp_path: Path) -> None:
    """A profiles file as an editor or a spreadsheet leaves it (a BOM, comments, blank lines,
    a name twice in two cases, a name Instagram cannot have, a missing one with 429 in its
    name) and a profile whose timeline
    makes instaloader itself fail (a caption that is text, not an object: an AttributeError
    inside it):
    each name once, the impossible one not-found without a request, the failing one an
    error, and the batch goes on to the end. Its --state names a folder not made yet."""
    fake = batch(fixtures)
    fake.profiles["carol"].rate_limit = False
    odd = {**fixture_media(fixtures)[-1], "caption": "a caption as a bare string"}
    fake.profiles["odd"] = Profile("odd", "9200", posts=[odd])
    (tmp_path / "profiles.txt").write_text(
        "\ufeffAlice\n# friends of alice\n\n  odd  \nALICE  # again\n../etc\nghost429\n"
        "carol\n")
    session_file(tmp_path / "session")
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("ig")
    with TlsServer(fake.app(), ca) as server:
        code, logs = finish(collector(server, ca, brokers, name, tmp_path, "--state",
                                      str(tmp_path / "new" / "state.json")), 60)
    assert code == 0, logs[-5:]
    runs = [json.loads(line) for line in (tmp_path / "new" / "state.json.runs.jsonl")
            .read_text().splitlines()]
    assert [(r["target"], r["outcome"]) for r in runs] == [
        ("profile:alice", "ok"), ("profile:odd", "error"), ("profile:../etc", "not-found"),
        ("profile:ghost429", "not-found"), ("profile:carol", "ok")]
    assert not [x for x in logs if x.get("msg") == "rate limited"]  # "429" in a name
    assert "AttributeError" in runs[1]["error"]
    assert not any("etc" in path for _, path in fake.requests)
    tap.settle(0.5)
    keys = Counter(p["key"] for p in tap.posts(name))
    assert set(keys) == {f"instagram:{m['pk']}" for p in ("alice", "carol")
                         for m in fake.profiles[p].posts}


def test_a_profiles_path_that_is_no_file_is_one_line(tmp_path: Path) -> None:
    args = live_args("instagram", "--profiles", str(tmp_path / "lists" / "profiles.txt"),
                     "--brokers", "127.0.0.1:1", "--collector", "ig")
    assert args.live_run(args) == 2
    (tmp_path / "latin1.txt").write_bytes(b"jos\xe9\n")
    args = live_args("instagram", "--profiles", str(tmp_path / "latin1.txt"),
                     "--brokers", "127.0.0.1:1", "--collector", "ig")
    assert args.live_run(args) == 2


def test_max_posts_holds_across_a_kill(fixtures: Path, brokers: str, tap: KafkaTap,
                                       tmp_path: Path) -> None:
    """--max-posts 3 of a five-post profile, killed after its first page (2 posts): the
    restart resumes at the third post and stops there, 3 in all, not 3 more."""
    fake = batch(fixtures)
    fake.delay = 2.0
    (tmp_path / "profiles.txt").write_text("alice\n")
    session_file(tmp_path / "session")
    ca = TestCA(tmp_path / "ca", HOSTS)
    name = collector_name("ig")
    extra = ("--max-posts", "3", "--request-timeout", "10")
    with TlsServer(fake.app(), ca) as server:
        first = collector(server, ca, brokers, name, tmp_path, *extra)
        archive = tmp_path / "state.json.ids"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and first.poll() is None and not (
                archive.exists() and len(archive.read_text().split()) == 2):
            time.sleep(0.02)
        time.sleep(0.5)  # the first page (2 posts) taken and saved, the second not answered
        assert first.poll() is None, finish(first)[1][-5:]
        first.send_signal(signal.SIGKILL)
        finish(first, 10)
        tap.settle(0.3)
        assert len(tap.posts(name)) == 2
        code, logs = finish(collector(server, ca, brokers, name, tmp_path, *extra))
        assert code == 0, logs[-5:]
    tap.settle(0.5)
    keys = sorted(p["key"] for p in tap.posts(name))
    assert keys == sorted(f"instagram:{m['pk']}" for m in fake.profiles["alice"].posts[:3])
    runs = [json.loads(line) for line in (tmp_path / "state.json.runs.jsonl").read_text()
            .splitlines()]
    assert [(r["outcome"], r["posts"], r["skipped"]) for r in runs] == [("ok", 1, 1)]


def test_a_session_file_of_another_shape_is_one_line(brokers: str, tmp_path: Path,
                                                     caplog: Any) -> None:
    """A pickle that is not instaloader's (a list of cookies, a string): one line naming the
    file, exit 2, not a traceback from inside instaloader."""
    (tmp_path / "session").write_bytes(pickle.dumps(["sessionid", "s3cr3t-session"]))
    args = live_args("instagram", "--profiles", "alice", "--session-file",
                     str(tmp_path / "session"), "--brokers", brokers, "--collector",
                     collector_name("ig"))
    assert args.live_run(args) == 2
    errors = [str(getattr(r, "fields", {}).get("error")) for r in caplog.records
              if r.getMessage() == "collector failed"]
    assert len(errors) == 1 and "cannot read session file" in errors[0], errors
    assert "s3cr3t" not in errors[0]


def test_targets_become_queries_spelt_as_tiktoks() -> None:
    from connectors.collect.instagram import query_of

    assert query_of("profile:alice") == ("@alice", "profile")
    assert query_of("hashtag:london") == ("london", "hashtag")


def test_a_rate_limit_wait_survives_a_restart(tmp_path: Path) -> None:
    """Stopped (SIGTERM, or a reboot) while it waits out a 429, the batch started again with
    the same --state still waits until the time it logged: it used to ask Instagram at
    once, inside the block, which is how an account gets a longer one."""
    from connectors.collect.instagram import InstagramCollector
    from connectors.collect.live import Shutdown
    from shoal.batch import BatchProgress

    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--profiles", "alice", "--state", str(tmp_path / "state.json"),
                     "--rate-limit-wait", "600")
    outlet: Any = argparse.Namespace(progress=BatchProgress("instagram"),
                                     publisher=argparse.Namespace(flush=lambda _t: None))
    stopper = Stopper()
    stopper.set("SIGTERM")
    first = InstagramCollector(args, outlet, stopper)
    with contextlib.suppress(Shutdown):  # the 429; the stop ends the sleep at once
        first.rc.wait_out("profile:alice")
    first.run()  # stopped: asks nothing, saves the state
    again = InstagramCollector(args, outlet, Stopper())
    assert 590 < again.rc.query_waittime("other", time.time()) <= 600


def test_a_call_is_on_disk_before_the_next_wait(tmp_path: Path) -> None:
    """kill -9 while the batch waits for the hourly ceiling (where it spends most of its
    days) must not forget the call it made just before: the restarted batch would make one
    call too many in that hour. Each call is saved as it is counted."""
    import instaloader

    from connectors.collect.instagram import InstagramCollector
    from shoal.batch import BatchProgress

    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--profiles", "alice", "--state", str(tmp_path / "state.json"),
                     "--calls-per-hour", "2", "--save-every", "600")
    outlet: Any = argparse.Namespace(progress=BatchProgress("instagram"))
    first = InstagramCollector(args, outlet, Stopper())
    assert isinstance(first.rc, instaloader.RateController)
    first.rc.wait_before_query("other")  # Profile.from_username's query
    # ... killed here, waiting for the page query's turn.
    again = InstagramCollector(args, outlet, Stopper())
    assert len(again.rc.calls) == 1


def test_profiles_given_as_their_instagram_links(tmp_path: Path) -> None:
    """A profile list copied from a browser holds links: each was recorded ``not-found``
    (an outcome a restart never retries) without a query, and on the command line it was
    'profiles file ... does not exist'. A link to a profile is that profile; a link to a
    post is still no profile name."""
    from connectors.collect.instagram import targets_of, valid_target

    (tmp_path / "profiles.txt").write_text(
        "https://www.instagram.com/Alice/\ninstagram.com/bob?hl=en\n"
        "https://www.instagram.com/p/C1abcDEF/\n")
    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--profiles", str(tmp_path / "profiles.txt"),
                     "http://instagram.com/carol_c.x/", "@dave")
    targets = targets_of(args)
    assert targets[:2] == ["profile:alice", "profile:bob"]
    assert targets[3:] == ["profile:carol_c.x", "profile:dave"]
    assert not valid_target(targets[2])


def test_a_hashtag_given_as_a_profile_is_one_line(tmp_path: Path) -> None:
    """``--profiles '#london'`` was dropped without a word (in a file, '#' starts a comment)."""
    from connectors.collect.instagram import targets_of
    from connectors.collect.live import ConnectorError

    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--profiles", "alice", "#london")
    with pytest.raises(ConnectorError, match="#london is a hashtag, not a profile"):
        targets_of(args)
    (tmp_path / "p.txt").write_text("# my list\nalice  # the first\n")
    args = live_args("instagram", "--brokers", "127.0.0.1:1", "--collector", "ig",
                     "--profiles", str(tmp_path / "p.txt"))
    assert targets_of(args) == ["profile:alice"]  # comments in a file stay comments
