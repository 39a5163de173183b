"""Which hashtags travel together: the co-occurrence table of a set of posts.

The table the TikTok hashtag tool printed: among the *selected* posts, each hashtag's number
of posts and its ratio to the number of selected posts, the most frequent first. Hashtags
are compared after Unicode canonical case folding (:func:`caseless`: ``#London``, ``#LONDON`` and
``#london`` are one hashtag, and so are ``#Straße`` and ``#STRASSE``), with a leading ``#``
dropped; a post counts once per hashtag however often it repeats it.

Selecting posts is part of the question: ``with_tag`` keeps only the posts carrying that
hashtag (the query of the study, which every selected post then has, so its ratio is 1 and
``exclude_with_tag`` leaves it out of the table), and ``query`` keeps the posts whose text
contains the words (case-folded substring). Pure: rows in, a table out.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATOR = "|"  # how the hourly files and the posts view list a post's hashtags


def caseless(text: str) -> str:
    """Unicode canonical caseless form: NFC of the case folding of NFD.

    Case folding alone leaves canonically equivalent spellings apart: ``café`` typed with a
    precomposed ``é`` and ``café`` with ``e`` + combining accent (macOS, some keyboards and
    platforms pass either on) look identical but were two rows of the table.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).casefold())


def fold(tag: str) -> str:
    """The form hashtags are compared in: case-folded, without ``#`` and surrounding space."""
    return caseless(tag.strip().lstrip("#").strip())


def tags_of(cell: str | None) -> set[str]:
    """The distinct folded hashtags of one post's ``hashtags`` cell."""
    if not cell:
        return set()
    return {t for t in (fold(part) for part in cell.split(SEPARATOR)) if t}


@dataclass(frozen=True)
class HashtagCount:
    hashtag: str
    posts: int
    ratio: float  # posts / selected posts


@dataclass(frozen=True)
class HashtagTable:
    selected: int  # posts that matched the selection (the ratios' denominator)
    rows: tuple[HashtagCount, ...]

    def as_records(self) -> list[dict[str, object]]:
        return [{"hashtag": r.hashtag, "posts": r.posts, "ratio": r.ratio} for r in self.rows]


def cooccurrence(
    posts: Iterable[tuple[str | None, str | None]],
    *,
    top: int = 20,
    with_tag: str | None = None,
    exclude_with_tag: bool = False,
    query: str | None = None,
) -> HashtagTable:
    """The top hashtags among ``posts``, given as (hashtags cell, text) per distinct post.

    Ties are broken by the hashtag itself, so the table is the same whatever the row order.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")
    wanted = fold(with_tag) if with_tag else None
    if with_tag is not None and not wanted:
        raise ValueError(f"--with-hashtag {with_tag!r} is not a hashtag")
    needle = caseless(query) if query else None
    counts: Counter[str] = Counter()
    selected = 0
    for cell, text in posts:
        tags = tags_of(cell)
        if wanted is not None and wanted not in tags:
            continue
        if needle is not None and needle not in caseless(text or ""):
            continue
        selected += 1
        counts.update(tags)
    if wanted is not None and exclude_with_tag:
        counts.pop(wanted, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    rows = tuple(HashtagCount(tag, n, n / selected) for tag, n in ranked)
    return HashtagTable(selected, rows)
