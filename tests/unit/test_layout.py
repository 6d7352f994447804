"""The GGUF contract: Python names, the C loader's names, the runtime's statistics and docs/format.md agree."""

from __future__ import annotations

import re

from ggufsparse.format import layout
from ggufsparse.paths import REPO_ROOT


def _c_tensor_names(arch_cpp: str) -> set[str]:
    return set(re.findall(r'\{\s*LLM_TENSOR_\w+,\s*"(blk\.%d\.[a-z_]+(?:_thr|_t|_nm|_nm_idx|_nm_perm|_pred_a|_pred_b))"\s*\}',
                          arch_cpp))


def _patches_added() -> str:
    patches = [p.read_text() for p in sorted((REPO_ROOT / "patches").glob("*.patch"))]
    return "\n".join(line[1:] for patch in patches for line in patch.splitlines() if line.startswith("+"))


def _c_stat_names() -> list[str]:
    """The runtime's statistic names in the order of ggml_sparse_stat_kind, as the patches leave
    them (a later patch's value for an enumerator wins, as when they are applied in order)."""
    added = _patches_added()
    values = {k: int(v) for k, v in re.findall(r"GGML_SPARSE_STAT_(\w+)\s*=\s*(\d+)", added)}
    names = dict(re.findall(r'case GGML_SPARSE_STAT_(\w+):\s*return "(\w+)";', added))
    kinds = values.pop("KINDS")
    assert sorted(values.values()) == list(range(kinds)), values
    assert set(names) == set(values), (names, values)
    return [names[k] for k in sorted(values, key=values.get)]


def test_stat_names_match_the_patches():
    assert _c_stat_names() == list(layout.STAT_NAMES)


def test_sites_and_targets_are_stats():
    assert set(layout.INPUT_SITES) <= set(layout.STAT_NAMES)
    assert {layout.TARGET_FFN, layout.TARGET_ATTN_Q, layout.TARGET_ATTN_OUT} <= set(layout.STAT_NAMES)
    for stat in layout.STATS:
        assert set(stat.saves) <= set(layout.PROJECTIONS), stat


def test_python_names_match_the_patches():
    added = _patches_added()
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


def test_format_doc_lists_every_name():
    doc = (REPO_ROOT / "docs" / "format.md").read_text()
    for t in layout.SPARSE_TENSORS:
        assert f"blk.N.{t.stem}" in doc, t.stem
    for name, key in vars(layout.Keys).items():
        if not name.startswith("_"):
            assert key in doc, key
