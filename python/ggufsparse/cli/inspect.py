"""`ggufsparse inspect`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.eval.inspection import describe, format_report
from ggufsparse.format import validate


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a GGUF's sparsity data, or check its values (--check)",
                       description="Method, recipe, calibration, per-layer sparsity measured on the "
                       "calibration text, the extra tensors with types and sizes, and the file-size overhead. "
                       "With --check: every ggufsparse value the runtime trusts (thresholds finite and >= 0, "
                       "N:M positions inside their groups, permutations, predictor weights finite, per-layer "
                       "records one value per layer, the recipe JSON) and the file's tensors against its own "
                       "metadata; exit code 2 and one line naming the file and the tensor or key on the first "
                       "problem (the ranges: docs/format.md, \"Values\").")
    p.add_argument("file", help="a GGUF file")
    p.add_argument("--check", action="store_true", help="validate the file's ggufsparse values; exit 2 if one is bad")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        report = validate.check(Path(args.file))  # BadFile: one line, exit 2
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            sites = ", ".join(report.sites) or "none"
            print(f"{report.file}: ok (format {report.format_version or '-'}, {report.sparse_tensors} ggufsparse "
                  f"tensors, {report.values_checked} values checked; sparse sites: {sites})")
        return 0
    report = describe(Path(args.file))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
