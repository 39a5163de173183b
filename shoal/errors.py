"""What can go wrong, as the user sees it.

:class:`UserError` is every problem the user can fix (a bad flag, a missing file, a bad
configuration value): the CLI prints its message as one line and exits 2, never a traceback.
Subclasses say where it came from (``ConfigError``, ``ConnectorError``...) but are caught as
one type. :func:`chain` looks through the wrapping that Bytewax adds around an operator's
exception, to find what really went wrong.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message is one line naming the thing to fix."""


def chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what caused it, outermost first, each once.

    Bytewax re-raises an operator's exception as ``BytewaxRuntimeError`` chained (through
    ``__cause__``, one level per layer) to the original, so what went wrong is found deep in
    the chain; a chain can loop, hence the ``seen`` set.
    """
    seen: set[int] = set()
    out: list[BaseException] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out
