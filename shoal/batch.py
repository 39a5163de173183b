"""Where a batch collector is: what a progress line or bar shows.

The searching collectors (``shoal collect instagram``, ``tiktok``, ``images``) work through a
list of targets (profiles, hashtags, users, keywords) for hours or days, and spend much of
that time waiting (an hourly ceiling, a rate limit, a daily quota). A person at the terminal
wants to see, at a glance: how many targets are done of how many, which one is under way,
how many posts went out, and whether the collector is waiting and until when. The collector
updates one :class:`BatchProgress`; a display (``shoal.app.progress``) draws it.

Pure: no I/O and no clock of its own; times are given (wall-clock epoch seconds), so the
line is the same for the same state and time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class BatchProgress:
    """The state of one batch. Written by the collector's thread, read by the display's:
    each update is a single assignment or increment, so a reader sees a consistent enough
    picture without a lock."""

    kind: str = ""
    total: int = 0  # targets in the batch
    done: int = 0  # targets finished (this run, or already final in the state)
    current: str = ""  # the target under way; "" between targets
    posts: int = 0  # posts published this run
    outcomes: Counter[str] = field(default_factory=Counter)
    waiting_until: float = 0.0  # wall clock; 0 when not waiting
    waiting_why: str = ""

    def begin(self, total: int) -> None:
        self.total = total

    def start(self, target: str) -> None:
        self.current = target

    def finish(self, outcome: str) -> None:
        """The current target ended with ``outcome`` (``ok``, ``private``...)."""
        self.done += 1
        self.outcomes[outcome] += 1
        self.current = ""

    def skip(self, n: int = 1) -> None:
        """Targets a previous run already finished: done, without an outcome of this run."""
        self.done += n

    def published(self, n: int) -> None:
        self.posts += n

    def waiting(self, until: float, why: str) -> None:
        self.waiting_until, self.waiting_why = until, why

    def resumed(self) -> None:
        self.waiting_until, self.waiting_why = 0.0, ""

    def line(self, now: float) -> str:
        """``instagram · 3/6 targets · 42 posts · profile:carol · waiting until 12:03:04 UTC
        (rate limit)``; outcomes other than ok are listed when there are any."""
        parts = [self.kind or "collect", f"{self.done}/{self.total} targets",
                 f"{self.posts:,} posts"]
        odd = {k: v for k, v in sorted(self.outcomes.items()) if k != "ok"}
        if odd:
            parts.append(", ".join(f"{v} {k}" for k, v in odd.items()))
        if self.current:
            parts.append(self.current)
        if self.waiting_until > now:
            when = datetime.fromtimestamp(self.waiting_until, UTC).strftime("%H:%M:%S UTC")
            left = self.waiting_until - now
            parts.append(f"waiting until {when} ({self.waiting_why}, {left:,.0f} s)")
        return " · ".join(parts)
