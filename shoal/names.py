"""Names users give that end up in file names, column headers and metric labels.

A collector's name is a column of every day report (tab-separated), a member of the
``|``-joined ``collectors`` cell of every post row, a Prometheus label and part of the demo's
file names. A tab, a newline or a ``|`` in it would break all of those, so a name given on
our own command line or configuration is checked (:func:`check_collector`, one clear line),
and a name that arrives from elsewhere (a Kafka header written by another producer) is
encoded so that nothing downstream breaks (:func:`safe_collector`): percent-encoding keeps
two different names different.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

COLLECTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
_OUTSIDE = re.compile(r"[^A-Za-z0-9._-]")


def check_collector(name: str) -> str:
    """``name`` if it is a valid collector name, else ValueError saying the rule."""
    if not COLLECTOR_NAME.fullmatch(name):
        raise ValueError(f"bad collector name {name!r}: use {RULE}")
    return name


def safe_collector(name: str) -> str:
    """A usable name for whatever arrived: valid names unchanged, other characters
    percent-encoded (UTF-8), the empty name ``unknown``, the length capped."""
    if COLLECTOR_NAME.fullmatch(name):
        return name
    if not name:
        return "unknown"
    encoded = _OUTSIDE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    if not encoded[0].isalnum():
        encoded = "x" + encoded
    return encoded[:64]


_QUERY_OUTSIDE = re.compile(r"[^A-Za-z0-9_@#-]|^[#-]")


def query_folder(query: str) -> str:
    """A folder name for a query (``london``, ``@alice``, ``climate change``): letters,
    digits, ``_``, ``@``, ``#`` and ``-`` kept, anything else percent-encoded (UTF-8), so two
    queries never share a folder and no name climbs out (``..`` becomes ``%2E%2E``); the
    empty query is ``_``. A leading ``#`` or ``-`` is encoded too (a comment in shells, an
    option to commands). A name longer than 200 characters (a long keyword, or a short one
    in a non-Latin script: 9 characters a letter) keeps its first 183 and 16 hex digits of
    its hash, so that two long queries with one beginning still get two folders."""
    if not query:
        return "_"
    name = _QUERY_OUTSIDE.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), query)
    if len(name) <= 200:
        return name
    return f"{name[:183]}-{hashlib.sha256(query.encode()).hexdigest()[:16]}"


# Joiners that belong inside words: ZWNJ in Persian and the Indic scripts, ZWJ in Indic
# conjuncts. Neither is a word character to ``\w``.
_JOINERS = frozenset("\u200c\u200d")


def _in_hashtag(ch: str) -> bool:
    return ch == "_" or ch in _JOINERS or unicodedata.category(ch)[0] in "LMN"


# A '#' that starts a hashtag: not inside a word nor an HTML entity (&#38;), and followed by
# a letter, digit or '_'.
_HASH = re.compile(r"(?<![\w&])#(?=\w)")


def hashtags_in_text(text: str) -> list[str]:
    """The hashtags typed in ``text``, without '#', as written but in NFC, in order (repeats
    kept). A hashtag runs over letters, digits, ``_``, marks and ZWNJ/ZWJ (as
    :func:`hashtag_name` reads one): a ``\\w+`` pattern cut ``#भारत`` to ``भ`` at its first
    vowel sign."""
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    for m in _HASH.finditer(text):
        end = m.end()
        while end < len(text) and _in_hashtag(text[end]):
            end += 1
        tag = text[m.end():end].rstrip("\u200c\u200d")
        if tag:
            out.append(tag)
    return out


def hashtag_name(text: str) -> str | None:
    """``text`` (without its ``#``) as a hashtag name, in NFC and lower case, or None when no
    hashtag can be spelt so (``..``, ``a/b``, ``two words``).

    A hashtag is the letters, digits and ``_`` of any script, and the marks that go with
    them: ``\\w`` alone refuses the vowel signs and viramas of Devanagari (``भारत``), Thai's and
    Arabic's marks, a word typed with combining accents (``café`` as macOS spells it) and
    the dot that ``İstanbul`` keeps when lower-cased, so hashtags in half the world's
    scripts were refused before anyone was asked. NFC makes both spellings of ``café``
    one hashtag, as the platforms show it."""
    name = unicodedata.normalize("NFC", text.lower())
    ok = any(ch == "_" or unicodedata.category(ch)[0] in "LN" for ch in name) and all(
        _in_hashtag(ch) for ch in name)
    return name if ok else None


def is_utf8(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form. A command-line argument that was not UTF-8 bytes
    (a shell in a Latin-1 locale, a script) reaches Python as a str with lone surrogates,
    which no JSON log line, state file, run log or Kafka message can hold: a name must be
    refused as it comes in, not where it is first written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
