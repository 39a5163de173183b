"""The batch collectors' progress bar: what it says, and that log lines stay whole above it.

A terminal is stood in for by a rich console forced into terminal mode writing to a file;
the bar's state is the :class:`BatchProgress` the collectors update (its counts against a
real run are checked in tests/test_collect_config.py).
"""

from __future__ import annotations

import io
import logging
import re
import time

from shoal.app.progress import BatchDisplay
from shoal.batch import BatchProgress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_line_says_targets_posts_current_and_the_wait() -> None:
    p = BatchProgress("instagram")
    p.begin(6)
    p.skip()
    p.start("profile:alice")
    p.published(5)
    p.finish("ok")
    p.start("profile:bob")
    p.finish("private")
    p.start("profile:carol")
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    p.waiting(now + 90, "rate limit")
    assert p.line(now) == ("instagram · 3/6 targets · 5 posts · 1 private · profile:carol · "
                           "waiting until 22:14:50 UTC (rate limit, 90 s)")
    p.resumed()
    assert "waiting" not in p.line(now)
    p.waiting(now - 1, "rate limit")  # a wait that has passed is not shown
    assert "waiting" not in p.line(now)


def test_bar_on_a_terminal_with_log_lines_above_it() -> None:
    out = io.StringIO()
    before = io.StringIO()
    handler = logging.StreamHandler(before)
    handler.setFormatter(logging.Formatter("MINE %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    p = BatchProgress("tiktok")
    p.begin(3)
    try:
        with BatchDisplay(p, stream=out, terminal=True, refresh=0.05):
            p.start("#london")
            p.published(12)
            p.finish("ok")
            p.start("#paris")
            p.waiting(time.time() + 3600, "daily quota")
            time.sleep(0.3)
            logging.getLogger("shoal.collect").warning("daily quota reached, a log line")
            time.sleep(0.3)
        assert handler.stream is before  # given back after the display
    finally:
        root.removeHandler(handler)
    text = ANSI.sub("", out.getvalue())
    assert "1/3" in text and "12 posts" in text and "#paris" in text
    assert "waiting until" in text and "daily quota" in text
    # The log line went through the bar's console: on a line of its own, whole.
    lines = [line for line in text.replace("\r", "\n").splitlines() if "MINE" in line]
    assert lines == ["MINE daily quota reached, a log line"]
    assert before.getvalue() == ""


def test_not_a_terminal_draws_nothing() -> None:
    out = io.StringIO()
    p = BatchProgress("images")
    with BatchDisplay(p, stream=out, terminal=False):
        p.begin(1)
        p.start("cats")
        p.finish("ok")
    assert out.getvalue() == ""
