"""The politeness gate's promise on our side of the wire, on the gate's own clock.

The server-side tests (tests/test_fetcher.py) see the gaps through a loopback server, whose
reading adds its own jitter; here the starts are the very moments the gate is told a
request's first bytes left, so the floor must hold exactly: at least T plus the configured
margin between two starts of a key, at most P requests granted at once, nothing started
while a Retry-After block runs.
"""

from __future__ import annotations

import asyncio
import itertools

from connectors.fetch.gate import Gate, Scheduler
from shoal.fetch import FetchConfig

EPS = 1e-9  # float rounding of t + margin, not slack


async def _job(gate: Gate, starts: list[float], live: list[int], hold: float,
               stall: bool) -> None:
    ticket = await gate.acquire()
    live[0] += 1
    live[1] = max(live[1], live[0])
    if stall:  # a moment between the grant and the first byte (a connection set-up)
        await asyncio.sleep(0.003)
    starts.append(asyncio.get_running_loop().time())
    ticket.mark_sent()
    await asyncio.sleep(hold)
    live[0] -= 1
    gate.release(ticket)


def _run(p: int, t: float, n: int, hold: float) -> tuple[list[float], int, float]:
    margin = FetchConfig().throttle_margin

    async def main() -> tuple[list[float], int, float]:
        gate = Gate(p, t, margin, Scheduler(64))
        starts: list[float] = []
        live = [0, 0]  # in flight now, most at once
        await asyncio.gather(*(_job(gate, starts, live, hold, stall=i % 3 == 1)
                               for i in range(n)))
        return starts, live[1], margin

    return asyncio.run(main())


def test_starts_are_at_least_t_plus_the_margin_apart_and_at_most_p_at_once() -> None:
    for p, t, hold in ((1, 0.02, 0.0), (3, 0.015, 0.05), (4, 0.01, 0.002)):
        starts, peak, margin = _run(p, t, 16, hold)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert len(starts) == 16
        assert min(gaps) >= t + margin - EPS, (p, t, min(gaps))
        assert 1 <= peak <= p


def test_nothing_starts_while_a_block_runs() -> None:
    async def main() -> tuple[float, list[float]]:
        gate = Gate(2, 0.0, FetchConfig().throttle_margin, Scheduler(64))
        loop = asyncio.get_running_loop()
        first = await gate.acquire()
        first.mark_sent()
        gate.block(0.1)  # a 429's Retry-After
        blocked_at = loop.time()
        gate.release(first)
        starts: list[float] = []
        live = [0, 0]
        await asyncio.gather(*(_job(gate, starts, live, 0.0, stall=False) for _ in range(3)))
        return blocked_at, starts

    blocked_at, starts = asyncio.run(main())
    assert min(starts) >= blocked_at + 0.1 - EPS
