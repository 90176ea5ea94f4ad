"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A fresh directory with a short path, removed afterwards: AF_UNIX socket paths are limited to 107 bytes,
    and pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="kat-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
