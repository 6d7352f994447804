"""The sparse ggml ops (patches/0001, ggml-sparse/cpu) against the dense computation, in the
real build: every weight type, odd shapes, 1-4 threads, sparsity 0, 0.5 and 1."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from ggufsparse.runtime import locate

pytestmark = [pytest.mark.runtime]


@pytest.mark.parametrize("paths", ["simd", "plain_c"])
def test_sparse_ops_match_the_dense_computation(runtime, paths):
    # plain_c: GGML_SPARSE_SCALAR=1, the kernels' portable C paths (CPUs without AVX2 or NEON, and the
    # handicap that docs/never-slower.md uses) on this machine
    env = dict(os.environ, GGML_SPARSE_SCALAR="1" if paths == "plain_c" else "0")
    proc = subprocess.run([str(locate.tool("test-sparse-ops"))], capture_output=True, text=True, timeout=900,
                          check=False, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    m = re.search(r"(\d+) cases, (\d+) failures", proc.stdout)
    assert m is not None, proc.stdout
    # 13 weight types x 4 thread counts x 3 sparsities x 2 batch sizes x 2 ops, plus 32 activation cases
    assert int(m.group(1)) >= 13 * 4 * 3 * 2 * 2 + 32 and int(m.group(2)) == 0

