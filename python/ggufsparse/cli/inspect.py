"""`ggufsparse inspect`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.eval.inspection import describe, format_report


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a GGUF's sparsity data",
                       description="Method, recipe, calibration, per-layer sparsity measured on the "
                       "calibration text, the extra tensors with types and sizes, and the file-size overhead.")
    p.add_argument("file", help="a GGUF file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = describe(Path(args.file))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
