"""The raw archive: payloads kept exactly, one line per post, and a data dir rebuilt from it
byte for byte."""

from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import orjson

from shoal import chunks
from shoal.formats import detect_format, read_file
from shoal.formats.shoal_archive import NAME, archive_line, parse_line
from shoal.merge import HourState
from shoal.model import RawPost
from tests.pipeline import all_ids, pipeline

V2 = "twitter-v2/DocNow__twarc-csv/test-data"
BLUESKY = "bluesky/medialab__twitwi/test/resources/bluesky-posts.json"

# Escapes orjson would rewrite, spacing it would drop, a NUL escape chunks.encode() rewrites
# elsewhere in a line, a "j" key and a "payload" key of the payload's own.
ODD = (b' {"id": "1", "text":"caf\\u00e9 \\u0000 \\"q\\"", "n": 1.50, "j": {},'
       b' "payload": 2,"z":[1 ,2]}  ')


def test_chunk_line_carries_the_payload_byte_for_byte() -> None:
    row = {"id": "1", "retrieved_at": "t", "text": "a\x00b"}
    for raw in (ODD, b'{\n  "id": "1"\n}'):
        line = chunks.post_line("c", row, raw=raw, fmt="twitter-v2", retrieved="t0")
        assert line.endswith(b"}\n") and line.count(b"\n") == 1
        orjson.loads(line)  # still one JSON document
        head, got = chunks.split_raw(line)
        assert got == raw
        rec = orjson.loads(head)
        assert rec["r"]["text"] == "a\ufffdb"  # the row's NUL rewritten, the payload's not
        assert (rec["f"], rec["t"]) == ("twitter-v2", "t0")
    assert chunks.split_raw(chunks.post_line("c", row)) == (chunks.post_line("c", row), None)


def test_archive_line_round_trips_and_is_read_as_its_own_format(tmp_path: Path) -> None:
    lines = [archive_line("twitter", "1", "twitter-v2", ["b", "a"], "t0", True, ODD),
             archive_line("twitter", "2", "twitter-v2", ["a"], "t1", False, b'{"id":\n"2"}')]
    for line in lines:
        orjson.loads(line)
    head, raw = parse_line(lines[0])
    assert raw == ODD and head["collectors"] == ["a", "b"] and head["late"] is True
    path = tmp_path / "2021-01-01_00_raw.jsonl.xz"
    path.write_bytes(lzma.compress(b"".join(lines) + b"not json\n"))
    assert detect_format(path) == NAME
    got = list(read_file(path))
    assert [type(r).__name__ for r in got] == ["RawPost", "RawPost", "DeadLetter"]
    first, second = got[0], got[1]
    assert isinstance(first, RawPost) and isinstance(second, RawPost)
    assert (first.raw, first.collectors, first.retrieved_at, first.late) == (
        ODD, ("a", "b"), "t0", True)
    assert first.payload["payload"] == 2
    assert (second.raw, second.late) == (b'{"id":\n"2"}', False)


def test_the_kept_payload_does_not_depend_on_arrival_order() -> None:
    row = {"id": "1", "retrieved_at": "2021-01-01T00:00:00+00:00"}
    later = {**row, "retrieved_at": "2021-01-01T00:05:00+00:00"}
    copies = [(row, "a", ("t", "f", b'{"v":2}')), (row, "b", ("t", "f", b'{"v":1}')),
              (later, "c", ("t", "f", b'{"v":0}')), (row, "d", None)]
    kept = set()
    for order in (copies, copies[::-1], copies[1:] + copies[:1], copies[2:] + copies[:2]):
        state = HourState()
        for r, c, raw in order:
            state.add_post(dict(r), (c,), raw)
        kept.add((state.raw["1"], orjson.dumps(state.posts["1"])))
    assert kept == {(("t", "f", b'{"v":1}'), orjson.dumps(row))}


