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


def _origin_checkout() -> Path | None:
    """For a clone of a local checkout, that checkout (from .git/config's origin url)."""
    config = REPO_ROOT / ".git" / "config"
    try:
        lines = config.read_text().splitlines()
    except OSError:
        return None
    in_origin = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_origin = stripped == '[remote "origin"]'
        elif in_origin and stripped.startswith("url"):
            url = stripped.split("=", 1)[1].strip().removeprefix("file://")
            path = Path(url).expanduser()
            return path if path.is_absolute() and path.is_dir() else None
    return None


def shared_data_dir() -> Path:
    """The calibration and evaluation data: $GGUFSPARSE_DATA, else ../shared/data beside the
    repository, else beside the local checkout this clone was made from."""
    env = os.environ.get("GGUFSPARSE_DATA")
    if env:
        return Path(env).expanduser()
    beside = REPO_ROOT.parent / "shared" / "data"
    origin = _origin_checkout()
    if not beside.is_dir() and origin is not None and (origin.parent / "shared" / "data").is_dir():
        return origin.parent / "shared" / "data"
    return beside
