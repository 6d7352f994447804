"""The sparse ggml ops (patches/0001, ggml-sparse/cpu) against the dense computation, in the
real build: every weight type, odd shapes, 1-4 threads, sparsity 0, 0.5 and 1."""

from __future__ import annotations

import re
import subprocess

import pytest
from ggufsparse.runtime import locate

pytestmark = [pytest.mark.runtime]


def test_sparse_ops_match_the_dense_computation(runtime):
    proc = subprocess.run([str(locate.tool("test-sparse-ops"))], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    m = re.search(r"(\d+) cases, (\d+) failures", proc.stdout)
    assert m is not None, proc.stdout
    # 13 weight types x 4 thread counts x 3 sparsities x 2 batch sizes x 2 ops, plus 32 activation cases
    assert int(m.group(1)) >= 13 * 4 * 3 * 2 * 2 + 32 and int(m.group(2)) == 0

