"""Shared fixtures: tests that set up logging get the root logger back as it was."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
