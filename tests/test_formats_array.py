"""The layouts of JSON a user hands over are all read, whole: an array cut short keeps the
elements before the cut (the rest is one dead letter saying so); pretty-printed values one
after another (``jq .``), arrays one after another (``cat a.json b.json``), a document
followed by junk, a byte-order mark before a pretty-printed page, blank lines before a CSV
header. Each gives the posts the same records give as plain JSON lines."""

from __future__ import annotations

import lzma
from pathlib import Path

import orjson
import pytest

from shoal.formats import UnknownFormat, detect_format, read_file
from shoal.formats._array import salvage_values
from shoal.model import DeadLetter, RawPost

MASTODON = "mastodon/sys1yagi__mastodon4j/mastodon4j/src/test/assets/public_timeline.json"
TWITTER_V1 = "twitter-v1/bear__python-twitter/testdata/get_home_timeline.json"


def _array(fixtures: Path, rel: str, pretty: bool) -> tuple[bytes, list[int], list[bytes]]:
    """The fixture's elements written back as an array; each element's end offset and bytes."""
    items = orjson.loads((fixtures / rel).read_bytes())
    parts = [orjson.dumps(x, option=orjson.OPT_INDENT_2 if pretty else 0) for x in items]
    data, ends = b"[\n" if pretty else b"[", []
    for n, part in enumerate(parts):
        data += part
        ends.append(len(data))
        data += b",\n" if pretty and n < len(parts) - 1 else b"," if n < len(parts) - 1 else b""
    data += b"\n]\n" if pretty else b"]"
    return data, ends, parts


