"""Every patch applies, in order, to a fresh extraction of the pinned sdist, through the same
script that turns the series into a git tree for editing (scripts/patches.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.runtime]  # the sdist is in the cache once the runtime is built

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_series_applies_in_order_to_the_pinned_sdist(runtime, tmp_path):
    tree = tmp_path / "tree"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "patches.py"), "tree", str(tree)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    patches = sorted((REPO_ROOT / "patches").glob("*.patch"))
    log = subprocess.run(["git", "log", "--format=%s", "sdist..HEAD"], cwd=tree, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(log) == len(patches) > 0
    # the tree exports back to the same bytes: the series is the tree's commits
    out = tmp_path / "again"
    subprocess.run(["git", "format-patch", "-q", "--no-numbered", "--zero-commit", "--no-signature", "--full-index", "-o", str(out),
                    "sdist..HEAD"], cwd=tree, check=True)
    assert [p.read_bytes() for p in sorted(out.glob("*.patch"))] == [p.read_bytes() for p in patches]
