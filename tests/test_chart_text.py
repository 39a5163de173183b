"""Hostile text in the charts: hashtags, queries and collector names are data, not markup.

matplotlib reads a string with two ``$`` as mathtext (TeX): ``#costs$5$`` was drawn as
``#costs5`` and ``#a$^$`` or ``--query '$\\bogus$'`` raised ValueError, so ``report
hashtags --png/--html`` ended in a traceback and the live page's chart in a 500.
"""

from __future__ import annotations

import subprocess
import sys
from xml.dom import minidom

import pytest

from shoal.charts import day_chart, hashtag_chart, label, missing_glyphs
from shoal.day_report import build
from shoal.hashtags import HashtagCount, HashtagTable

HOSTILE = ["a$^$", "costs$5$", r"$\bogus$", "back\\$slash$", "$"]


@pytest.mark.parametrize("text", HOSTILE)
def test_dollar_signs_are_drawn_as_written(text: str) -> None:
    table = HashtagTable(1, (HashtagCount(text, 1, 1.0),))
    svg = hashtag_chart(table, f"matching {text!r}", "svg").decode()
    assert f"#{text}".replace("&", "&amp;").replace("<", "&lt;") in svg  # the label
    assert f"matching {text!r}" in svg  # the title
    assert hashtag_chart(table, text).startswith(b"\x89PNG")


def test_a_collector_name_with_dollars_is_drawn_as_written() -> None:
    report = build("2024-05-02", [], {})
    assert day_chart(report, "$\\bogus$ day", "svg").startswith(b"<?xml")


def test_characters_without_a_glyph_are_one_note_not_a_warning_per_glyph() -> None:
    """Each emoji or CJK character of a hashtag was a two-line UserWarning on stderr (with
    charts.py's path and source line), dozens for one chart, between the report's lines."""
    draw = ("from shoal.charts import hashtag_chart\n"
            "from shoal.hashtags import HashtagCount as C, HashtagTable as T\n"
            "t = T(2, (C('北京', 2, 1.0), C('fire🔥', 1, .5), C('ctl\\x01', 1, .5)))\n"
            "assert hashtag_chart(t).startswith(b'\\x89PNG')\n"
            "assert hashtag_chart(t, fmt='svg').startswith(b'<?xml')\n")
    done = subprocess.run([sys.executable, "-c", draw], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert missing_glyphs(["#北京", "#fire🔥", "#ctl\x01", "#plain", "北"]) == "北京🔥"
    assert missing_glyphs(["#plain", "café — 12 posts"]) == ""


@pytest.mark.parametrize("tag", ["ctl\x01", "nul\x00", "esc\x1b", "ff\x0c", "non\ufffe", "del\x7f"])
def test_control_characters_leave_the_svg_well_formed(tag: str) -> None:
    """XML has no place for most control characters, escaped or not: one hashtag holding
    \\x01 made the live page's SVG chart ill-formed, a broken image in the browser."""
    svg = hashtag_chart(HashtagTable(1, (HashtagCount(tag, 1, 1.0),)), f"q {tag}", "svg")
    minidom.parseString(svg)


@pytest.mark.filterwarnings("ignore:Glyph")  # pytest resets charts' filter per test
def test_a_long_hashtag_keeps_its_beginning_in_the_chart() -> None:
    """The labels are right-aligned in the chart's 220 px left margin: a hashtag wider than
    that lost its beginning past the picture's left edge, the part that tells which hashtag
    it is. A long one is cut at its end instead, with "…", to what the margin holds."""
    for tag in ("beginning" + "x" * 60, "W" * 40, "x<script>window.pwn=1</script>", "北" * 40):
        shown = label(f"#{tag}")
        assert shown.startswith("#" + tag[:8]) and shown.endswith("…"), shown
        svg = hashtag_chart(HashtagTable(1, (HashtagCount(tag, 1, 1.0),)), "t", "svg").decode()
        assert f"<!-- {shown.replace('<', '&lt;').replace('>', '&gt;')} -->" in svg
    assert label("#london") == "#london"
