"""Shared test helpers: where the real payloads live, and an embedded broker per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SHOAL_FIXTURES", ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        raise RuntimeError(f"no fixtures at {FIXTURES}: clone with ../shared beside the repo")
    return FIXTURES
