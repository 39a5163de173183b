"""Deliberate crashes at named points, for the crash tests only.

``SHOAL_CRASH_AT=seal:3`` makes the process SIGKILL itself the 3rd time it reaches the point
named ``seal``; unset (always, outside tests) it costs one dict lookup. Random kills from
outside cannot aim at the few milliseconds a seal takes; this can.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("SHOAL_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_counts: dict[str, int] = {}


def point(name: str) -> None:
    if not _SPEC or name != _POINT:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if str(_counts[name]) == (_NTH or "1"):
        if os.environ.get("SHOAL_FAULT_KILLS_PARENT"):  # a helper process (the sealer)
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
