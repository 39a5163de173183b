"""Pictures of the reports, drawn with matplotlib's Agg backend (headless: no display needed).

Figures are made with the object API (``matplotlib.figure.Figure``), never ``pyplot``, so no
global state is shared between the threads of ``shoal serve``; each function returns the
encoded image (PNG or SVG bytes) and leaves writing it to the caller. Sizes are fixed, in
pixels, so a picture's place in a page or a mail does not move from one day to the next.
"""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from collections.abc import Iterable
from functools import cache
from typing import Literal

from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.ticker import MaxNLocator

from shoal.day_report import DayReport
from shoal.hashtags import HashtagTable

Format = Literal["png", "svg"]
DPI = 100
HASHTAG_SIZE = (1000, 600)  # pixels
DAY_SIZE = (1000, 500)
BAR = "#2b6cb0"
LABEL_ROOM = 180  # pixels of the 220 px left margin a hashtag label may take (ticks)

# matplotlib warns once per character its font lacks (two lines each, with this module's path
# and source line): an emoji or CJK hashtag made dozens between a report's lines, and the
# live page's log filled with them. The reports say it in one line (missing_glyphs).
warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)


_MEASURING = threading.Lock()


@cache
def _font() -> FT2Font:
    return FT2Font(font_manager.fontManager.findfont(font_manager.FontProperties()))


def missing_glyphs(texts: Iterable[str]) -> str:
    """The characters of ``texts`` the charts' font cannot draw (shown there as boxes), each
    once: printable ones as themselves, others as ``U+0085``; "" when all are drawn."""
    font, seen = _font(), dict.fromkeys(c for t in texts for c in plain(t))
    missing = [c for c in seen if font.get_char_index(ord(c)) == 0]
    shown = "".join(c for c in missing if c.isprintable())
    codes = " ".join(f"U+{ord(c):04X}" for c in missing if not c.isprintable())
    return " ".join(part for part in (shown, codes) if part)


# Characters XML has no place for, escaped or not (and DEL, C0's neighbour): in an SVG chart
# one made the file ill-formed, a broken image on the live page.
UNDRAWABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def plain(text: str) -> str:
    """``text`` drawn as written: matplotlib reads a string with two ``$`` as TeX (mathtext).

    Hashtags, queries and collector names are data: ``#costs$5$`` was drawn as ``#costs5``,
    and ``#a$^$`` raised ValueError, which ended ``report hashtags --png`` in a traceback
    and the live page's chart in a 500. An escaped dollar is never mathtext. Control
    characters become U+FFFD (see ``UNDRAWABLE``).
    """
    return UNDRAWABLE.sub("\ufffd", text).replace("$", r"\$")


def _width(text: str, points: float) -> float:
    """Pixels ``text`` takes in the charts' font at ``points``, at :data:`DPI` (a character
    the font lacks, drawn as a box, counted as wide as a W: the font measures it as none)."""
    font = _font()
    with _MEASURING:  # one font object, set_size/set_text state: serve draws in threads
        font.set_size(points, DPI)
        font.set_text("".join(c if font.get_char_index(ord(c)) else "W" for c in text))
        return float(font.get_width_height()[0]) / 64


def label(text: str, points: float = 9, room: float = LABEL_ROOM) -> str:
    """``text``, cut at its end with "…" to fit ``room`` pixels: the hashtag labels are
    right-aligned in the chart's left margin, and a longer one lost its beginning, the part
    that names it, past the picture's left edge."""
    if _width(text, points) <= room:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with its "…"
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _width(text[:mid] + "…", points) <= room else (lo, mid - 1)
    return text[:lo] + "…"


def _figure(size: tuple[int, int]) -> Figure:
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _encode(fig: Figure, fmt: Format) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=None if fmt == "svg" else {"Software": None})
    return buf.getvalue()


def hashtag_chart(table: HashtagTable, title: str = "", fmt: Format = "png") -> bytes:
    """Horizontal bars, the most frequent hashtag on top, each labelled with posts and ratio."""
    fig = _figure(HASHTAG_SIZE)
    ax = fig.add_axes((0.22, 0.1, 0.7, 0.8))
    rows = list(table.rows)
    heading = title or "Top co-occurring hashtags"
    ax.set_title(plain(f"{heading} — {table.selected:,} posts selected"), fontsize=12)
    if not rows:
        ax.text(0.5, 0.5, "no hashtags among the selected posts", ha="center", va="center",
                transform=ax.transAxes, fontsize=12, color="#555555")
        ax.set_axis_off()
        return _encode(fig, fmt)
    points = 9 if len(rows) <= 25 else 7
    labels = [plain(label(f"#{r.hashtag}", points)) for r in rows][::-1]
    values = [r.posts for r in rows][::-1]
    ax.barh(range(len(rows)), values, color=BAR)
    ax.set_yticks(range(len(rows)), labels, fontsize=points)
    ax.set_xlabel("posts")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = max(values)
    ax.set_xlim(0, top * 1.18 + 1)
    for y, r in enumerate(rows[::-1]):
        ax.text(r.posts + top * 0.01, y, f"{r.posts:,} ({r.ratio:.1%})", va="center", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _encode(fig, fmt)


def day_chart(report: DayReport, title: str = "", fmt: Format = "png") -> bytes:
    """Posts per hour per collector: one line each, with markers; hours with nothing sealed
    are shaded grey (a gap), and a collector that delivered nothing drops to zero."""
    fig = _figure(DAY_SIZE)
    ax = fig.add_axes((0.08, 0.14, 0.74, 0.76))
    axis = report.axis()
    platforms = ", ".join(report.platforms) or "no platform"
    ax.set_title(plain(title or f"Posts per hour per collector — {report.day} ({platforms})"),
                 fontsize=12)
    xs = list(range(len(axis)))
    for x, name in enumerate(axis):
        if name in set(report.gaps()):
            ax.axvspan(x - 0.5, x + 0.5, color="#dddddd", zorder=0)
    for collector, values in report.series().items():
        ys = [math.nan if v is None else v for v in values]
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, label=plain(collector))
    ax.set_xticks(xs, axis, fontsize=8, rotation=0 if len(axis) <= 24 else 45)
    ax.set_xlim(-0.5, len(axis) - 0.5)
    peak = max((v for vs in report.series().values() for v in vs if v), default=1)
    ax.set_ylim(bottom=-0.03 * peak)  # a collector at zero stays visible above the axis
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("hour (grey: nothing sealed)")
    ax.set_ylabel("posts")
    ax.spines[["top", "right"]].set_visible(False)
    if report.collectors:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no hour sealed on this day", ha="center", va="center",
                transform=ax.transAxes, fontsize=12, color="#555555")
    return _encode(fig, fmt)
