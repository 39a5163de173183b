"""shoal's raw archive: ``DIR/<platform>/YYYY-mm-dd/YYYY-mm-dd_hh_raw.jsonl.xz``.

Kafka forgets; the archive is what reprocessing starts from once it has. Every sealed hour
keeps one line per unique post of the hour, in the order of its IDs file::

    {"platform": "twitter", "id": "1383055313276964865", "format": "twitter-v2",
     "collectors": ["server-a", "server-b"], "retrieved_at": "2021-04-16T13:50:58+00:00",
     "late": true, "payload": {...}}

``payload`` is the post as it came (the Kafka message value), byte for byte: it is spliced in
after the other keys, never decoded and re-encoded, and is always the last key. A payload
with a line break in it (JSON allows one between tokens) is kept as a JSON string under
``payload_text`` instead, so that a line is still one post. The other keys are what the
dataflow made the post's rows with: its post format (the Kafka ``format`` header), every
collector that delivered it, the retrieval time the row was made with (the ``retrieved_at``
header, or the message time when a producer sent none), and ``late`` when no copy arrived
within the hour's lateness. When collectors delivered different copies, the line holds the
copy whose row is in the posts file (see :meth:`shoal.merge.HourState.add_post`).

Being self-describing, an archive line is an input file format like any other
(``shoal collect file`` reads it): each post is published once per collector of the line,
with the line's format and retrieval time and the payload's exact bytes.
``shoal replay --from-archive`` uses it to rebuild a data dir.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from shoal.formats._open import open_input
from shoal.formats._sniff import JsonHead
from shoal.model import Control, DeadLetter, RawPost

NAME = "shoal-archive"
SUFFIX = "_raw.jsonl.xz"
_PAYLOAD = b',"payload":'
_HEAD_KEYS = frozenset({"platform", "id", "format", "collectors", "retrieved_at"})


def archive_line(platform: str, post_id: str, fmt: str, collectors: Iterable[str],
                 retrieved_at: str, late: bool, raw: bytes) -> bytes:
    """One archive line (see the module docstring), ``raw`` kept byte for byte."""
    head: dict[str, Any] = {"platform": platform, "id": post_id, "format": fmt,
                            "collectors": sorted(collectors), "retrieved_at": retrieved_at}
    if late:
        head["late"] = True
    if b"\n" in raw or b"\r" in raw:
        head["payload_text"] = raw.decode("utf-8")
        return orjson.dumps(head) + b"\n"
    return orjson.dumps(head)[:-1] + _PAYLOAD + raw + b"}\n"


def parse_line(line: bytes) -> tuple[dict[str, Any], bytes]:
    """An archive line's keys (without the payload) and its payload's exact bytes.

    The first ``,"payload":`` is the key: the keys before it are strings, a list of strings
    and a boolean, none of which can hold an unescaped quote.
    """
    at = line.find(_PAYLOAD)
    if at < 0:
        head = orjson.loads(line)
        text = head.pop("payload_text")
        if not isinstance(text, str):
            raise ValueError("payload_text is not a string")
        return head, text.encode("utf-8")
    return orjson.loads(line[:at] + b"}"), line[at + len(_PAYLOAD):].rstrip(b"\r\n")[:-1]


def sniff(first: object) -> bool:
    if not isinstance(first, JsonHead) or not isinstance(first.first, dict):
        return False
    keys = first.first.keys()
    return keys >= _HEAD_KEYS and ("payload" in keys or "payload_text" in keys)


def open_archive(path: Path) -> IO[bytes]:
    """An archive file, compressed (as the sealer writes it) or not."""
    return open_input(path)


def read(path: Path) -> Iterator[RawPost | DeadLetter | Control]:
    with open_archive(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            source = f"{path}:{lineno}"
            try:
                head, raw = parse_line(line)
                payload = orjson.loads(raw)
                collectors = head["collectors"]
                if not isinstance(payload, dict) or not isinstance(collectors, list):
                    raise ValueError("payload is not an object or collectors not a list")
                yield RawPost(str(head["platform"]), str(head["id"]), str(head["format"]),
                              payload, source, raw=raw,
                              collectors=tuple(str(c) for c in collectors),
                              retrieved_at=str(head["retrieved_at"]),
                              late=bool(head.get("late")))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                yield DeadLetter(f"not a shoal archive line: {exc}", source,
                                 line.rstrip(b"\r\n"), NAME)
