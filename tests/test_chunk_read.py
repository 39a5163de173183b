"""A chunk parsed in place (``apply_buffer``) merges into what its lines merge into."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.store.chunks import apply_chunk, write_chunk
from shoal import chunks
from shoal.merge import HourState
from tests.test_archive import ODD

TEXT = st.text(alphabet=st.sampled_from('ab,"}{\n\r\x00é\\ j:'), max_size=12)
RAWS = st.sampled_from([None, ODD, b'{\n  "id": "1"\n}', b'{"j":1,"x":",\\"j\\":"}', b"{}"])


@st.composite
def chunk_lines(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        pid = str(draw(st.integers(1, 4)))
        kind = draw(st.sampled_from("psumb"))
        if kind == "p":
            row = {"id": pid, "retrieved_at": draw(st.sampled_from(["t1", "t2"])),
                   "text": draw(TEXT)}
            user = {"id": "u" + pid, "retrieved_at": "t1", "name": draw(TEXT)}
            media = [{"post_id": pid, "position": "0", "url": draw(TEXT)}]
            lines.append(chunks.post_line(
                draw(st.sampled_from(["c1", "c2"])), row, late=draw(st.booleans()),
                user=user if draw(st.booleans()) else None,
                media=media if draw(st.booleans()) else (), raw=draw(RAWS),
                fmt="twitter-v2", retrieved=draw(st.sampled_from(["t1", "t2"]))))
        elif kind == "s":
            lines.append(chunks.seen_line(pid, "c3"))
        elif kind == "u":
            lines.append(chunks.user_line({"id": "u" + pid, "retrieved_at": "t3", "name": "x"}))
        elif kind == "m":
            lines.append(chunks.media_line({"post_id": pid, "position": "0", "url": "u",
                                            "fetched_at": "t9", "sha256": "ab"}))
        else:
            lines.append(draw(st.sampled_from([b"\n", b"  \n", b" \t \n"])))
    return lines


def _state(state: HourState, seen: list[tuple[str, str]]) -> tuple[object, ...]:
    return (state.posts, state.raw, state.collectors, state.users, state.media,
            state.on_time, state.late_copies, sorted(seen))


@settings(max_examples=150, deadline=None)
@given(lines=chunk_lines())
def test_a_chunk_read_in_place_merges_as_its_lines_do(lines: list[bytes]) -> None:
    expected, expected_seen = HourState(), list[tuple[str, str]]()
    chunks.apply_lines(expected, b"".join(lines).split(b"\n"), expected_seen)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_chunk(Path(tmp), "twitter", 0, "p0", lines)
        got, got_seen = HourState(), list[tuple[str, str]]()
        apply_chunk(got, path, got_seen)
    assert _state(got, got_seen) == _state(expected, expected_seen)


def test_raw_payloads_come_out_byte_for_byte(tmp_path: Path) -> None:
    raws = [ODD, b'{\n  "id": "2"\n}', b'{"id":"3","t":",\\"j\\":{}"}']
    lines = [chunks.post_line("c", {"id": str(i + 1), "retrieved_at": "t", "text": ',"j":'},
                              raw=raw, fmt="f", retrieved="t0") for i, raw in enumerate(raws)]
    path = write_chunk(tmp_path, "twitter", 0, "p0", [b"\n", *lines, b"  \n"])
    state, seen = HourState(), list[tuple[str, str]]()
    apply_chunk(state, path, seen)
    assert {pid: copy[2] for pid, copy in state.raw.items()} == {"1": raws[0], "2": raws[1],
                                                                  "3": raws[2]}
    assert state.posts["1"]["text"] == ',"j":'


@given(st.lists(st.sampled_from(["\\", "\\u0000", "u", "0", "\x00", "a", "\ufffd"]),
                max_size=12).map("".join))
@example("write '\\u0000' for NUL")
def test_a_chunk_line_changes_nul_characters_only(text: str) -> None:
    """NUL becomes U+FFFD (it breaks CSV readers); text that merely reads \\u0000 (backslash,
    u, zeros) used to be changed too, as its escape holds the same six bytes."""
    out = orjson.loads(chunks.encode({"t": text}))["t"]
    assert out == text.replace("\x00", "\ufffd")
