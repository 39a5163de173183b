"""Per-key politeness gates, so a host's budget holds by construction rather than by care.

Every HTTP request, first try, retry or redirect hop, passes through the gate of its own
politeness key, which grants at most P requests in flight and starts at least T apart, and
stays shut while a server's Retry-After runs.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque

# The ticket of the request this task is sending: the socket that writes its first bytes
# reads it, so the gate learns the true start without the HTTP client's help.
SENDING: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "shoal_fetch_ticket", default=None
)


class Scheduler:
    """A cap on requests in flight over all keys, applied inside the gates (a semaphore in
    front of them would let a granted request wait, and so bunch its start with the next)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.starved: deque[Gate] = deque()

    def take(self, gate: Gate) -> bool:
        if self.in_flight < self.limit:
            self.in_flight += 1
            return True
        if not gate.starved:
            gate.starved = True
            self.starved.append(gate)
        return False

    def give_back(self) -> None:
        self.in_flight -= 1
        while self.starved and self.in_flight < self.limit:
            gate = self.starved.popleft()
            gate.starved = False
            gate.pump()


class Ticket:
    """One granted request; it counts as started at its first byte to the kernel."""

    __slots__ = ("gate", "sent")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.sent = False

    def mark_sent(self) -> None:
        if not self.sent:
            self.sent = True
            self.gate.started()


class Gate:
    """One politeness key's budget. Waiters are served first come, first served by timers,
    never by polling, so a key with thousands of waiting URLs costs O(1) per grant.

    T is kept between the moments requests really leave, not only between grants: a grant
    is followed by a connection set-up, a pause of the loop or of the collector, any of
    which would otherwise let two requests reach the server closer than T. So while a
    granted request has not gone out, nothing else is granted, and the next start is
    T + margin after it left (the margin absorbs the jitter between our send and the
    server's reading of it).
    """

    def __init__(self, parallelism: int, throttle: float, margin: float, sched: Scheduler):
        self.parallelism = parallelism
        self.spacing = throttle + margin if throttle > 0 else 0.0
        self.in_flight = 0
        self.unsent = 0
        self.next_start = 0.0
        self.blocked_until = 0.0
        self.starved = False
        self._sched = sched
        self._loop = asyncio.get_running_loop()
        self._waiters: deque[asyncio.Future[Ticket]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> Ticket:
        fut: asyncio.Future[Ticket] = self._loop.create_future()
        self._waiters.append(fut)
        self.pump()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())
            raise

    def release(self, ticket: Ticket) -> None:
        # Not seen leaving (refused before connecting, or a write path we do not see):
        # count it as started now, which can only widen the gap.
        ticket.mark_sent()
        self.in_flight -= 1
        self._sched.give_back()
        self.pump()

    def started(self) -> None:
        self.unsent -= 1
        if self.spacing:
            self.next_start = max(self.next_start, self._loop.time() + self.spacing)
        self.pump()

    def block(self, seconds: float) -> None:
        """Nothing starts on this key for ``seconds`` (Retry-After, back-off of a 429/503)."""
        self.blocked_until = max(self.blocked_until, self._loop.time() + seconds)

    def idle(self) -> bool:
        now = self._loop.time()
        return (
            not self._waiters and self.in_flight == 0
            and now >= self.next_start and now >= self.blocked_until
        )

    def pump(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if self.in_flight >= self.parallelism or self.starved:
                return
            if self.spacing and self.unsent:
                return  # started() pumps again
            now = self._loop.time()
            ready = max(self.next_start, self.blocked_until)
            if now < ready:
                self._arm(ready)
                return
            if not self._sched.take(self):
                return
            self._waiters.popleft()
            self.in_flight += 1
            self.unsent += 1
            self.next_start = now + self.spacing
            head.set_result(Ticket(self))

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.pump()
