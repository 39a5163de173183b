"""Nothing lost at the edges: bad lines found by collectors reach the disk, an oversized record,
an empty or unreadable source, a hostile collector name and a second writer are each handled
without stopping the rest. Real processes, real broker, as a user runs them."""

from __future__ import annotations

import json
import lzma
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import Publisher, ensure_topics
from shoal.names import check_collector, safe_collector
from tests.pipeline import all_ids, publish, run_flow

SHOAL = [sys.executable, "-m", "shoal"]
V2 = "twitter-v2/DocNow__twarc-csv/test-data"


def shoal(*args: str, timeout: float = 120, check: bool = True,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SHOAL, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("shoal: ")]


def dead_letters(data: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in sorted((data / "_deadletter").glob("*/*_deadletter.jsonl.xz")):
        out += [json.loads(line) for line in lzma.decompress(path.read_bytes()).splitlines()]
    return out


def dead_report_total(data: Path) -> int:
    total = 0
    for path in (data / "_deadletter").glob("*/*_report.txt"):
        last = path.read_text().splitlines()[-1]
        assert last.startswith("total\t")
        total += int(last.split("\t")[1])
    return total


BAD_LINES = (b'not json\n{"data": [{"text": "a tweet without id"}]}\n'
             b'{"data": [{"id": "12x", "text": "non-numeric"}]}\n\xff\xfe not UTF-8\n')
BAD_REASONS = {"invalid JSON", "tweet without id", "invalid UTF-8"}


def bad_file(tmp_path: Path, fixtures: Path) -> tuple[Path, int]:
    """A real twarc2 file with four bad lines in the middle; returns it and its good posts."""
    good = (fixtures / V2 / "withheld.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(good[:2]) + BAD_LINES + b"".join(good[2:]))
    return path, len(good)


def reasons(letters: list[dict[str, object]]) -> set[str]:
    return {str(d["reason"]).split(":")[0] for d in letters}


def test_collector_dead_letters_reach_the_disk_once_under_up(
        tmp_path: Path, fixtures: Path) -> None:
    path, _ = bad_file(tmp_path, fixtures)
    data = tmp_path / "d"
    for _run in range(2):  # the second run over the same dir files nothing twice
        shoal("up", "--source", f"file:{path}", "--data-dir", str(data), "--idle-exit", "1",
              "--no-media")
        letters = dead_letters(data)
        assert len(letters) == 4, letters
        assert reasons(letters) >= BAD_REASONS
        assert {d["source"] for d in letters} == {f"{path}:{n}" for n in (3, 4, 5, 6)}
        assert all(d["collector"] == "file" for d in letters)
        assert dead_report_total(data) == 4


def test_collector_dead_letters_under_collect_process_and_replay(
        tmp_path: Path, fixtures: Path) -> None:
    path, _ = bad_file(tmp_path, fixtures)
    with EmbeddedBroker() as broker:
        shoal("collect", "file", str(path), "--brokers", broker.bootstrap, "--collector", "lab")
        shoal("process", "--brokers", broker.bootstrap, "--data-dir", str(tmp_path / "p"),
              "--idle-exit", "1", "--no-media")
        # A second processor run resumes: nothing new, nothing twice.
        shoal("process", "--brokers", broker.bootstrap, "--data-dir", str(tmp_path / "p"),
              "--idle-exit", "1", "--no-media")
        shoal("replay", "--brokers", broker.bootstrap, "--data-dir", str(tmp_path / "r"),
              "--from-beginning", "--idle-exit", "1", "--no-media")
    processed, replayed = dead_letters(tmp_path / "p"), dead_letters(tmp_path / "r")
    assert len(processed) == 4 and reasons(processed) >= BAD_REASONS
    assert all(d["collector"] == "lab" for d in processed)
    assert replayed == processed  # filed by message time: the same files


def test_an_oversized_record_is_a_dead_letter_and_collection_goes_on(
        tmp_path: Path, fixtures: Path) -> None:
    lines = (fixtures / V2 / "withheld.jsonl").read_text().splitlines()
    big = json.loads(lines[0])
    big["data"][0]["text"] = "x" * 300_000
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(big), *lines[1:]]) + "\n")
    data = tmp_path / "d"
    proc = shoal("up", "--source", f"file:{path}", "--data-dir", str(data), "--idle-exit", "1",
                 "--no-media", "--max-message-bytes", "200000")
    assert proc.returncode == 0
    (letter,) = dead_letters(data)
    assert str(letter["reason"]).startswith("oversized record: ")
    assert letter["source"] == f"{path}:2"
    assert int(str(letter["raw_bytes"])) > 300_000 >= len(str(letter["raw"])) > 1000
    # Every post after it was collected: the good file alone gives the same IDs.
    alone = tmp_path / "alone.jsonl"
    alone.write_text("\n".join(lines) + "\n")
    shoal("up", "--source", f"file:{alone}", "--data-dir", str(tmp_path / "a"),
          "--idle-exit", "1", "--no-media")
    assert all_ids(data) == all_ids(tmp_path / "a") != []