def outputs(root: Path) -> dict[str, str]:
    """SHA-256 of every hourly file of every platform (hidden meta files too), day reports
    and Parquet partitions: everything but the working files."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).parts[0].startswith(("_work", "_dead"))
        and not p.name.endswith((".tmp", ".duckdb", ".lock"))
    }


def test_a_data_dir_rebuilt_from_its_raw_archive_is_byte_identical(
    fixtures: Path, tmp_path: Path
) -> None:
    from shoal.app.cli import main

    original, rebuilt = tmp_path / "original", tmp_path / "rebuilt"
    # Two collectors sharing a file (one line, both named), search results that run back in
    # time (late posts), and a second platform interleaved in Kafka with the first.
    pipeline(original, [("x", fixtures / V2 / "brexit.jsonl"),
                        ("y", fixtures / V2 / "brexit.jsonl"),
                        ("y", fixtures / V2 / "kpop.jsonl"),
                        ("x", fixtures / BLUESKY)], partitions=3)
    archives = sorted(original.glob("*/*/*_raw.jsonl.xz"))
    assert {p.parent.parent.name for p in archives} == {"twitter", "bluesky"}
    lines = [line for p in archives for line in lzma.decompress(p.read_bytes()).splitlines()]
    for path in archives:  # one line per post of the hour, in the IDs file's order
        ids_file = path.with_name(path.name.replace("_raw.jsonl.xz", "_IDs.txt.xz"))
        ids = lzma.decompress(ids_file.read_bytes()).decode().split()
        got = [parse_line(line)[0]["id"]
               for line in lzma.decompress(path.read_bytes()).splitlines()]
        assert got == ids
    assert len(lines) == len(all_ids(original)) + len(all_ids(original, "bluesky"))
    heads = [parse_line(line)[0] for line in lines]
    assert any(h["collectors"] == ["x", "y"] for h in heads)
    meta = [orjson.loads(p.read_bytes()) for p in original.glob("*/*/.*_meta.json")]
    late = sum(m["late"] for m in meta)
    assert late == sum(1 for h in heads if h.get("late")) > 0
    # Payloads exactly as published: byte for byte what orjson wrote for the file's records.
    published = {orjson.dumps(r.payload) for r in read_file(fixtures / V2 / "kpop.jsonl")
                 if isinstance(r, RawPost)}
    kpop = [parse_line(line)[1] for line in lines if b'"collectors":["y"]' in line]
    assert kpop and set(kpop) <= published

    assert main(["replay", "--from-archive", str(original), "--data-dir", str(rebuilt),
                 "--no-media", "--epoch-seconds", "0.5"]) == 0
    before, after = outputs(original), outputs(rebuilt)
    assert any(name.endswith("_report.csv") or "report" in name for name in before)
    assert len(before) > 20
    assert before == after


def test_a_replay_serves_its_metrics_and_logs_its_progress(tmp_path: Path) -> None:
    """`replay --metrics-port` and `--progress-seconds` were taken and ignored (Kafka replay
    had no metrics server; the archive rebuild had neither)."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    from connectors.kafka.broker import free_port

    shoal = [sys.executable, "-m", "shoal"]
    original = tmp_path / "original"
    made = subprocess.run([*shoal, "up", "--source", "demo:3000", "--data-dir", str(original),
                           "--idle-exit", "1", "--no-media"], capture_output=True, text=True,
                          timeout=180, env=_own_spool(tmp_path))
    assert made.returncode == 0, made.stderr[-3000:]
    port = free_port()
    proc = subprocess.Popen([*shoal, "replay", "--from-archive", str(original), "--data-dir",
                             str(tmp_path / "rebuilt"), "--no-media", "--metrics-port",
                             str(port), "--progress-seconds", "0.2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_own_spool(tmp_path))
    scraped = ""
    deadline = time.monotonic() + 150
    while proc.poll() is None and time.monotonic() < deadline and not scraped:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                scraped = r.read().decode()
        except OSError:
            time.sleep(0.1)
    _out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-2000:]
    assert "shoal_" in scraped
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["msg"] == "progress" for r in records), err[-2000:]


def test_a_raw_archive_read_as_a_source_credits_the_collectors_it_names(
        tmp_path: Path) -> None:
    """`--source file:ARCHIVE` reported every post under the source's name, where the
    archive says which collectors saw it (`replay --from-archive` credited them)."""
    import subprocess
    import sys

    shoal = [sys.executable, "-m", "shoal"]
    original = tmp_path / "original"
    made = subprocess.run([*shoal, "up", "--source", "demo:400", "--data-dir", str(original),
                           "--idle-exit", "1", "--no-media"], capture_output=True, text=True,
                          timeout=180, env=_own_spool(tmp_path))
    assert made.returncode == 0, made.stderr[-3000:]
    (archive,) = sorted(original.glob("twitter/*/*_raw.jsonl.xz"))[:1]
    again = tmp_path / "again"
    made = subprocess.run([*shoal, "up", "--source", f"file:{archive}", "--data-dir",
                           str(again), "--idle-exit", "1", "--no-media"], capture_output=True,
                          text=True, timeout=180, env=_own_spool(tmp_path))
    assert made.returncode == 0, made.stderr[-3000:]
    rel = archive.relative_to(original)
    name = rel.name.replace("_raw.jsonl.xz", "_report.txt")
    day = rel.parent.name
    before = (original / "twitter" / day / f"{day}_report.txt").read_text().splitlines()
    after = (again / "twitter" / day / f"{day}_report.txt").read_text().splitlines()
    hour = name.split("_")[1]
    assert after[0] == before[0] == "hour\tdemo-a\tdemo-b\ttotal\tdiff\tdiff %\tlate"
    row = next(r for r in after if r.startswith(hour + "\t"))
    assert row.split("\t")[:5] == next(r for r in before if r.startswith(hour + "\t")).split(
        "\t")[:5]


def _own_spool(tmp_path: Path) -> dict[str, str]:
    """The environment of a `shoal up` of these tests: a spool and config folder of its own,
    so that nothing another run left in the user's spool is delivered into it."""
    import os

    return {**os.environ, "SHOAL_SPOOL_DIR": str(tmp_path / "spool"),
            "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
