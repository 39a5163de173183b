"""Keep Bytewax's Rust panic reports off stderr while a dataflow runs.

Bytewax turns an exception raised in an operator into a Rust panic; Rust's panic hook then
writes ``thread '<unnamed>' panicked at src/operators.rs:…`` (plus a whole native backtrace
when ``RUST_BACKTRACE`` is set) straight to file descriptor 2, before Python even sees the
exception. The exception still reaches Python, chained, and the CLI reports it as one line;
the hook's lines only bury that line. Python cannot replace a Rust panic hook, so this filters
them out at the descriptor: fd 2 becomes a pipe, and a thread copies every other line through.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

_HEADER = re.compile(rb"^thread '[^']*' panicked at ")
_FOLLOWS = re.compile(rb"^(stack backtrace:|note: |\s+\d+: |\s+at |\s*$)")


def _pump(source: int, sink: int) -> None:
    """Copy lines from ``source`` to ``sink`` except panic reports; never stops early.

    A panic report is its header line, the panic message line, then any backtrace frames and
    ``note:`` lines; the first other line ends it.
    """
    state = 0  # 0: copying, 1: the message line follows, 2: inside a report
    with open(source, "rb", buffering=0, closefd=True) as src:
        pending = b""
        while True:
            try:
                data = src.read(65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            out = []
            for line in lines:
                if _HEADER.match(line):
                    state = 1
                    continue
                if state == 1:
                    state = 2
                    continue
                if state == 2 and _FOLLOWS.match(line):
                    continue
                state = 0
                out.append(line + b"\n")
            with contextlib.suppress(OSError):
                if out:
                    os.write(sink, b"".join(out))
        if pending and state == 0:
            with contextlib.suppress(OSError):
                os.write(sink, pending)


_real_stderr: list[int] = []  # the descriptor stderr had before the filter, while it runs


@contextlib.contextmanager
def unfiltered_stderr() -> Iterator[None]:
    """Start helper processes inside this: they get the real stderr, not the filter's pipe.

    A child holding the pipe's write end would keep the filter thread waiting for an
    end-of-file that never comes when the dataflow stops.
    """
    if not _real_stderr:
        yield
        return
    sys.stderr.flush()
    piped = os.dup(2)
    os.dup2(_real_stderr[-1], 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(piped, 2)
        os.close(piped)


@contextlib.contextmanager
def rust_panics_hidden() -> Iterator[None]:
    """While inside, lines a Rust panic hook writes to stderr are dropped; others pass."""
    sys.stderr.flush()
    saved = os.dup(2)
    _real_stderr.append(saved)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, saved), name="stderr-filter",
                            daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        _real_stderr.remove(saved)
        os.dup2(saved, 2)  # the pipe's last write end goes: the pump reads to the end
        pump.join(5)
        os.close(saved)
