"""The sparse ops on 64-bit ARM (scripts/arm-check.sh, docs/arm.md): the patched ggml and
test-sparse-ops cross-compiled for aarch64 with and without the dot-product instructions, every
case run under qemu against the dense product, 0 failures; and the NEON kernels really built."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from ggufsparse.paths import REPO_ROOT

pytestmark = [pytest.mark.runtime]

# the script runs 2 of test-sparse-ops' 4 thread counts (each case also on 1 thread, bit for bit):
# 13 weight types x 2 thread counts x 3 sparsities x 2 batch sizes x 2 ops, plus 16 activation
# cases, half the floor tests/integration/test_sparse_ops.py holds the x86 build to
MIN_CASES = 13 * 2 * 3 * 2 * 2 + 16


def _functions(objdump: str) -> dict[str, list[str]]:
    """Mnemonics of each function in `objdump -d` output."""
    funcs: dict[str, list[str]] = {}
    current: list[str] = []
    for line in objdump.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            current = funcs.setdefault(head.group(1), [])
            continue
        parts = line.split("\t")
        if len(parts) >= 2 and re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            current.append(parts[1].split()[0] if parts[1].split() else "")
    return funcs


@pytest.fixture(scope="module")
def arm_check() -> str:
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "arm-check.sh")], capture_output=True, text=True,
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize("name, dotprod", [("dotprod", 1), ("armv8", 0)])
def test_every_case_passes_under_qemu(arm_check, name, dotprod):
    assert re.search(rf"^{name}: march=\S+ cpu=\S+ exit=0 ", arm_check, re.MULTILINE), arm_check
    assert f"{name}: kernels: AVX2=0 NEON=1 DOTPROD={dotprod}" in arm_check, arm_check
    assert f"{name}: threads: 2 3" in arm_check, arm_check
    m = re.search(rf"^{name}: (\d+) cases, (\d+) failures$", arm_check, re.MULTILINE)
    assert m is not None, arm_check
    assert int(m.group(1)) >= MIN_CASES and int(m.group(2)) == 0, arm_check
    assert f"{name}: FAIL" not in arm_check


def test_the_builds_hold_their_neon_kernels(arm_check):
    binaries = dict(re.findall(r"^(\w+): march=\S+ cpu=\S+ exit=0 run=\d+s binary=(\S+)$", arm_check, re.MULTILINE))
    assert set(binaries) == {"dotprod", "armv8"}, arm_check
    funcs = {}
    for name, path in binaries.items():
        assert Path(path).is_file(), path
        out = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", path], capture_output=True,
                             text=True, check=True).stdout
        funcs[name] = _functions(out)
    for name in binaries:
        f = funcs[name]
        # the NEON paths, not the plain C ones: byte table lookups in the packed and N:M kernels
        assert "tbl" in f["ggml_sparse_axpy_packed"], name
        assert "tbl" in f["ggml_compute_forward_nm_expand"], name
        assert "tbl" in f["ggml_compute_forward_mul_mat_nm"], name
    # the dot-product build multiplies with sdot in the packed and the 2:4 int8 products ...
    assert funcs["dotprod"]["ggml_sparse_axpy_packed"].count("sdot") >= 16
    assert "sdot" in funcs["dotprod"]["ggml_compute_forward_mul_mat_nm"]
    # ... the plain armv8-a build nowhere (it ran on a CPU without the instruction)
    assert not any("sdot" in ops for ops in funcs["armv8"].values())
    assert "smull2" in funcs["armv8"]["ggml_sparse_axpy_packed"]
