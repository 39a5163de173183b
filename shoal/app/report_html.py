"""HTML for the reports and the live page: small, self-contained, escaped everywhere.

Standalone pages (``--html FILE``) embed their pictures as ``data:`` URIs so the one file
can be mailed or archived; the live page (``shoal serve``) uses the same fragments and
points its images at the server. Text from the data (hashtags, collectors, reasons, paths)
may be anything: it is escaped, and may break anywhere (``overflow-wrap``), since a
3,000-character hashtag made a table, and the page, 27,000 pixels wide.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from html import escape

from shoal.day_report import DayReport
from shoal.hashtags import HashtagTable
from shoal.spread import ImageGroup

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1a202c;
overflow-wrap:anywhere}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #cbd5e0;padding:.2rem .5rem;text-align:right}
th{background:#edf2f7} td.t,th.t{text-align:left}
.error{border:2px solid #c53030;background:#fff5f5;color:#742a2a;padding:.5rem .8rem;
margin:.5rem 0;border-radius:4px}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}
.card{border:1px solid #cbd5e0;border-radius:4px;padding:.5rem;width:200px;font-size:.8rem}
.card img{max-width:180px;max-height:180px;display:block;margin:auto}
.muted{color:#718096;font-size:.85rem}
section{margin-bottom:1rem} .col{min-width:420px} img.chart{max-width:100%;height:auto}
"""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def page(title: str, body: str, head: str = "") -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}"
            f"</title><style>{STYLE}</style>{head}</head><body><h1>{escape(title)}</h1>"
            f"{body}</body></html>\n")


def table(header: Sequence[str], rows: Iterable[Sequence[object]], ident: str = "",
          text_columns: int = 1) -> str:
    """A table; the first ``text_columns`` columns are left-aligned text, the rest numbers.

    Every cell carries ``data-col`` (its header), so a test or a script can read it back.
    """
    def cell(tag: str, i: int, value: object) -> str:
        cls = ' class="t"' if i < text_columns else ""
        return (f'<{tag}{cls} data-col="{escape(header[i])}">'
                f"{escape('' if value is None else str(value))}</{tag}>")

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    ident_attr = f' id="{escape(ident)}"' if ident else ""
    return f"<table{ident_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def isolate(text: str) -> str:
    """``text`` escaped and bidi-isolated, for data sharing a line with other words.

    A hashtag or reason holding U+202E (right-to-left override) reversed the rest of its
    line: in a card ``#a\u202eb (3), #c (1)`` read ``#a (1) c# ,(3) b``, each count beside
    another tag. Table cells are lines of their own and need no isolation.
    """
    return f"<bdi>{escape(text)}</bdi>"


def error_box(message: str) -> str:
    return f'<div class="error" role="alert">{escape(message)}</div>'


def hashtag_table(result: HashtagTable, ident: str = "hashtags") -> str:
    rows = [(f"#{r.hashtag}", r.posts, f"{r.ratio:.4f}") for r in result.rows]
    note = f'<p class="muted">{result.selected:,} posts selected</p>'
    return note + table(("hashtag", "posts", "ratio"), rows, ident)


def day_table(report: DayReport, ident: str = "day") -> str:
    text = 2 if len(report.platforms) > 1 else 1
    dead = "".join(f"<li>{isolate(r)}: {n}</li>" for r, n in sorted(report.deadletters.items()))
    return (table(report.header(), report.table(), ident, text_columns=text)
            + f'<p>dead letters {escape(report.day)} (inputs that became no post, all '
              f'platforms): <b id="deadletters">{report.deadletter_total}</b></p>'
            + (f"<ul>{dead}</ul>" if dead else ""))


def gallery(groups: Sequence[ImageGroup], thumbs: Mapping[str, str]) -> str:
    """One card per group; ``thumbs`` maps a representative's sha256 to an image URL."""
    if not groups:
        return '<p class="muted">no fetched image with a perceptual hash yet</p>'
    cards = []
    for n, g in enumerate(groups, 1):
        src = thumbs.get(g.representative_sha256)
        img = (f'<img src="{escape(src)}" alt="group {n}" loading="lazy">' if src
               else '<p class="muted">(no thumbnail)</p>')
        tags = ", ".join(f"{isolate('#' + t)} ({c})" for t, c in g.hashtags) or "—"
        cards.append(
            f'<div class="card" data-group="{n}" data-posts="{g.posts}">{img}'
            f"<p><b>{g.posts}</b> posts · {g.authors} authors · {g.files} files</p>"
            f"<p>{', '.join(isolate(p) for p in g.platforms)}</p>"
            f"<p>{isolate(g.first_seen)} → {isolate(g.last_seen)}</p><p>{tags}</p>"
            f'<p class="muted">{isolate(g.representative)}</p></div>')
    return f'<div class="gallery">{"".join(cards)}</div>'


def group_rows(groups: Sequence[ImageGroup]) -> list[tuple[object, ...]]:
    return [(n, g.posts, g.authors, ", ".join(g.platforms), g.first_seen, g.last_seen,
             " ".join(f"#{t}({c})" for t, c in g.hashtags), g.files, g.representative)
            for n, g in enumerate(groups, 1)]


GROUP_HEADER = ("group", "posts", "authors", "platforms", "first seen", "last seen",
                "top hashtags", "files", "representative")
