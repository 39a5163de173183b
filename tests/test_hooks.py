"""After-seal hooks with real subprocesses: a small Python script stands in for osf/rsync."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.ops import metrics
from connectors.ops.hooks import FAILED_FILE, QUEUE_FILE, HookRunner, render
from connectors.store.layout import HourPaths
from shoal.merge import HourSummary
from shoal.templates import check_hook_template as check_template

RECORDER = """
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
counter = out.with_suffix(".count")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
fail_first = int(sys.argv[2])
if n <= fail_first:
    print("remote said no", file=sys.stderr)
    sys.exit(3)
with out.open("a") as fh:
    fh.write(json.dumps(sys.argv[3:]) + "\\n")
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "recorder.py"
    path.write_text(RECORDER)
    return path


def _template(script: Path, out: Path, fail_first: int, rest: str) -> str:
    head = " ".join(shlex.quote(str(p)) for p in (sys.executable, script, out))
    return f"{head} {fail_first} {rest}"


def _calls(out: Path) -> list[list[str]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def _summary(platform: str, start: int, day: str, label: str) -> HourSummary:
    known: dict[str, Any] = {"platform": platform, "start": start, "day": day, "label": label}
    empty = {"dict[str, int]": {}, "int": 0, "bool": False, "str": ""}
    return HourSummary(**{f.name: known.get(f.name, empty.get(str(f.type)))
                          for f in dataclasses.fields(HourSummary)})


def _seal_files(data: Path, platform: str, start: int) -> HourPaths:
    """Files where the real sealer puts them (HourPaths), so both sides agree on the layout."""
    paths = HourPaths(data, platform, start, "UTC")
    for kind in ("IDs", "tweets" if platform == "twitter" else "posts", "users", "media"):
        paths.file(kind).parent.mkdir(parents=True, exist_ok=True)
        paths.file(kind).write_bytes(b"x")
    (paths.folder / f"{paths.name.day}_report.txt").write_text("hour\ttotal\n")
    return paths


def test_each_sealed_file_runs_the_command_with_its_fields(tmp_path: Path, script: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    start = 1_714_557_600  # 2024-05-01 10:00 UTC
    paths = _seal_files(data, "twitter", start)
    runner = HookRunner(data, [_template(script, out, 0, "{path} {day}/{name} {kind} {relpath}")],
                        kinds=["IDs", "tweets", "report"], backoff=0.01)
    runner.start()
    try:
        assert runner.on_sealed(_summary("twitter", start, "2024-05-01", "10")) == 3
        assert runner.wait_idle(20)
    finally:
        runner.close()
    calls = sorted(_calls(out), key=lambda c: c[2])
    assert calls == [
        [str(paths.file("IDs").resolve()), "2024-05-01/2024-05-01_10_IDs.txt.xz", "IDs",
         "twitter/2024-05-01/2024-05-01_10_IDs.txt.xz"],
        [str((paths.folder / "2024-05-01_report.txt").resolve()),
         "2024-05-01/2024-05-01_report.txt", "report", "twitter/2024-05-01/2024-05-01_report.txt"],
        [str(paths.file("tweets").resolve()), "2024-05-01/2024-05-01_10_tweets.csv.xz", "tweets",
         "twitter/2024-05-01/2024-05-01_10_tweets.csv.xz"],
    ]
    assert (data / QUEUE_FILE).read_bytes() == b""  # nothing left pending


def test_failing_hook_is_retried_with_backoff_then_succeeds(
        tmp_path: Path, script: Path, caplog: pytest.LogCaptureFixture) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    retry_before = metrics.HOOKS.labels("retry")._value.get()
    ok_before = metrics.HOOKS.labels("ok")._value.get()
    runner = HookRunner(data, [_template(script, out, 2, "{name}")], attempts=5, backoff=0.05)
    runner.start()
    with caplog.at_level(logging.INFO, logger="shoal.hooks"):
        runner.submit({"name": "a.txt"})
        assert runner.wait_idle(20)
    runner.close()
    assert _calls(out) == [["a.txt"]]
    assert out.with_suffix(".count").read_text() == "3"
    assert metrics.HOOKS.labels("retry")._value.get() == retry_before + 2
    assert metrics.HOOKS.labels("ok")._value.get() == ok_before + 1
    records = [(r.getMessage(), r.fields) for r in caplog.records]  # type: ignore[attr-defined]
    retries = [f for m, f in records if m == "hook failed, retrying"]
    assert [f["attempt"] for f in retries] == [1, 2]
    assert [f["in"] for f in retries] == [0.05, 0.1]  # doubles
    assert retries[0]["error"] == "exit 3: remote said no"
    assert [f["attempt"] for m, f in records if m == "hook ok"] == [3]


def test_hook_given_up_after_bounded_attempts(tmp_path: Path, script: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    failed_before = metrics.HOOKS.labels("failed")._value.get()
    runner = HookRunner(data, [_template(script, out, 99, "{name}")], attempts=3, backoff=0.01)
    runner.start()
    runner.submit({"name": "b.txt"})
    assert runner.wait_idle(20)
    runner.close()
    assert out.with_suffix(".count").read_text() == "3" and _calls(out) == []
    assert metrics.HOOKS.labels("failed")._value.get() == failed_before + 1
    failed = [json.loads(line) for line in (data / FAILED_FILE).read_text().splitlines()]
    assert [(f["fields"]["name"], f["attempts"]) for f in failed] == [("b.txt", 3)]


def test_injection_in_a_file_name_stays_literal(tmp_path: Path, script: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    evil = "x; touch PWNED $(touch PWNED2) `touch PWNED3` 'q\" && echo {day} > PWNED4.txt"
    template = _template(script, out, 0, "--dest \"remote:/{day}/{name}\" {path}")
    runner = HookRunner(data, [template], backoff=0.01)
    runner.start()
    runner.submit({"name": evil, "path": f"/data/{evil}", "day": "2024-05-01"})
    assert runner.wait_idle(20)
    runner.close()
    assert _calls(out) == [["--dest", f"remote:/2024-05-01/{evil}", f"/data/{evil}"]]
    assert not [p.name for p in tmp_path.rglob("PWNED*")]
    assert not list(Path.cwd().glob("PWNED*"))


def test_pending_hooks_survive_a_restart(tmp_path: Path, script: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    template = _template(script, out, 0, "{name}")
    first = HookRunner(data, [template])  # never started: the process "dies" before running
    first.submit({"name": "one"})
    first.submit({"name": "two"})
    with open(data / QUEUE_FILE, "ab") as fh:
        fh.write(b'{"op": "add", "id": "torn", "argv": ["x"')  # a crash mid-write
    assert _calls(out) == []

    second = HookRunner(data, [template], backoff=0.01)
    second.start()
    assert second.wait_idle(20)
    second.close()
    assert _calls(out) == [["one"], ["two"]]

    third = HookRunner(data, [template])  # done jobs are not run again
    third.start()
    assert third.wait_idle(5)
    third.close()
    assert _calls(out) == [["one"], ["two"]]


def test_burst_larger_than_the_memory_queue_waits_in_the_file(
        tmp_path: Path, script: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    runner = HookRunner(data, [_template(script, out, 0, "{name}")], queue_size=2)
    runner.start()
    for i in range(6):
        runner.submit({"name": str(i)})
    assert runner.wait_idle(30)
    runner.close()
    assert sorted(c[0] for c in _calls(out)) == [str(i) for i in range(6)]
    assert len(_calls(out)) == 6  # each exactly once


def test_templates_are_checked() -> None:
    assert render("rsync {path} 'backup:/shoal/{day}/'", {"path": "a b", "day": "d"}) == [
        "rsync", "a b", "backup:/shoal/d/"]
    assert render("echo {{literal}} {name}", {"name": "n"}) == ["echo", "{literal}", "n"]
    for bad, why in [
        ("osf upload {where}", "unknown field {where}"),
        ("{path} --run", "first word"),
        ("rsync '{path}", "cannot split"),
        ("rsync {path.__class__}", "unknown field"),
        ("rsync {path!r}", "no format or conversion"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=why.replace("{", r"\{").replace("}", r"\}")):
            check_template(bad)


def _up(data: Path, source: Path, template: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", "up", "--source", f"file:{source}", "--data-dir",
         str(data), "--idle-exit", "1", "--no-media", "--hook", template],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "SHOAL_HOOKS_KINDS": "IDs", **env})


def _logged(stderr: str, msg: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("msg") == msg:
                out.append(rec)
    return out


def test_idle_exit_persists_a_hook_being_retried_and_says_so(
        tmp_path: Path, script: Path) -> None:
    """A hook waiting out its backoff when ``--idle-exit`` fires is kept, logged, and run by
    the next start; hooks that can run at exit are finished first (the real CLI)."""
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps({
        "id": str(100 + i), "text": "t", "created_at": "2021-05-11T21:36:01.000Z",
        "author_id": "7", "author": {"id": "7", "username": "u"}}) + "\n" for i in range(3)))
    data, out = tmp_path / "data", tmp_path / "calls.jsonl"
    template = _template(script, out, 1, "{name}")  # the first run fails, later ones work

    first = _up(data, source, template, SHOAL_HOOKS_BACKOFF_SECONDS="120")
    assert first.returncode == 0, first.stderr[-2000:]
    (pending,) = _logged(first.stderr, "hooks pending at exit")
    assert pending["pending"] == 1 and pending["retrying"] is True
    assert pending["kept_in"] == str(data / QUEUE_FILE)
    assert _calls(out) == []
    with open(data / QUEUE_FILE, "rb") as fh:
        kept = [json.loads(line) for line in fh]
    assert [j["fields"]["name"] for j in kept] == ["2021-05-11_21_IDs.txt.xz"]

    second = _up(data, source, template)
    assert second.returncode == 0, second.stderr[-2000:]
    assert _logged(second.stderr, "hooks resumed")[0]["pending"] == 1
    assert _logged(second.stderr, "hooks done at exit")
    assert not _logged(second.stderr, "hooks pending at exit")
    # The kept job and the new seal's job both ran before the exit.
    assert _calls(out) == [["2021-05-11_21_IDs.txt.xz"]] * 2
