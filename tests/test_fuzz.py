"""Thousands of mutated real payloads thrown at the readers and normalisers: zero crashes.

A reader may only yield posts, dead letters and control records; a normaliser may only return
a post or raise BadPost. Anything else escaping would stop a collector or quarantine a whole
batch, so it is a bug whatever the input.
"""

from __future__ import annotations

import json
import lzma
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.formats import read_file, readers
from shoal.model import BadPost, Control, DeadLetter, RawPost
from shoal.normalise import normalise
from tests.conftest import FIXTURES

SAMPLES = [
    ("twitter-v2", "twitter-v2/DocNow__twarc-csv/test-data/streaming_output.jsonl"),
    ("twitter-v2", "twitter-v2/DocNow__twarc-csv/test-data/brexit.jsonl"),
    ("twitter-v1", "twitter-v1/bear__python-twitter/testdata/streaming/lines.json"),
    ("minet-csv", "minet-csv/medialab__twitwi/test/resources/tweet-export.csv"),
    ("zeeschuimer", "tiktok/jorisheijkant__zeeschuimer-decoder/test-files/"
                    "tiktok-test.lines-001-064.ndjson"),
    ("zeeschuimer", "instagram/craigfahner__zeeschuimer-workshop/posts.ndjson"),
    ("bluesky", "bluesky/bluesky-social__jetstream/internal/corpus/testdata/expected_v1.jsonl"),
]


def _lines(rel: str) -> list[bytes]:
    data = (FIXTURES / rel).read_bytes()
    lines = data.splitlines(keepends=True)
    return lines[:40]


LINES = {rel: _lines(rel) for _, rel in SAMPLES}

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=3),
    st.just("\x00"), st.just("9" * 400), st.just("0000-00-00T00:00:00Z"),
)


def _mutate_json(value: object, data: st.DataObject, depth: int = 0) -> object:
    """Replace, drop or retype one field somewhere inside a JSON value."""
    if isinstance(value, dict) and value and depth < 6:
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["replace", "drop", "recurse", "recurse"]))
        out = dict(value)
        if action == "replace":
            out[key] = data.draw(JUNK)
        elif action == "drop":
            del out[key]
        else:
            out[key] = _mutate_json(value[key], data, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 6:
        i = data.draw(st.integers(0, len(value) - 1))
        out_list = list(value)
        out_list[i] = _mutate_json(value[i], data, depth + 1)
        return out_list
    return data.draw(JUNK)


def _mutate_bytes(line: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "nul", "latin1", "huge", "json"]))
    if kind == "truncate":
        return line[: data.draw(st.integers(0, max(0, len(line) - 1)))] + b"\n"
    if kind == "flip" and line:
        i = data.draw(st.integers(0, len(line) - 1))
        return line[:i] + bytes([line[i] ^ 0xFF]) + line[i + 1 :]
    if kind == "nul":
        return line.replace(b'"', b'"\x00', 1)
    if kind == "latin1":
        return line.replace(b"e", b"\xe9", 3)
    if kind == "huge":
        return line.replace(b'"text":"', b'"text":"' + b"x" * 2_000_000, 1)
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    # The stdlib writes what orjson refuses (NaN, integers past 64 bits): hostile input too.
    return json.dumps(_mutate_json(value, data), ensure_ascii=False).encode() + b"\n"


def _check(path: Path, fmt: str) -> None:
    for rec in read_file(path, fmt):
        assert isinstance(rec, (RawPost, DeadLetter, Control)), type(rec)
        if isinstance(rec, DeadLetter):
            assert rec.reason
            continue
        if isinstance(rec, RawPost):
            try:
                norm = normalise(rec.format, orjson.loads(orjson.dumps(rec.payload)),
                                 "2024-01-01T00:00:00+00:00")
            except BadPost as exc:
                assert str(exc)
                continue
            assert norm.id and norm.created_at.tzinfo is not None
            assert all(isinstance(v, str) for v in norm.post.values())


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_fixture_lines_never_crash(data: st.DataObject) -> None:
    fmt, rel = data.draw(st.sampled_from(SAMPLES))
    if rel.endswith(".csv"):
        lines = LINES[rel]
        header, rows = lines[0], lines[1:]
        body = [_mutate_bytes(r, data) if data.draw(st.booleans()) else r for r in rows[:3]]
        content = header + b"".join(body)
    else:
        picked = data.draw(st.lists(st.sampled_from(LINES[rel]), min_size=1, max_size=3))
        content = b"".join(_mutate_bytes(line, data) for line in picked)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(content)
        _check(path, fmt)


