"""`ggufsparse doctor`."""

from __future__ import annotations

import argparse
import json

from ggufsparse.runtime.doctor import diagnose, format_report


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check that llama_cpp uses the patched runtime",
                       description="Report the runtime llama_cpp loads, its flags and backends, the built "
                       "tools, and what is missing with the command that fixes it. Exit code 1 if "
                       "anything is missing.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = diagnose()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1
