"""The GGUF contract against the built tree: the C loader's names as compiled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ggufsparse.format import layout


def _c_tensor_names(arch_cpp: str) -> set[str]:
    return set(re.findall(r'\{\s*LLM_TENSOR_\w+,\s*"(blk\.%d\.[a-z_]+(?:_thr|_t|_nm|_nm_idx|_nm_perm|_pred_a|_pred_b))"\s*\}',
                          arch_cpp))


@pytest.mark.runtime
def test_python_names_match_the_built_tree(runtime):
    arch_cpp = Path(runtime.work) / "src/vendor/llama.cpp/src/llama-arch.cpp"
    assert _c_tensor_names(arch_cpp.read_text()) == {f"blk.%d.{t.stem}" for t in layout.SPARSE_TENSORS}
