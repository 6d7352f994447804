"""The patched llama.cpp under ASan + UBSan (scripts/sanitize.py check): test-sparse-ops with every
case, the loader fuzzer over its generated seed corpus and regression files (fuzz/make_corpus.py), then two minutes of
fuzzing. Any sanitizer report, failed case or fuzzer crash fails the test. The first run builds
the sanitizer tree (about 10 minutes on 2 cores, see docs/fuzzing.md); later ones reuse it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.runtime]

ROOT = Path(__file__).resolve().parents[2]
FUZZ_SECONDS = 120


def test_sanitized_sparse_ops_and_loader_fuzzing_report_nothing():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sanitize.py"), "check", str(FUZZ_SECONDS)],
                          capture_output=True, text=True, timeout=40 * 60, check=False)
    out = proc.stdout + proc.stderr
    for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "ERROR: libFuzzer"):
        assert mark not in out, out[-6000:]
    assert proc.returncode == 0, out[-6000:]
    assert "cases, 0 failures" in proc.stdout, proc.stdout[-4000:]
    assert "[sanitize] all clean" in proc.stderr, proc.stderr[-4000:]
