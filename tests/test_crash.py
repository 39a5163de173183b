"""kill -9 at random moments and at aimed ones; the outputs must equal a clean run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.publisher import ensure_topics
from shoal.demo import DemoSpec, write_demo_files
from tests.pipeline import digests, publish


class _Quiet(TypedDict):
    """subprocess keyword arguments that silence a child; typed so ``**`` unpacks cleanly."""

    stdout: int
    stderr: int


def test_sigkill_anywhere_changes_nothing(tmp_path: Path) -> None:
    rnd = random.Random(20261122)
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        files = write_demo_files(tmp_path / "demo", DemoSpec(posts=40000, hours=12, seed=3))
        publish(b.bootstrap, list(files.items()))
        cmd = [sys.executable, "-m", "shoal", "process", "--no-media", "--brokers", b.bootstrap,
               "--idle-exit", "1.5", "--epoch-seconds", "0.3", "--lateness", "60", "--data-dir"]
        quiet: _Quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        subprocess.run([*cmd, str(tmp_path / "clean")], check=True, timeout=180, **quiet)

        crashy = str(tmp_path / "crashy")
        kills = aimed = 0
        # Aimed crashes first, while there is plenty left to do: mid-flush (some chunks of
        # an epoch written, others not) and mid-seal (half of an hour's files replaced).
        for spec in ("chunk:2", "seal:1", "chunk:5", "seal-commit:2", "seal:3", "seal-commit:1"):
            env = {**os.environ, "SHOAL_CRASH_AT": spec}
            proc = subprocess.run([*cmd, crashy], env=env, timeout=180, **quiet)
            if proc.returncode == -signal.SIGKILL:
                aimed += 1
        # Then random moments from outside.
        while kills < 6:
            child = subprocess.Popen([*cmd, crashy], **quiet)
            try:
                child.wait(timeout=rnd.uniform(1.0, 2.5))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                child.wait()
                kills += 1
            else:
                break
        subprocess.run([*cmd, crashy], check=True, timeout=180, **quiet)
    assert aimed + kills >= 10, (aimed, kills)
    assert aimed >= 4
    clean, after = digests(tmp_path / "clean"), digests(tmp_path / "crashy")
    assert len(clean) > 40
    assert clean == after
    leftovers = [p for p in (tmp_path / "crashy").rglob("*") if p.name.endswith(".tmp")]
    # A temporary file a kill left behind is never under a final name, and is harmless.
    assert all(p.name.startswith(".") for p in leftovers)
