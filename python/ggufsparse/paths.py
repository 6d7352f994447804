"""Where the project's own files, the shared data and the build cache live."""

from __future__ import annotations

import os
from pathlib import Path

# python/ggufsparse/paths.py -> repository root (editable install; the only supported layout)
REPO_ROOT = Path(__file__).resolve().parents[2]
PATCHES_DIR = REPO_ROOT / "patches"
SPARSE_OPS_DIR = REPO_ROOT / "ggml-sparse"
RECIPES_DIR = REPO_ROOT / "convert"


def cache_dir() -> Path:
    """Build cache outside the clone, shared by every checkout on the machine."""
    env = os.environ.get("GGUFSPARSE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ggufsparse"


def shared_data_dir() -> Path:
    """The calibration and evaluation data shipped beside the repository (../shared/data)."""
    env = os.environ.get("GGUFSPARSE_DATA")
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
