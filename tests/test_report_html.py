"""The HTML fragments of the reports and the live page, read back as markup (no browser)."""

from __future__ import annotations

from html.parser import HTMLParser

from shoal.app import report_html as html
from shoal.day_report import build
from shoal.spread import ImageGroup

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: the rest of its paragraph is drawn reversed


class Isolated(HTMLParser):
    """The texts found inside ``<bdi>`` elements, and those found outside of any."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.inside: list[str] = []
        self.outside: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.depth += tag == "bdi"

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag == "bdi"

    def handle_data(self, data: str) -> None:
        (self.inside if self.depth else self.outside).append(data)


def isolated(fragment: str) -> Isolated:
    parser = Isolated()
    parser.feed(fragment)
    return parser


def test_a_right_to_left_override_cannot_move_the_counts_beside_it() -> None:
    """A hashtag or dead-letter reason with U+202E reversed everything after it in its line:
    in a card, ``#a‮b (3), #c (1)`` was drawn ``#a (1) c# ,(3) b``, each count beside
    another tag. Text from the data is isolated (``<bdi>``) where it shares a line."""
    evil = f"ok{RLO}evil"
    group = ImageGroup(3, 1, (evil, "twitter"), "t0", "t1", ((evil, 3), ("c", 1)), 1, 1,
                       f"media/{evil}.jpg", "ab" * 32, ("twitter:1",))
    day = build("2024-05-02", [], {evil: 2, "invalid JSON": 1})
    for fragment in (html.gallery([group], {}), html.day_table(day)):
        parts = isolated(fragment)
        assert not any(RLO in text for text in parts.outside), fragment
        assert any(RLO in text for text in parts.inside), fragment
