"""Fixtures for the ingestion tests."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
async def running():
    """Start a module (its bus, start(), run()) in the test's loop; everything is cancelled afterwards."""
    tasks = []

    async def start(module):
        tasks.append(asyncio.create_task(module.bus.run()))
        await module.start()
        tasks.append(asyncio.create_task(module.run()))
        return module

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
