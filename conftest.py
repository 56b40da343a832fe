"""Repository-wide pytest set-up: Keras 2 must be selected before TensorFlow is imported; shared fixtures."""

import os
import uuid
from collections.abc import Callable

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def ram_root_factory() -> Callable[[], str]:
    """Makes fresh directory names on TensorFlow's in-process file system (``ram://``), a stand-in for
    ``gs://``; the file system lives as long as the test process, so every call gives a new name."""
    return lambda: f"ram://{uuid.uuid4().hex}"


@pytest.fixture
def ram_root(ram_root_factory) -> str:
    """A fresh directory on ``ram://`` (see :func:`ram_root_factory`)."""
    return ram_root_factory()


@pytest.fixture(params=["local", "ram"])
def any_root(request, tmp_path) -> str:
    """An empty directory, once local and once on ``ram://``: for tests that must hold on both."""
    return str(tmp_path) if request.param == "local" else request.getfixturevalue("ram_root")
