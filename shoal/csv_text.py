"""CSV text that every standard reader reads back as the rows written, whatever the text holds.

The files are written with ``\\n`` line ends, and Python's writer then quotes a field only for
the delimiter, the quote and ``\\n``: a lone ``\\r`` in a post's text is written bare, and
every CSV reader (Python's, DuckDB's, spreadsheets) takes it for a line end, splitting the row.
Rows holding a ``\\r`` are therefore written with every field quoted. Everything else (NUL,
other control characters, U+2028, escapes) is kept as it is: inside or outside quotes, RFC
4180 readers take those characters literally. Text stays faithful to the post; only quoting
changes, and only for such rows, so files without one are byte for byte what they were.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence


def csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``header`` then ``rows`` as CSV with ``\\n`` line ends (see the module doc)."""
    rows = rows if isinstance(rows, list) else list(rows)
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    plain.writerow(header)
    plain.writerows(rows)
    text = buf.getvalue()
    if "\r" not in text:  # nearly always: one scan of the text, in C
        return text
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(header)
    for row in rows:
        if "\r" in "".join(map(str, row)):
            quoted.writerow(row)
        else:
            plain.writerow(row)
    return buf.getvalue()
