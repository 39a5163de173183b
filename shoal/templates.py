"""Templates a user writes: after-seal hook commands and media file names.

Both are ``str.format`` templates filled with values shoal controls, and both are data from
the command line or the configuration, not code: a field must be one of a known set, with no
attribute or index access, format spec or conversion. :func:`fields_of` is that one check;
each kind of template adds its own rules.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Collection

HOOK_FIELDS = ("path", "relpath", "name", "day", "hour", "platform", "kind")
HOOK_KINDS = ("IDs", "tweets", "posts", "users", "media", "report")


class BadField(ValueError):
    """A field outside the known set, or one with a spec or conversion."""

    def __init__(self, name: str, plain: bool):
        super().__init__(name)
        self.name = name
        self.plain = plain  # the name alone is the problem, not a spec or conversion


def fields_of(template: str, known: Collection[str]) -> list[str]:
    """The field names of ``template``, in order.

    Raises ValueError for unbalanced braces and :class:`BadField` for a field that is not
    plainly one of ``known``.
    """
    names = []
    for _text, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in known or spec or conversion:
            raise BadField(name, plain=not (spec or conversion))
        names.append(name)
    return names


def check_hook_template(template: str) -> None:
    """Reject what would fail later, or run something other than the operator's program."""
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot split {template!r}: {exc}") from None
    if not tokens:
        raise ValueError("empty hook command")
    for i, token in enumerate(tokens):
        try:
            names = fields_of(token, HOOK_FIELDS)
        except BadField as exc:
            if exc.plain:
                raise ValueError(f"unknown field {{{exc.name}}} in {template!r} "
                                 f"(known: {', '.join(HOOK_FIELDS)})") from None
            raise ValueError(f"field {{{exc.name}}} takes no format or conversion") from None
        except ValueError as exc:
            raise ValueError(f"bad braces in {token!r}: {exc} (write {{{{ for a brace)") from None
        if names and i == 0:
            raise ValueError("the program (first word) must not come from a field")
