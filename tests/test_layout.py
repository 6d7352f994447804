"""The GGUF contract: Python names, the C loader's names and docs/format.md agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ggufsparse.format import layout
from ggufsparse.paths import REPO_ROOT


def _c_tensor_names(arch_cpp: str) -> set[str]:
    return set(re.findall(r'\{\s*LLM_TENSOR_\w+,\s*"(blk\.%d\.[a-z_]+(?:_thr|_t|_nm|_nm_idx|_nm_perm|_pred_a|_pred_b))"\s*\}',
                          arch_cpp))


def test_python_names_match_the_patches():
    patches = [p.read_text() for p in sorted((REPO_ROOT / "patches").glob("*.patch"))]
    added = "\n".join(line[1:] for patch in patches for line in patch.splitlines() if line.startswith("+"))
    c_names = _c_tensor_names(added)
    py_names = {f"blk.%d.{t.stem}" for t in layout.SPARSE_TENSORS}
    assert c_names == py_names
    assert f'"{layout.Keys.FORMAT_VERSION}"' in added


def test_runtime_reads_the_format_version_python_writes():
    # the last patch that sets the version wins, as when the patches are applied in order
    versions = []
    for patch in sorted((REPO_ROOT / "patches").glob("*.patch")):
        versions += re.findall(r"^\+.*LLAMA_SPARSE_FORMAT_VERSION = (\d+);", patch.read_text(), re.MULTILINE)
    assert versions and int(versions[-1]) == layout.FORMAT_VERSION


@pytest.mark.runtime
def test_python_names_match_the_built_tree(runtime):
    arch_cpp = Path(runtime.work) / "src/vendor/llama.cpp/src/llama-arch.cpp"
    assert _c_tensor_names(arch_cpp.read_text()) == {f"blk.%d.{t.stem}" for t in layout.SPARSE_TENSORS}


def test_format_doc_lists_every_name():
    doc = (REPO_ROOT / "docs" / "format.md").read_text()
    for t in layout.SPARSE_TENSORS:
        assert f"blk.N.{t.stem}" in doc, t.stem
    for name, key in vars(layout.Keys).items():
        if not name.startswith("_"):
            assert key in doc, key
