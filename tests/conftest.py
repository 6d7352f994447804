"""Shared fixtures. Runtime and model tests never skip: CI builds the runtime first."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from ggufsparse.models.known import resolve
from ggufsparse.runtime import locate

# The runtime's default (auto) times the skipping kernels against the dense products when a
# context is made and takes the faster per site: on a loaded machine that choice can differ from run
# to run. Tests that compare runs bit for bit, or check the skipping kernels themselves, take them
# everywhere; tests/integration/test_kernel_choice.py sets the choice it tests.
os.environ.setdefault("GGUFSPARSE_KERNELS", "sparse")
# The suite runs two files at a time (scripts/test.sh) and llama.cpp's processes use 2 threads: with
# OpenMP's default, a thread waiting at a barrier spins, and four spinning threads on two cores take
# turns at nothing (two llama-perplexity runs together took 26.5 s instead of 7.6 s). Waiting threads
# sleep instead. Benchmarks never run under this setting.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


@pytest.fixture(scope="session")
def default_model() -> Path:
    return resolve("default")


@pytest.fixture(scope="session")
def qwen_coder_model() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M, joined into the cache from its 22 packages on first use."""
    return resolve("qwen2.5-coder-1.5b-q4_k_m")


@pytest.fixture(scope="session")
def runtime():
    return locate.require_active()


@pytest.fixture(scope="module", autouse=True)
def _module_scratch_removed(tmp_path_factory):
    """Delete what a module's fixtures wrote once the module is done.

    The suite writes model files of several hundred MB; kept to the end of the run they need
    tens of GB of temporary space. Passing tests' own folders go at once
    (tmp_path_retention_policy = "failed" in pyproject.toml); this does it for module-scoped ones.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    for entry in set(base.iterdir()) - before:
        if entry.is_dir() and not _holds_failure(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _holds_failure(folder: Path) -> bool:
    # Function-scoped folders of failed tests are kept for inspection; fixtures' folders are not.
    return folder.name.startswith("test_")


# Files that build something of their own (the sanitizer build, the two aarch64 builds) run first:
# with the files spread over workers (scripts/test.sh), a long file that starts last keeps one
# worker busy after the other has finished.
FIRST = ("test_sanitizers.py", "test_arm.py", "test_sparse_runtime.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: each file's own order is kept
