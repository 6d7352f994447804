"""patches/ is a series by concern: git format-patch output, each upstream function edited by one
patch, one format version. (That the series applies to the pinned sdist and builds is checked in
tests/integration/test_patch_series_applies.py and by the build itself.)"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PATCHES = sorted((REPO_ROOT / "patches").glob("*.patch"))
SOURCE_SUFFIXES = (".c", ".cpp", ".h", ".cu", ".cuh")


def _files(patch: Path) -> dict[str, list[str]]:
    """Per file the patch changes: its hunk headers' context (the enclosing function or struct,
    as git writes it); new files are left out (they belong to the patch that adds them)."""
    out: dict[str, list[str]] = {}
    current = None
    for block in patch.read_text().split("\ndiff --git ")[1:]:
        header, _, body = block.partition("\n@@")
        name = header.split(" b/", 1)[1].split("\n", 1)[0]
        current = None if "new file mode" in header else out.setdefault(name, [])
        if current is not None:
            current.extend(m.group(1).strip() for m in re.finditer(r"^@@ [^@]* @@(.*)$", "@@" + body, re.MULTILINE))
    return out


def test_series_is_format_patch_output_with_index_lines():
    assert 3 <= len(PATCHES) <= 8, [p.name for p in PATCHES]
    for i, patch in enumerate(PATCHES, 1):
        text = patch.read_text()
        assert patch.name.startswith(f"{i:04d}-"), patch.name
        assert text.startswith("From 0000000000000000000000000000000000000000 "), patch.name
        assert re.search(r"^Subject: \[PATCH\] \S", text, re.MULTILINE), patch.name
        diffs = text.count("\ndiff --git ")
        assert diffs > 0 and len(re.findall(r"^index [0-9a-f]+\.\.[0-9a-f]+", text, re.MULTILINE)) == diffs, patch.name


def test_no_upstream_function_is_edited_by_two_patches():
    owners: dict[tuple[str, str], list[str]] = defaultdict(list)
    for patch in PATCHES:
        for name, contexts in _files(patch).items():
            if name.endswith(SOURCE_SUFFIXES):
                for ctx in set(contexts):
                    owners[(name, ctx)].append(patch.name)
    shared = {k: v for k, v in owners.items() if len(v) > 1}
    assert not shared, shared


def test_each_concern_in_one_patch():
    """The ggml ops, the CUDA backend, the loader, the context and the graph each sit in one patch."""
    touched = {p.name: set(_files(p)) for p in PATCHES}

    def owners(path: str) -> list[str]:
        return [n for n, files in touched.items() if any(f.endswith(path) for f in files)]

    for upstream in ("ggml/include/ggml.h", "ggml/src/ggml.c", "ggml/src/ggml-cpu/ggml-cpu.c",
                     "ggml/src/ggml-cuda/ggml-cuda.cu", "src/llama-arch.cpp", "src/llama-model.h",
                     "src/llama-model-loader.cpp", "src/llama-graph.cpp", "src/llama-graph.h",
                     "include/llama.h", "src/llama.cpp"):
        assert len(owners(upstream)) == 1, (upstream, owners(upstream))


def test_one_format_version_in_the_series():
    versions = [line for p in PATCHES for line in p.read_text().splitlines()
                if re.match(r"^\+.*LLAMA_SPARSE_FORMAT_VERSION\s*=", line)]
    assert len(versions) == 1, versions