def test_empty_unreadable_and_directory_sources(tmp_path: Path, fixtures: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    folder = tmp_path / "exports"
    (folder / "sub").mkdir(parents=True)
    for name in ("two_tweets.jsonl", "withheld.jsonl"):
        (folder / "sub" / name).write_bytes((fixtures / V2 / name).read_bytes())
    (folder / ".hidden").write_text("ignored")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 not an export")
    data = tmp_path / "d"
    args = ["up", "--source", f"file:{empty}", "--source", f"file:{folder}",
            "--source", f"file:{junk}", "--data-dir", str(data), "--idle-exit", "1", "--no-media"]
    proc = shoal(*args)
    assert "empty source" in proc.stderr and "1 source(s) could not be read" in proc.stderr
    assert "junk.bin" in proc.stderr
    both = tmp_path / "both"
    shoal("up", "--source", f"file:{folder / 'sub'}", "--data-dir", str(both), "--idle-exit",
          "1", "--no-media")
    assert all_ids(data) == all_ids(both) != []
    # Asked for strictness: the same collection, then one line and a non-zero exit.
    strict = shoal(*args[:-5], "--data-dir", str(tmp_path / "s"), "--idle-exit", "1",
                   "--no-media", "--strict", check=False)
    assert strict.returncode == 2
    (line,) = error_lines(strict)
    assert "could not be read" in line and "junk.bin" in line
    assert all_ids(tmp_path / "s") == all_ids(both)


@pytest.mark.parametrize("name", ["a\tb", "a|b", "line\nbreak", "", "-x", "é" * 3, "x" * 65])
def test_collector_names_are_checked_in_one_line(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        check_collector(name)
    proc = shoal("collect", "file", str(tmp_path), "--brokers", "127.0.0.1:1",
                 f"--collector={name}", check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "collector" in line


def test_foreign_collector_names_are_encoded_not_split(tmp_path: Path, fixtures: Path) -> None:
    weird = "tab\there|pipe"
    assert safe_collector(weird) == "tab%09here%7Cpipe"
    assert safe_collector(weird) != safe_collector("tab here|pipe")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 2)
        publish(broker.bootstrap, [(weird, fixtures / V2 / "two_tweets.jsonl"),
                                   ("plain", fixtures / V2 / "two_tweets.jsonl")])
        run_flow(broker.bootstrap, tmp_path / "d")
    (report,) = (tmp_path / "d" / "twitter").glob("*/*_report.txt")
    header, *rows = [line.split("\t") for line in report.read_text().splitlines()
                     if not line.startswith("#")]
    assert header == ["hour", "plain", "tab%09here%7Cpipe", "total", "diff", "diff %", "late"]
    assert all(len(row) == len(header) for row in rows)


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    data = tmp_path / "d"
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 1)
        pub = Publisher(broker.bootstrap, "x")
        pub.close()
        first = subprocess.Popen([*SHOAL, "process", "--brokers", broker.bootstrap,
                                  "--data-dir", str(data), "--no-media"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (data / "_work" / "writer.json").exists():
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.1)
            for cmd in (["process", "--brokers", broker.bootstrap],
                        ["up", "--source", "demo:5"]):
                second = shoal(*cmd, "--data-dir", str(data), "--idle-exit", "1", check=False)
                assert second.returncode == 2
                (line,) = error_lines(second)
                assert f"is being written by pid {first.pid}" in line, line
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(30)
        # The kernel released the lock with its holder.
        shoal("process", "--brokers", broker.bootstrap, "--data-dir", str(data),
              "--idle-exit", "1", "--no-media")


def test_a_dead_letter_over_the_message_limit_reaches_the_disk_whole_and_the_topic_clipped(
        tmp_path: Path, fixtures: Path) -> None:
    """A post Kafka carried (the limit raised) that the dataflow refuses: its letter holds the
    whole record, more than a Kafka message may; it used to stop the dataflow, and was lost."""
    from kafka import KafkaConsumer

    lines = (fixtures / V2 / "withheld.jsonl").read_text().splitlines()
    big = json.loads(lines[0])
    big["data"][0]["text"] = "x" * 1_500_000  # over the normaliser's limit, and 1 MB
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join([json.dumps(big), *lines[1:]]) + "\n")
    limit = ("--max-message-bytes", "3000000")  # the collector's: the processor has none
    with EmbeddedBroker() as broker:
        b = broker.bootstrap
        shoal("collect", "file", str(path), "--brokers", b, "--collector", "lab", *limit)
        shoal("process", "--brokers", b, "--data-dir", str(tmp_path / "p"), "--idle-exit", "1",
              "--no-media")
        consumer = KafkaConsumer("shoal.deadletter", bootstrap_servers=b,
                                 auto_offset_reset="earliest", consumer_timeout_ms=5000)
        sent = [json.loads(m.value) for m in consumer]
        consumer.close()
    (letter,) = dead_letters(tmp_path / "p")
    assert str(letter["reason"]).startswith("text too long")
    assert letter["input"] == f"{path}:1"  # where the dataflow's letter came from, before Kafka
    assert str(letter["source"]).startswith("shoal.posts/")
    assert json.loads(str(letter["raw"]))["text"] == "x" * 1_500_000  # whole, on disk
    (message,) = sent
    assert message["reason"] == letter["reason"] and message["source"] == letter["source"]
    assert int(str(message["raw_bytes"])) > 1_500_000 > 100_000 > len(message["raw"])
    assert str(letter["raw"]).startswith(message["raw"])
    pages = [big, *map(json.loads, lines[1:])]
    others = {t["id"] for page in pages for t in page["data"]} - {big["data"][0]["id"]}
    assert set(all_ids(tmp_path / "p")) == others  # every other post was written


def test_compressed_exports_are_read_and_a_truncated_one_keeps_what_it_holds(
        tmp_path: Path, fixtures: Path) -> None:
    """A `.jsonl.xz` (or gzip) export was read as its compressed bytes: every line a binary
    dead letter. A cut-short one stopped the whole run, other sources included."""
    import bz2
    import gzip

    from shoal.formats import detect_format, read_file
    from shoal.model import RawPost

    def post_ids(path: Path) -> list[str]:
        return [r.id for r in read_file(path) if isinstance(r, RawPost)]

    def kinds(path: Path) -> list[str]:
        return [type(r).__name__ for r in read_file(path)]

    plain = fixtures / V2 / "withheld.jsonl"
    data = plain.read_bytes()
    expected = post_ids(plain)
    for name, pack in (("w.jsonl.xz", lzma.compress), ("w.json.gz", gzip.compress),
                       ("w.jsonl.bz2", bz2.compress), ("named-plain.xz", bytes)):
        packed = tmp_path / name
        packed.write_bytes(pack(data))
        assert detect_format(packed) == "twitter-v2"
        assert post_ids(packed) == expected
        assert kinds(packed) == kinds(plain)  # the same page errors, no dead letter

    xz = lzma.compress(data)
    cut = tmp_path / "cut.jsonl.xz"
    cut.write_bytes(xz[: len(xz) * 2 // 3])
    other = fixtures / V2 / "kpop.jsonl"
    out = tmp_path / "cut"
    proc = shoal("up", "--source", f"a=file:{cut}", "--source", f"b=file:{other}",
                 "--data-dir", str(out), "--idle-exit", "1", "--no-media")
    assert proc.returncode == 0
    got = set(all_ids(out))
    assert set(post_ids(other)) <= got  # the other source was collected whole
    from_cut = got & set(expected)
    assert from_cut and from_cut != set(expected)  # what was read before the cut stands
    (letter,) = dead_letters(out)
    assert str(letter["reason"]).startswith("file unreadable after ")
    assert letter["source"] == str(cut)


def test_an_input_collected_again_later_files_its_dead_letters_once(
        tmp_path: Path, fixtures: Path) -> None:
    """Letters are filed by the hour they reached Kafka: `shoal up` run again over the same
    file an hour later filed them all again; and one file read under two collector names
    counted the dataflow's letters (a bad date) twice but the collectors' once."""
    path, _ = bad_file(tmp_path, fixtures)
    lines = path.read_bytes().splitlines(keepends=True)
    page = json.loads(lines[0])
    page["data"][0]["created_at"] = "9999-12-31T23:59:59.000Z"  # the dataflow's letter
    path.write_bytes(json.dumps(page).encode() + b"\n" + b"".join(lines[1:]))
    data = tmp_path / "d"
    up = ("--data-dir", str(data), "--idle-exit", "1", "--no-media")
    shoal("up", "--source", f"file:{path}", *up)
    first = dead_letters(data)
    assert len(first) == 5 and dead_report_total(data) == 5
    # As if the first run had been an hour earlier: its letters in another hour's file.
    for old in (data / "_deadletter").glob("*/*_deadletter.jsonl.xz"):
        earlier = data / "_deadletter" / "2020-01-01" / "2020-01-01_00_deadletter.jsonl.xz"
        earlier.parent.mkdir(exist_ok=True)
        old.rename(earlier)
    shoal("up", "--source", f"file:{path}", *up)
    assert len(dead_letters(data)) == 5  # none filed twice
    both = tmp_path / "both"
    shoal("up", "--source", f"a=file:{path}", "--source", f"b=file:{path}", "--data-dir",
          str(both), "--idle-exit", "1", "--no-media")
    letters = dead_letters(both)
    assert sorted(str(d["reason"]) for d in letters) == sorted(str(d["reason"]) for d in first)
