"""Shared test fixtures: where the real payloads live; a broker, its reader and debug logs.

The broker is per module (a module's collectors publish into one), so that one module's
topics never hold another's leftovers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_helpers import KafkaTap, debug_logging, running_broker, tapping

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SHOAL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        raise RuntimeError(f"no fixtures at {FIXTURES}: clone with ../shared beside the repo")
    return FIXTURES


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with debug_logging(caplog) as captured:
        yield captured


@pytest.fixture(scope="module")
def brokers() -> Iterator[str]:
    with running_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def tap(brokers: str) -> Iterator[KafkaTap]:
    with tapping(brokers) as reader:
        yield reader
