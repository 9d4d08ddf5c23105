"""Shared fixtures: one engine per session, as a worker process would hold it."""

from __future__ import annotations

import pytest

from worker.engine import Engine
from worker.settings import Settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env({})


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Engine:
    return Engine(settings)
