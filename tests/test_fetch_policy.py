"""The pure rules of fetching: URL safety, politeness keys, back-off, types, storage paths."""

from __future__ import annotations

import posixpath
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.fetch.policy import (
    TEMPLATE_FIELDS,
    FetchConfig,
    FetchResult,
    backoff_delay,
    backoff_schedule,
    budget_key,
    check_resolved,
    check_url,
    classify_ip,
    key_for,
    parse_retry_after,
    politeness_bound,
    registered_domain,
    render_name,
    row_fields,
    row_values,
    sniff_type,
    status_class,
    storage_path,
    validate_template,
)

SHA = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("addr", "verdict"),
    [
        ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
        ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
        ("fc00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
        ("::", "unspecified"), ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "ipv4-mapped"),
        ("::ffff:8.8.8.8", "ipv4-mapped"), ("2002:7f00:1::", "reserved"),
        ("64:ff9b::a00:1", "reserved"), ("100.64.0.1", "non-global"),
        ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("151.101.1.1", None),
    ],
)
def test_classify_ip(addr: str, verdict: str | None) -> None:
    assert classify_ip(addr) == verdict


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://pbs.twimg.com/media/a.jpg", ""),
        ("HTTP://Example.COM/x", ""),
        ("data:image/png;base64,iVBORw0KGgo=", ""),
        ("file:///etc/passwd", "refused: scheme 'file' not allowed"),
        ("ftp://example.com/a", "refused: scheme 'ftp' not allowed"),
        ("javascript:alert(1)", "refused: scheme 'javascript' not allowed"),
        ("gopher://example.com/", "refused: scheme 'gopher' not allowed"),
        ("//example.com/x", "refused: not an absolute URL"),
        ("http:///nohost", "refused: no host"),
        ("http://127.0.0.1/", "refused: loopback address 127.0.0.1"),
        ("http://2130706433/", "refused: loopback address 127.0.0.1"),
        ("http://0x7f.1/", "refused: loopback address 127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/", "refused: ipv4-mapped"),
        ("http://169.254.169.254/latest", "refused: link-local address 169.254.169.254"),
        ("http://example.com:99999/", "refused: invalid URL"),
        ("data:nocomma", "refused: malformed data: URL"),
    ],
)
def test_check_url(url: str, reason: str) -> None:
    got = check_url(url, FetchConfig())
    assert got.startswith(reason) if reason else got == ""


def test_private_addresses_allowed_only_on_request() -> None:
    allowed = FetchConfig(allow_private_networks=True)
    assert check_url("http://127.0.0.1:8080/x", allowed) == ""
    assert check_url("file:///x", allowed).startswith("refused: scheme")
    assert check_resolved("a.test", ["127.0.0.1"], FetchConfig()) == (
        "refused: a.test resolves to loopback address 127.0.0.1")
    assert check_resolved("a.test", ["8.8.8.8", "10.1.1.1"], FetchConfig()).endswith("10.1.1.1")
    trusted = FetchConfig(resolve={"a.test": "127.0.0.2"})  # the operator's explicit mapping
    assert check_resolved("a.test", ["127.0.0.2"], trusted) == ""
    assert check_resolved("a.test", ["127.0.0.1"], allowed) == ""


def test_politeness_keys() -> None:
    cfg = FetchConfig()
    assert key_for("https://PBS.twimg.com./media/a.jpg", cfg) == "pbs.twimg.com"
    dom = FetchConfig(domain_key="domain")
    assert key_for("https://pbs.twimg.com/a", dom) == "twimg.com"
    assert key_for("https://a.b.example.co.uk/a", dom) == "example.co.uk"
    assert key_for("http://img1.test:8080/a", dom) == "img1.test"
    assert key_for("http://127.0.0.2/a", dom) == "127.0.0.2"
    assert key_for("data:,x", cfg) == "data:"
    assert registered_domain("video.twimg.com") == "twimg.com"


def test_split_hosts_share_one_budget() -> None:
    cfg = FetchConfig(split_hosts={"pbs.twimg.com": 4}, per_host={"pbs.twimg.com": (3, 0.5)})
    keys = {key_for(f"https://pbs.twimg.com/media/{i}.jpg", cfg) for i in range(200)}
    assert keys == {f"pbs.twimg.com#{i}" for i in range(4)}
    assert {budget_key(k) for k in keys} == {"pbs.twimg.com"}
    assert cfg.limits(budget_key(keys.pop())) == (3, 0.5)
    assert cfg.limits("other.example") == (cfg.domain_parallelism, cfg.throttle)


