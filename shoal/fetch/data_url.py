"""``data:`` URLs (RFC 2397): the one decoder, strict and size-capped, that the fetch engine
uses for media inlined in posts (keyword image searches return them, some exports too)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes


class DataUrlTooLarge(ValueError):
    """The URL holds more than the caller allows (found before decoding it all)."""


def decode_data_url(url: str, max_bytes: int) -> tuple[str, bytes]:
    """(mimetype, bytes) of an RFC 2397 ``data:`` URL, refusing anything over ``max_bytes``.

    Some exports inline small images this way; the size is checked before decoding so a
    hostile URL cannot make us allocate more than the caller allowed.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    if not isinstance(url, str) or url[:5].lower() != "data:":
        raise ValueError("not a data: URL")
    header, sep, body = url[5:].partition(",")
    if not sep:
        raise ValueError("data: URL has no ',' between header and data")
    params = [p.strip() for p in header.split(";")]
    is_b64 = len(params) > 1 and params[-1].lower() == "base64"
    mimetype = params[0].lower() or "text/plain"
    if "/" not in mimetype or " " in mimetype:
        raise ValueError(f"data: URL has an invalid media type {params[0]!r}")
    if is_b64:
        if "%" in body:
            body = unquote_to_bytes(body).decode("ascii", "replace")
        body = "".join(body.split())
        estimate = len(body) * 3 // 4
        if estimate > max_bytes + 2:
            raise DataUrlTooLarge(f"data: URL too large: about {estimate} bytes > {max_bytes}")
        try:
            data = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data: URL has invalid base64: {exc}") from None
    else:
        if len(body) > 3 * max_bytes + 3:  # each byte takes at most 3 chars (%XX)
            raise DataUrlTooLarge(f"data: URL too large: over {max_bytes} bytes")
        data = unquote_to_bytes(body)
    if len(data) > max_bytes:
        raise DataUrlTooLarge(f"data: URL too large: {len(data)} bytes > {max_bytes}")
    return mimetype, data
