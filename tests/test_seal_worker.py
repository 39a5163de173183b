"""Sealing in a child process changes where the work runs, never what is written."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker
from connectors.hourly_files import DiskTrouble, HourSummary
from connectors.kafka_io import ensure_topics
from shoal.demo import DemoSpec, write_demo_files
from tests.pipeline import all_ids, digests, publish, run_flow


def test_child_and_inline_sealing_write_identical_files(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=6000, hours=6, seed=11))
    summaries: dict[bool, list[HourSummary]] = {True: [], False: []}
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 4)
        publish(b.bootstrap, list(files.items()))
        for in_child in (True, False):
            run_flow(b.bootstrap, tmp_path / f"child={in_child}", seal_in_child=in_child,
                     lateness=60, on_sealed=summaries[in_child].append)
    child, inline = digests(tmp_path / "child=True"), digests(tmp_path / "child=False")
    assert len(child) > 6 * 4  # every hour's four files, day reports, Parquet
    assert child == inline
    assert len(set(all_ids(tmp_path / "child=True"))) > 5000
    # The parent learns of every seal the child did, with the same counts.
    key = lambda s: (s.platform, s.start)  # noqa: E731
    assert sorted((key(s), s.total) for s in summaries[True]) == sorted(
        (key(s), s.total) for s in summaries[False])
    assert len({key(s) for s in summaries[True]}) >= 6


def test_a_seal_failing_in_the_child_stops_the_parent(tmp_path: Path) -> None:
    files = write_demo_files(tmp_path / "demo", DemoSpec(posts=500, hours=2, seed=5))
    data = tmp_path / "data"
    data.mkdir()
    (data / "twitter").write_text("a file where the platform's folder belongs")
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap, 2)
        publish(b.bootstrap, list(files.items()))
        with pytest.raises(Exception) as info:
            run_flow(b.bootstrap, data)
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, NotADirectoryError | FileExistsError) for e in chain), chain
    assert not list(data.rglob("*_IDs.txt.xz"))


def test_disk_trouble_crosses_the_process_boundary_intact() -> None:
    trouble = DiskTrouble("/data/twitter", errno.ENOSPC, "No space left on device")
    back = pickle.loads(pickle.dumps(trouble))
    assert isinstance(back, DiskTrouble)
    assert str(back) == str(trouble)
    assert back.errno == errno.ENOSPC
    assert "free space" in str(back)
