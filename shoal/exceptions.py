"""Looking through wrapped exceptions."""

from __future__ import annotations


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
