"""The hourly CSV files are the writer's text, byte for byte, whatever the fields hold.

``shoal.csv_text`` skips Python's CSV writer for rows that need no quoting; these tests hold
it to what the writer (with the ``\\r`` rule of the module doc) writes, on fields made of
every character that matters to CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.csv_text import _minimal, csv_text


def _writer_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """What Python's CSV writer writes: the reference for the fast path."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    plain.writerow(header)
    plain.writerows(rows)
    return buf.getvalue()


_FIELD = st.text(alphabet=st.sampled_from(list('a,"\n\r \x00é\u2028\t;')), max_size=6)
_VALUE = st.one_of(_FIELD, _FIELD, _FIELD, st.integers(-5, 5), st.none(), st.booleans(),
                   st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(_FIELD, min_size=n, max_size=n),
    st.lists(st.lists(_VALUE, min_size=n, max_size=n), max_size=6))))
def test_csv_text_is_the_writers_text(table: tuple[list[str], list[list[object]]]) -> None:
    header, rows = table
    writer = _writer_text(header, rows)
    assert _minimal(header, rows) == writer  # type: ignore[arg-type]
    if "\r" not in writer:  # else every row holding one is quoted (the module doc)
        assert csv_text(header, rows) == writer  # type: ignore[arg-type]


def test_the_rows_every_hour_holds() -> None:
    header = ["id", "text", "n"]
    rows = [["1", "plain words", "3"], ["2", "", ""], ["3", 'a "quoted", text', "x"],
            ["4", "two\nlines", "y"], ["5", "a lone \r return", "z"], ["6", "", "7"]]
    text = csv_text(header, rows)
    assert text == _writer_text(header[:], rows[:4]) + '"5","a lone \r return","z"\n6,,7\n'
    assert csv_text(["only"], [[""], ["x"]]) == 'only\n""\nx\n'
