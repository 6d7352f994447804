"""The sparsity the runtime reached, from the report it writes to GGUFSPARSE_STATS when a
context is freed (docs/sparse-runtime.md): summed over the process's contexts, for llama.cpp's
tools run as child processes. One context's own counts, in process: `runtime.sparse_api.report`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ENV = "GGUFSPARSE_STATS"


def new_report_path() -> Path:
    """A fresh temporary path for a report, not yet a file: the runtime writes it only if some
    layer is sparse."""
    fd, name = tempfile.mkstemp(prefix="ggufsparse-stats-", suffix=".json")
    os.close(fd)
    os.unlink(name)
    return Path(name)


def request_report() -> Path:
    """Ask this process's runtime for its report; call before the first model loads (the runtime
    reads the variable once)."""
    path = new_report_path()
    os.environ[ENV] = str(path)
    return path


def read_report(path: Path) -> dict | None:
    """Per statistic (format/layout.py's STAT_NAMES: ffn, attn_q, attn_output, ...): fraction of
    channels skipped, counts and the fraction per layer; None if the model ran no sparse layer."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    kinds = {k: v for k, v in report.items() if isinstance(v, dict) and v.get("total")}
    return kinds or None