def test_every_reader_is_fuzzed() -> None:
    assert {fmt for fmt, _ in SAMPLES} <= set(readers())


# --------------------------------------------------------------------------- end to end


def _mutated_file(rel: str, rnd: random.Random, lines: int = 25) -> bytes:
    """A real export with about a third of its records broken in one of many ways."""
    data = (FIXTURES / rel).read_bytes().splitlines(keepends=True)
    head, rows = (data[:1], data[1:]) if rel.endswith(".csv") else ([], data)
    out = list(head)
    for line in rows[:lines]:
        if not line.endswith(b"\n"):
            line += b"\n"
        kind = rnd.choice(["keep", "keep", "truncate", "flip", "nul", "latin1", "huge", "junk"])
        if kind == "truncate":
            line = line[: rnd.randrange(max(1, len(line) - 1))] + b"\n"
        elif kind == "flip":
            i = rnd.randrange(len(line) - 1) if len(line) > 1 else 0
            line = line[:i] + bytes([line[i] ^ 0xFF]) + line[i + 1:]
        elif kind == "nul":
            line = line.replace(b'"', b'"\x00', 1)
        elif kind == "latin1":
            line = line.replace(b"e", b"\xe9", 3)
        elif kind == "huge":  # over the broker's message limit: a dead letter, not a stop
            line = line.replace(b'"text":"', b'"text":"' + b"x" * 1_200_000, 1)
        elif kind == "junk":
            line = rnd.choice([b"null\n", b"[1, 2]\n", b'{"data": 7}\n', b"\xff\xfe\n", b"{\n"])
        out.append(line)
    return b"".join(out)


def test_mutated_files_through_shoal_up_lose_nothing(tmp_path: Path) -> None:
    """Every input record ends as exactly one post or one dead letter on disk, and the run
    exits 0: mutated real files through the collector, Kafka, the dataflow and the sealer."""
    rnd = random.Random(20261204)
    sources = []
    expected_posts: set[tuple[str, str]] = set()
    collector_dead = flow_dead = 0
    for n, (fmt, rel) in enumerate(SAMPLES):
        path = tmp_path / f"in{n}{Path(rel).suffix}"
        path.write_bytes(_mutated_file(rel, rnd))
        sources += ["--source", f"file:{path}"]
        for rec in read_file(path, fmt):
            if isinstance(rec, DeadLetter):
                collector_dead += 1
            elif isinstance(rec, RawPost):
                if len(orjson.dumps(rec.payload)) > 1_000_000:
                    collector_dead += 1  # oversized: the collector keeps its head
                    continue
                try:
                    norm = normalise(rec.format, orjson.loads(orjson.dumps(rec.payload)),
                                     "2024-01-01T00:00:00+00:00")
                except BadPost:
                    flow_dead += 1
                else:
                    expected_posts.add((norm.platform, norm.id))
    data = tmp_path / "d"
    run = subprocess.run([sys.executable, "-m", "shoal", "up", *sources, "--data-dir",
                          str(data), "--idle-exit", "1", "--no-media"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got_posts = set()
    for ids in data.glob("*/*/*_IDs.txt.xz"):
        platform = ids.relative_to(data).parts[0]
        got_posts |= {(platform, i) for i in lzma.decompress(ids.read_bytes()).decode().split()}
    letters = [orjson.loads(line) for p in data.glob("_deadletter/*/*_deadletter.jsonl.xz")
               for line in lzma.decompress(p.read_bytes()).splitlines()]
    from_collectors = [d for d in letters if str(d["source"]).startswith(str(tmp_path))]
    assert got_posts == expected_posts and len(expected_posts) > 50
    assert len(from_collectors) == collector_dead > 10
    assert len(letters) - len(from_collectors) == flow_dead
