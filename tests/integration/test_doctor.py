"""The runtime that llama_cpp loads is the patched build of this checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ggufsparse.paths import PATCHES_DIR, SPARSE_OPS_DIR
from ggufsparse.runtime import source
from ggufsparse.runtime.build import TOOLS

pytestmark = pytest.mark.runtime


def test_doctor_reports_the_patched_runtime_active():
    proc = subprocess.run([sys.executable, "-m", "ggufsparse", "doctor", "--json"], capture_output=True, text=True, check=False)
    report = json.loads(proc.stdout)
    assert report["patched_runtime_active"] is True, report["missing"]
    assert proc.returncode == 0 and report["missing"] == []
    assert report["bindings"]["build_id"] == source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR)
    assert "CPU" in report["bindings"]["backends"]
    for tool in TOOLS:
        assert Path(report["tools"][tool]).is_file()


def test_llama_cpp_version_carries_the_ggufsparse_marker():
    out = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"0.3.36+ggufsparse.{source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR)}"


def test_llama_tools_use_the_same_libraries_as_llama_cpp(runtime):
    """One build: llama.cpp's tools and the Python bindings load the same libllama."""
    import llama_cpp

    bindings_lib = Path(llama_cpp.llama_cpp._lib._name).resolve()
    for tool in ("llama-cli", "llama-perplexity", "llama-bench"):
        ldd = subprocess.run(["ldd", runtime.tools[tool]], capture_output=True, text=True, check=True).stdout
        line = next(ln for ln in ldd.splitlines() if "libllama.so" in ln)
        assert Path(line.split("=>")[1].split("(")[0].strip()).resolve() == bindings_lib, line
