"""Numeric post ids (Twitter and TikTok snowflakes): what a plausible one looks like.

One check for every reader and normaliser that takes such ids, so that ``0``, ``-5``,
``0012`` or a 25-digit number is refused the same way wherever it appears: as a dead letter
with a reason, never as a post. ``0012`` would otherwise be a second post beside ``12``
(ids are compared as text), and ``0`` or a number past 2^63 is no id Twitter or TikTok ever
issued (both are signed 64-bit).
"""

from __future__ import annotations

from typing import Any

MAX_ID = 2**63 - 1


def valid_id(value: Any) -> str | None:
    """The id as a string when it is a plausible one: 1 to 2^63-1, digits, no leading zero."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if 0 < value <= MAX_ID else None
    if (
        isinstance(value, str)
        and 0 < len(value) <= 19
        and value.isascii()
        and value.isdigit()
        and value[0] != "0"
        and int(value) <= MAX_ID
    ):
        return value
    return None


def id_problem(value: Any) -> str:
    """Why ``value`` is not a valid id (for a dead letter's reason); "" when it is one."""
    if value is None or value == "":
        return "without id"
    if valid_id(value) is not None:
        return ""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    return f"with an invalid id {shown} (ids are whole numbers from 1 to 2^63-1)"
