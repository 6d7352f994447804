"""Turning the sdist plus patches into a source tree: hashing, patching, syncing."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from ggufsparse.errors import UserError
from ggufsparse.runtime import sdist, source


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _patch_for(rel: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{rel}", f"b/{rel}")
    return "".join(lines)


def test_patch_hash_follows_patch_bytes_and_sparse_sources(tmp_path):
    patches = _tree(tmp_path / "patches", {"0001-x.patch": "one\n"})
    ops = _tree(tmp_path / "ops", {"cpu/op.c": "int x;\n", "README.md": "docs\n"})
    first = source.patch_hash(patches, ops)
    assert first == source.patch_hash(patches, ops)
    (ops / "README.md").write_text("other docs\n")  # documentation is not part of the runtime
    assert source.patch_hash(patches, ops) == first
    (patches / "0001-x.patch").write_text("one!\n")
    second = source.patch_hash(patches, ops)
    assert second != first
    (ops / "cpu" / "op.c").write_text("int y;\n")
    assert source.patch_hash(patches, ops) not in (first, second)


def test_patches_apply_in_order(tmp_path):
    tree = _tree(tmp_path / "tree", {"src/f.c": "a\nb\nc\n"})
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-b.patch").write_text(_patch_for("src/f.c", "a\nb\nc\n", "a\nB\nc\n"))
    (patches / "0002-c.patch").write_text(_patch_for("src/f.c", "a\nB\nc\n", "a\nB\nC\n"))
    assert source.apply_patches(tree, patches) == ["0001-b.patch", "0002-c.patch"]
    assert (tree / "src/f.c").read_text() == "a\nB\nC\n"


def test_a_patch_that_does_not_apply_is_named_with_its_hunk(tmp_path):
    tree = _tree(tmp_path / "tree", {"src/f.c": "x\ny\nz\n"})
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-b.patch").write_text(_patch_for("src/f.c", "a\nb\nc\n", "a\nB\nc\n"))
    with pytest.raises(UserError) as err:
        source.apply_patches(tree, patches)
    assert "patches/0001-b.patch" in str(err.value) and "src/f.c:1" in str(err.value)


def test_sync_rewrites_only_changed_files(tmp_path):
    stage = _tree(tmp_path / "stage", {"keep.c": "same\n", "edit.c": "new\n", "add/new.c": "n\n"})
    dest = _tree(tmp_path / "dest", {"keep.c": "same\n", "edit.c": "old\n", "gone.c": "x\n"})
    old_time = 1_000_000_000
    for p in dest.rglob("*.c"):
        os.utime(p, (old_time, old_time))
    assert source.sync(stage, dest) == 3  # edit.c, add/new.c written; gone.c removed
    assert (dest / "keep.c").stat().st_mtime == old_time  # untouched: no recompilation
    assert (dest / "edit.c").read_text() == "new\n" and (dest / "edit.c").stat().st_mtime > old_time
    assert (dest / "add/new.c").exists() and not (dest / "gone.c").exists()
    assert source.sync(stage, dest) == 0


def test_sdist_with_wrong_hash_is_refused(tmp_path):
    fake = tmp_path / sdist.FILENAME
    fake.write_bytes(b"not the real sdist")
    with pytest.raises(UserError, match="sha256"):
        sdist.verify(fake)
