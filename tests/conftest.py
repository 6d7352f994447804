"""Shared fixtures. Runtime and model tests never skip: CI builds the runtime first."""

from __future__ import annotations

from pathlib import Path

import pytest
from ggufsparse.models import resolve
from ggufsparse.runtime import locate


@pytest.fixture(scope="session")
def default_model() -> Path:
    return resolve("default")


@pytest.fixture(scope="session")
def runtime():
    return locate.require_active()
