"""The raw archive is compressed a piece at a time; the file must be what one piece gives."""

from __future__ import annotations

import lzma

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.store.seal import XZ_PRESET, _xz_lines


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.binary(max_size=300), max_size=80),
       piece_size=st.integers(min_value=1, max_value=2000))
def test_pieces_give_the_bytes_of_the_whole(lines: list[bytes], piece_size: int) -> None:
    packed = _xz_lines(iter(lines), piece_size)
    assert packed == lzma.compress(b"".join(lines), preset=XZ_PRESET)
    assert lzma.decompress(packed) == b"".join(lines)


def test_a_big_archive_across_many_pieces() -> None:
    lines = [b'{"id":"%d","payload":{"text":"%s"}}\n' % (i, b"x" * (i % 977)) for i in range(6000)]
    whole = b"".join(lines)
    assert len(whole) > 2 * (1 << 20)  # more than the default piece, twice
    assert _xz_lines(lines) == lzma.compress(whole, preset=XZ_PRESET)