def test_host_limits_apply_under_domain_keying() -> None:
    """``--host-limit`` names hosts; under ``--domain-key domain`` the budget is the
    registered domain's, so the override is its limit, the strictest of several."""
    per_host = {"pbs.twimg.com": (8, 0.0), "video.twimg.com": (4, 0.5), "a.example": (1, 2.0)}
    dom = FetchConfig(domain_key="domain", per_host=per_host)
    assert dom.limits("twimg.com") == (4, 0.5)  # least P, largest T
    assert dom.limits("a.example") == (1, 2.0)
    assert dom.limits("other.example") == (dom.domain_parallelism, dom.throttle)
    host = FetchConfig(per_host=per_host)
    assert host.limits("pbs.twimg.com") == (8, 0.0) and host.limits("twimg.com") == (2, 0.2)


def test_politeness_bound() -> None:
    # P-bound: 10 URLs, 2 at a time, 1 s each -> 5 s; T-bound: 9 gaps of 0.1 s + 1 s.
    assert politeness_bound({"a": 10, "b": 1}, 2, 0.1, 1.0) == 5.0
    assert politeness_bound({"a": 10}, 4, 0.5, 0.1) == pytest.approx(4.6)
    assert politeness_bound({}, 1, 1, 1) == 0.0


def test_retry_after() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("-5") is None


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert backoff_delay(1, 1.0, 30, 0.0) == 0.5 and backoff_delay(1, 1.0, 30, 1.0) == 1.0
    assert backoff_delay(3, 1.0, 30, 0.0) == 2.0
    assert backoff_delay(20, 1.0, 30, 0.999) < 30
    schedule = backoff_schedule(5, 0.5, 4.0, random.Random(1))
    assert len(schedule) == 5 and all(0 < d <= 4.0 for d in schedule)
    assert len(set(backoff_schedule(3, 1, 9, random.Random(2)))) == 3


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 206, 301, 308, 304, 404, 410, 429, 500, 503)] == [
        "ok", "ok", "redirect", "redirect", "permanent", "permanent", "permanent", "retry",
        "retry", "retry"]


@pytest.mark.parametrize(
    ("head", "ctype", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "", ("image/jpeg", "jpg")),
        (b"\x89PNG\r\n\x1a\n....", "text/html", ("image/png", "png")),
        (b"GIF89a...", "", ("image/gif", "gif")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "", ("image/webp", "webp")),
        (b"\x00\x00\x00\x18ftypmp42", "application/octet-stream", ("video/mp4", "mp4")),
        (b"\x00\x00\x00\x14ftypqt  ", "", ("video/quicktime", "mov")),
        (b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01webm", "", ("video/webm", "webm")),
        (b"#EXTM3U\n#EXT-X-VERSION:3", "text/plain", ("application/vnd.apple.mpegurl", "m3u8")),
        (b"<!DOCTYPE html><html>", "", ("text/html", "html")),
        (b"\x00\x01\x02", "image/jpeg; charset=binary", ("image/jpeg", "jpg")),
        (b"\x00\x01\x02", "video/x-foo", ("video/x-foo", "foo")),
        (b"\x00\x01\x02", "", ("application/octet-stream", "bin")),
        (b"\x00\x01\x02", "garbage/../../x", ("application/octet-stream", "bin")),
    ],
)
def test_sniff_type(head: bytes, ctype: str, expected: tuple[str, str]) -> None:
    assert sniff_type(head, ctype) == expected


def test_default_storage_is_content_addressed() -> None:
    assert storage_path(FetchConfig(), SHA, "jpg") == f"media/01/23/{SHA}.jpg"
    assert storage_path(FetchConfig(compress=True), SHA, "mp4") == f"media/01/23/{SHA}.mp4.gz"
    assert storage_path(FetchConfig(folder_strategy="prefix-3"), SHA, "jpg") == (
        f"media/012/{SHA}.jpg")
    cfg = FetchConfig(folder_strategy="hostname", filename_template="{post_id}_{position}.{ext}")
    assert storage_path(cfg, SHA, "png", {"post_id": "99", "position": 2, "host": "a.b"}) == (
        "media/a.b/99_2.png")


