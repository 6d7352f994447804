"""The sparsity the runtime reached, from the report it writes to GGUFSPARSE_STATS when a
context is freed (docs/sparse-runtime.md): cumulative over the process, so one model per process."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ENV = "GGUFSPARSE_STATS"


def request_report() -> Path:
    """Ask the runtime for its report in a new temporary file; call before the first model loads
    (the runtime reads the variable once)."""
    fd, name = tempfile.mkstemp(prefix="ggufsparse-stats-", suffix=".json")
    os.close(fd)
    os.unlink(name)  # the runtime writes it only if some layer is sparse
    os.environ[ENV] = name
    return Path(name)


def read_report(path: Path) -> dict | None:
    """Per projection kind (ffn, attn_q, attn_output): fraction of channels skipped, counts and
    the fraction per layer; None if the model ran no sparse layer."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    kinds = {k: v for k, v in report.items() if isinstance(v, dict) and v.get("total")}
    return kinds or None
