"""Hostile text in the charts: hashtags, queries and collector names are data, not markup.

matplotlib reads a string with two ``$`` as mathtext (TeX): ``#costs$5$`` was drawn as
``#costs5`` and ``#a$^$`` or ``--query '$\\bogus$'`` raised ValueError, so ``report
hashtags --png/--html`` ended in a traceback and the live page's chart in a 500.
"""

from __future__ import annotations

import pytest

from shoal.charts import day_chart, hashtag_chart
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