@pytest.mark.parametrize(("rel", "fmt", "pretty", "packed"), [
    (MASTODON, "mastodon", False, False),
    (MASTODON, "mastodon", True, True),
    (TWITTER_V1, "twitter-v1", True, False),
    (TWITTER_V1, "twitter-v1", False, True),
])
def test_a_cut_array_keeps_the_elements_before_the_cut(
    fixtures: Path, tmp_path: Path, rel: str, fmt: str, pretty: bool, packed: bool
) -> None:
    data, ends, elements = _array(fixtures, rel, pretty)
    cuts = sorted({1, 2, ends[0], ends[0] + 1, ends[3] - 1, ends[3], ends[-1] - 5,
                   *range(7, len(data) - 1, len(data) // 9)})
    packed_data = lzma.compress(data)
    if packed:  # an xz export cut short: read through the decompressor, the same result
        cuts = [len(packed_data) * k // 4 for k in (1, 2, 3)]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.json"
        if packed:
            path.write_bytes(packed_data[:cut])
            cut = len(_decompressed_prefix(packed_data[:cut]))
        else:
            path.write_bytes(data[:cut])
        whole = sum(end <= cut for end in ends)
        if not whole:  # nothing whole to tell the format by: refused, named, as before
            with pytest.raises(UnknownFormat, match="JSON cut short before its first record"):
                detect_format(path)
            continue
        out = list(read_file(path))
        posts = [r for r in out if isinstance(r, RawPost)]
        letters = [r for r in out if isinstance(r, DeadLetter)]
        assert detect_format(path) == fmt
        # The posts are those of an array of the whole elements alone.
        alone = tmp_path / "alone.json"
        alone.write_bytes(b"[" + b",".join(elements[:whole]) + b"]")
        assert posts and [p.key for p in posts] == [
            r.key for r in read_file(alone) if isinstance(r, RawPost)], cut
        assert len(letters) == 1, (cut, [r.reason for r in letters])
        assert letters[0].reason.startswith("truncated JSON"), letters[0].reason
        # The letter holds what follows the last whole element, as written: nothing is lost.
        start = ends[whole - 1] if whole else 1
        raw = letters[0].raw
        assert isinstance(raw, bytes) and raw.lstrip(b",\n ") == data[start:cut].lstrip(b",\n ")


def test_a_broken_element_is_a_letter_of_its_own_and_the_array_goes_on() -> None:
    data = b'[{"a": 1}, {"b": "\\ud800"}, NaN, {"c": 3}]'
    parts = list(salvage_values(data))
    assert [p.value for p in parts] == [{"a": 1}, None, None, {"c": 3}]
    assert [bool(p.reason) for p in parts] == [False, True, True, False]
    assert parts[1].raw == b'{"b": "\\ud800"}'


def test_what_breaks_the_structure_ends_the_walk_with_the_rest_kept() -> None:
    for data, reason, rest in [
        (b'[{"a": 1} {"b": 2}]', "expected ',' or ']'", b'{"b": 2}]'),
        (b'[{"a": 1}] trailing', "invalid JSON from here", b"trailing"),
        (b'[{"a": 1}, {"b": "\xff"}]', "invalid UTF-8 at byte 18", b'{"b": "\xff"}]'),
        ('[{"é": "猫"}, {"b": '.encode(), "truncated JSON", b'{"b": '),
    ]:
        parts = list(salvage_values(data))
        assert parts[0].value is not None and parts[0].reason == ""
        assert reason in parts[-1].reason and parts[-1].raw == rest, parts


def _decompressed_prefix(packed: bytes) -> bytes:
    """What an xz stream cut short gives before its end (what a reader can read of it)."""
    return lzma.LZMADecompressor().decompress(packed)


V2_PAGES = "twitter-v2/DocNow__twarc-csv/test-data/kpop.jsonl"
V1_SEARCH = "twitter-v1/bear__python-twitter/testdata/get_search_raw.json"
MINET = "minet-csv/medialab__twitwi/test/resources/tweet-export.csv"


def _keys(path: Path) -> tuple[list[str], list[str]]:
    """The posts' keys and the dead letters' reasons of a file, as ``shoal`` reads it."""
    out = list(read_file(path))
    return ([r.key for r in out if isinstance(r, RawPost)],
            [r.reason for r in out if isinstance(r, DeadLetter)])


@pytest.mark.parametrize("rel", [MASTODON, TWITTER_V1, V2_PAGES, V1_SEARCH])
def test_every_json_layout_gives_the_posts_of_its_records(
    fixtures: Path, tmp_path: Path, rel: str
) -> None:
    data = (fixtures / rel).read_bytes()
    try:
        whole = orjson.loads(data)
        values = whole if isinstance(whole, list) else [whole]
    except orjson.JSONDecodeError:
        values = [orjson.loads(line) for line in data.splitlines() if line.strip()]
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in values))
    expected, none = _keys(lines)
    assert expected and not none
    pretty = [orjson.dumps(v, option=orjson.OPT_INDENT_2) for v in values]
    layouts = {
        "jq": b"\n".join(pretty) + b"\n",  # `jq . file`: pretty values one after another
        "arrays": orjson.dumps(values[:1]) + b"\n" + orjson.dumps(values[1:]) + b"\n",
        "array of pages": orjson.dumps(values, option=orjson.OPT_INDENT_2),
        "bom": b"\xef\xbb\xbf" + b"\n".join(pretty),
    }
    for name, body in layouts.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(body)
        assert _keys(path) == (expected, []), name
    # Junk after the values: the posts stand, and the junk is one dead letter.
    junk = tmp_path / "junk.json"
    junk.write_bytes(layouts["jq"] + b"<html>502 Bad Gateway</html>\n")
    posts, reasons = _keys(junk)
    assert posts == expected and len(reasons) == 1 and "invalid JSON" in reasons[0]


def test_json_cut_before_its_first_record_ends_is_said_so(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_bytes(b'{\n  "data": [\n    {"id": "1", "text": "a cut')
    with pytest.raises(UnknownFormat, match="JSON cut short before its first record"):
        detect_format(path)


def test_blank_lines_before_a_csv_header_are_skipped(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / MINET).read_bytes()
    path = tmp_path / "export.csv"
    path.write_bytes(b"\n \r\n\n" + data)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(data)
    assert detect_format(path) == "minet-csv"
    assert _keys(path)[0] == _keys(plain)[0] and _keys(path)[1] == _keys(plain)[1]
