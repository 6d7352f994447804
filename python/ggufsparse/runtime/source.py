"""Turn the pinned sdist plus patches/ and ggml-sparse/ into a patched source tree."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from ggufsparse.errors import UserError

LLAMA_DIR = "vendor/llama.cpp"

# ggml-sparse/<backend>/ is copied to this folder of the vendored llama.cpp; the patches
# add these folders to the backends' CMake sources
SPARSE_OP_DESTINATIONS = {
    "cpu": f"{LLAMA_DIR}/ggml/src/ggml-cpu/ggml-sparse",
    "cuda": f"{LLAMA_DIR}/ggml/src/ggml-cuda/ggml-sparse",
    "metal": f"{LLAMA_DIR}/ggml/src/ggml-metal/ggml-sparse",
    "tests": f"{LLAMA_DIR}/tests/ggml-sparse",
}
# documentation files in ggml-sparse/ that are not sources
_NOT_SOURCES = {"README.md", ".gitkeep"}

BUILD_ID_HEADER = f"{LLAMA_DIR}/src/ggufsparse-build-id.h"


def _inputs(patches_dir: Path, sparse_dir: Path) -> list[tuple[str, Path]]:
    files = [(f"patches/{p.name}", p) for p in sorted(patches_dir.glob("*.patch"))]
    if sparse_dir.is_dir():
        for p in sorted(sparse_dir.rglob("*")):
            if p.is_file() and p.name not in _NOT_SOURCES and "__pycache__" not in p.parts:
                files.append((f"ggml-sparse/{p.relative_to(sparse_dir).as_posix()}", p))
    return files


def patch_hash(patches_dir: Path, sparse_dir: Path) -> str:
    """Content hash of everything the project adds to llama.cpp (names and bytes)."""
    digest = hashlib.sha256()
    for rel, path in _inputs(patches_dir, sparse_dir):
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _keep_member(member: tarfile.TarInfo) -> bool:
    parts = member.name.split("/")[1:]  # drop the top folder
    if ".git" in parts:
        return False
    # the vocab and template files under models/ are 75 MB and no built target reads them
    rel = "/".join(parts)
    return not rel.startswith(f"{LLAMA_DIR}/models/")


def extract(sdist: Path, dest: Path) -> None:
    """Extract the sdist without its top folder, its .git folders and llama.cpp's models/."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if not _keep_member(m) or "/" not in m.name:
                continue
            m.name = m.name.split("/", 1)[1]
            members.append(m)
        tar.extractall(dest, members=members, filter="data")


def apply_patches(tree: Path, patches_dir: Path) -> list[str]:
    applied = []
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))
    for patch in sorted(patches_dir.glob("*.patch")):
        result = subprocess.run(["git", "apply", "--whitespace=nowarn", str(patch)],
                                cwd=tree, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = "; ".join(line for line in result.stderr.strip().splitlines() if line) or "no output"
            raise UserError(f"patches/{patch.name} does not apply to llama.cpp: {detail}")
        applied.append(patch.name)
    return applied


def copy_sparse_ops(tree: Path, sparse_dir: Path) -> None:
    for backend, dest_rel in SPARSE_OP_DESTINATIONS.items():
        src = sparse_dir / backend
        dest = tree / dest_rel
        files = [p for p in sorted(src.rglob("*")) if p.is_file() and p.name not in _NOT_SOURCES] \
            if src.is_dir() else []
        for p in files:
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


def stamp(tree: Path, build_id: str, python_version: str) -> None:
    """Mark the tree: the C build id for llama_print_system_info, and llama_cpp.__version__."""
    (tree / BUILD_ID_HEADER).write_text(f'#pragma once\n#define GGUFSPARSE_BUILD_ID "{build_id}"\n')
    init = tree / "llama_cpp" / "__init__.py"
    text, n = re.subn(r'^__version__ = ".*"$', f'__version__ = "{python_version}"',
                      init.read_text(), flags=re.MULTILINE)
    if n != 1:
        raise UserError(f"{init}: no __version__ line to mark")
    init.write_text(text)


def sync(stage: Path, dest: Path) -> int:
    """Make dest hold exactly stage's files, rewriting only files whose bytes differ.

    Unchanged files keep their modification times, so the build that follows recompiles
    only what a patch change touched. Returns the number of files written or removed.
    """
    changed = 0
    seen = set()
    for src in stage.rglob("*"):
        rel = src.relative_to(stage)
        seen.add(rel)
        target = dest / rel
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        data = src.read_bytes()
        if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        target.write_bytes(data)
        shutil.copymode(src, target)
        changed += 1
    for old in sorted(dest.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if old.relative_to(dest) not in seen:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
            changed += 1
    return changed
