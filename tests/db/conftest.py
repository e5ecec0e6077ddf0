"""Fixtures for the database tests: a private temporary directory outside pytest's basetemp.

Concurrent pytest sessions prune each other's old basetemp dirs; a cluster's data dir must not vanish mid-test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="neopulse-db-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
