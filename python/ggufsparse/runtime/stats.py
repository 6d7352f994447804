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
    return counters(read_whole(path))


def read_whole(path: Path) -> dict | None:
    """The report as the runtime wrote it (counters and "kernels"), or None; the file is removed."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


def counters(report: dict | None) -> dict | None:
    """The report's counters (read_report's form)."""
    kinds = {k: v for k, v in (report or {}).items() if isinstance(v, dict) and v.get("total")}
    return kinds or None


def kernels(report: dict | None) -> dict | None:
    """Which kernels the report's last tuned context used: {"mode": auto|sparse|dense|stock, and when
    timed: "sites": {site: {"kernels": "sparse"|"dense", "sparse_ms", "dense_ms", "layers",
    "sparsity"}}, "max_sparse_tokens", "tokens": [...], "tune_ms", "threads"} (docs/never-slower.md)."""
    k = (report or {}).get("kernels")
    return k if isinstance(k, dict) else None


def kernels_summary(k: dict | None) -> str:
    """One line: what the sparse side ran and why."""
    if not k:
        return "not reported (a runtime without the choice of kernels)"
    if k.get("dense_model"):
        return "none: the dense model (GGUFSPARSE_DENSE)"
    if k["mode"] != "auto":
        return f"{k['mode']} everywhere (GGUFSPARSE_KERNELS={k['mode']})"
    sites = k.get("sites") or {}
    if not sites:
        return f"skipping kernels (nothing timed: {k.get('note') or 'no sparse layer on the CPU'})"
    parts = []
    for choice in ("sparse", "dense"):
        names = [f"{s} ({v['sparse_ms']:.2f} vs {v['dense_ms']:.2f} ms dense)" for s, v in sites.items()
                 if v["kernels"] == choice]
        if names:
            parts.append(("skipping kernels for " if choice == "sparse" else "dense products for ") + ", ".join(names))
    tokens = k.get("tokens") or []
    batch = f"batches of up to {k['max_sparse_tokens']} tokens skip"
    if tokens:
        batch += " (" + ", ".join(f"{t['tokens']} tokens {t['sparse_ms']:.2f} vs {t['dense_ms']:.2f} ms" for t in tokens) + ")"
    return (f"{'; '.join(parts)}; {batch}; timed at load on this machine in {k['tune_ms']:.0f} ms "
            f"with {k['threads']} threads")