@pytest.mark.parametrize(
    "template", ["{post_id.__class__}", "{nope}", "{post_id!r}", "{post_id:>10}", "/abs/{ext}",
                 "{post_id", "C:{ext}"]
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        validate_template(template)
    with pytest.raises(ValueError):
        FetchConfig(filename_template=template)


def test_row_fields_name_input_columns_only_where_there_is_an_input() -> None:
    header = ["id", "url", "user name", "platform"]
    template = "{platform}/{row.user name}/{row.id}_{position}.{ext}"
    assert row_fields(template, header) == {
        "platform": "platform", "row.user name": "user name", "row.id": "id"}
    validate_template(template, columns=None)  # any column, checked once the input is known
    with pytest.raises(ValueError, match=r"names an input column of shoal fetch only"):
        validate_template(template)  # the dataflow: no input row
    with pytest.raises(ValueError, match=r"\{row.nope\}: the input has no column 'nope'"):
        row_fields("{row.nope}.{ext}", header)
    with pytest.raises(ValueError, match=r"\{post_id\}: the input has no 'post_id' column"):
        row_fields("{post_id}.{ext}", header)  # a minet export: its id column is "id"
    with pytest.raises(ValueError, match="no format spec or conversion"):
        row_fields("{row.id!r}.{ext}", header)
    with pytest.raises(ValueError, match="bad filename template field"):
        row_fields("{row[id]}.{ext}", header)  # no index access either


@pytest.mark.parametrize(("value", "why"), [
    ("", "is empty"), ("   ", "is empty"), (".", "holds nothing a file name can keep"),
    ("..", "holds nothing"), ("_", "holds nothing"), ("/\u202e?", "holds nothing")])
def test_an_empty_row_value_is_an_error(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=rf"\{{row.id\}} {why}"):
        row_values({"row.id": "id"}, {"id": value})
    assert row_values({"row.id": "id"}, {"id": f"7{value}"}) == {"row.id": f"7{value}"}


def test_file_names_keep_letters_and_digits_of_every_script() -> None:
    """A value in another script names its file (NFC); separators, controls, blanks,
    reserved names and characters unsafe somewhere become ``_``; a component stays within
    what file systems take (255 bytes), however many bytes its letters need."""
    cfg = FetchConfig(filename_template="{row.name}_{position}.{ext}", folder_strategy="flat")

    def name(value: str) -> str:
        path = storage_path(cfg, SHA, "jpg", {"row.name": value, "position": 0})
        assert path.startswith("media/") and path.count("/") == 1
        return path.split("/")[1]

    assert row_values({"row.name": "name"}, {"name": "猫"}) == {"row.name": "猫"}
    assert name("猫") == "猫_0.jpg"
    assert name("Москва 2024") == "Москва_2024_0.jpg"
    assert name("cafe\u0301") == "café_0.jpg"  # NFD in, NFC out
    assert name("हिन्दी") == "हिन्दी_0.jpg"  # combining marks stay
    assert name("a/b\\c<d>:e|f?g*h\"i\x00j\u202ek 😀") == "a_b_c_d_e_f_g_h_i_j_k__0.jpg"
    assert name("CON") == "CON_0.jpg" and name("../x.") == "__x._0.jpg"
    bare = FetchConfig(filename_template="{row.name}.{ext}", folder_strategy="flat")
    assert storage_path(bare, SHA, "jpg", {"row.name": "con"}) == "media/_con.jpg"  # Windows
    long = name("猫" * 200)
    assert long.endswith("_0.jpg") or long.endswith(".jpg")
    assert len(long.encode()) <= 240 and long.startswith("猫" * 20)


def test_row_values_render_by_whole_name_and_stay_under_the_root() -> None:
    assert render_name("{row.id}-{{x}}-{row.a.b}", {"row.id": "1", "row.a.b": "2"}) == "1-{x}-2"
    cfg = FetchConfig(filename_template="{row.user name}/{row.id}_{position}.{ext}",
                      folder_strategy="flat")
    fields = {"row.user name": "../../etc", "row.id": "42/..", "position": 1}
    assert storage_path(cfg, SHA, "jpg", fields) == "media/____etc/42___1.jpg"


def test_bad_configs_are_refused() -> None:
    for kw in ({"domain_parallelism": 0}, {"throttle": -1}, {"domain_key": "path"},
               {"folder_strategy": "prefix-0"}, {"resolve": {"a": "not-an-ip"}},
               {"split_hosts": {"a": 0}}, {"total_timeout": 0}):
        with pytest.raises(ValueError):
            FetchConfig(**kw)  # type: ignore[arg-type]


nasty = st.lists(
    st.sampled_from(["..", ".", "/", "\\", "\x00", "\n", "~", "a", "é", ":", " ", "%", "-",
                     "猫", "\u202e", "e\u0301", "／", "CON", "😀"]),
    max_size=150,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    values=st.fixed_dictionaries({f: nasty for f in sorted(TEMPLATE_FIELDS - {"sha256", "ext"})}),
    ext=nasty,
    template=st.sampled_from([
        "{platform}/{post_id}_{position}.{ext}", "{query}/../{collector}/{date}.{ext}",
        "{host}/{hour}/{post_id}", "../../{post_id}", "{platform}{post_id}{query}" * 4,
    ]),
    strategy=st.sampled_from(["content", "flat", "hostname", "prefix-2"]),
)
def test_generated_names_never_escape_the_root(
    values: dict[str, str], ext: str, template: str, strategy: str
) -> None:
    cfg = FetchConfig(filename_template=template, folder_strategy=strategy)
    path = storage_path(cfg, SHA, ext, values)
    parts = path.split("/")
    assert parts[0] == "media" and not path.startswith("/")
    assert posixpath.normpath(path) == path
    assert all(p not in ("", ".", "..") and not p.startswith(".") for p in parts)
    assert all(kept(c) for p in parts for c in p), path
    assert all(unicodedata.is_normalized("NFC", p) for p in parts)
    assert all(p.split(".", 1)[0].upper() not in ("CON", "NUL", "AUX", "PRN") for p in parts)
    assert all(len(p) <= 120 and len(p.encode()) <= 240 for p in parts) and len(parts) <= 10


def kept(c: str) -> bool:
    """May a file name hold ``c``: ASCII letters, digits and ``._=+-``, and the letters,
    digits and combining marks of every script."""
    if c.isascii():
        return c.isalnum() or c in "._=+-"
    return unicodedata.category(c)[0] in "LN" or unicodedata.category(c) in ("Mn", "Mc")


def test_result_round_trips() -> None:
    r = FetchResult(url="http://x/", http_status=200, attempts=1, sha256=SHA, path="media/a")
    assert FetchResult.from_dict({**r.as_dict(), "extra": 1}) == r and r.ok


def test_query_folders_keep_keywords_apart() -> None:
    """``{query}/...``: one folder per keyword whatever its script or length; ASCII keywords
    keep their readable sanitised name."""
    cfg = FetchConfig(folder_strategy="flat", filename_template="{query}/{post_id}.{ext}")

    def folder(query: str) -> str:
        path = storage_path(cfg, SHA, "jpg", {"query": query, "post_id": "1"})
        assert path.startswith("media/") and path.endswith("/1.jpg") and ".." not in path
        return path.split("/")[1]

    assert folder("bike lane") == "bike_lane"
    queries = ["猫", "犬", "café", "cafè", "Москва", "x" * 70, "x" * 70 + "y", "../etc"]
    folders = [folder(q) for q in queries]
    assert len(set(folders)) == len(queries), folders
    assert folder("猫") == folder("猫")  # stable: the same keyword, the same folder
    assert all(len(f) <= 64 for f in folders)


def test_id_list_folders_keep_long_queries_apart() -> None:
    """``ids/tiktok/<query>/``: two queries that share their first 200 encoded characters
    (23 letters of a non-Latin script are enough) still get two folders, of a usable
    length, and never a cut ``%XX``."""
    from shoal.names import query_folder

    a, b = "東京" * 12 + "a", "東京" * 12 + "b"
    fa, fb = query_folder(a), query_folder(b)
    assert fa != fb and len(fa) <= 200 and len(fb) <= 200
    assert query_folder(a) == fa and query_folder("london") == "london"
    assert query_folder("..") == "%2E%2E" and "/" not in fa


def test_ascii_keywords_with_punctuation_keep_their_folders_apart() -> None:
    """c++ and c#, a/b and a b, AT&T and AT T: ASCII keywords whose punctuation sanitising
    loses used to share one folder (``c_``), mixing two keywords' images; a keyword of
    dots got none (its images in the media root). Spaces alone still give the readable
    name (``bike_lane``)."""
    cfg = FetchConfig(folder_strategy="flat", filename_template="{query}/{post_id}.{ext}")

    def folder(query: str) -> str:
        path = storage_path(cfg, SHA, "jpg", {"query": query, "post_id": "1"})
        parts = path.split("/")
        assert len(parts) == 3 and parts[2] == "1.jpg", path
        return parts[1]

    queries = ["c++", "c#", "c", "a/b", "a b", "AT&T", "AT T", ".", "..", "node.js"]
    folders = [folder(q) for q in queries]
    assert len(set(folders)) == len(queries), folders
    assert folder("bike lane") == "bike_lane" and folder("node.js") == "node.js"
    assert folder("c") == "c" and folder("c++").startswith("c_-")
