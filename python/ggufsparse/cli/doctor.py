"""`ggufsparse doctor`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.runtime import stats
from ggufsparse.runtime.doctor import diagnose, format_report


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check that llama_cpp uses the patched runtime",
                       description="Report the runtime llama_cpp loads, its flags and backends, the built "
                       "tools, and what is missing with the command that fixes it. Exit code 1 if "
                       "anything is missing.")
    p.add_argument("--model", metavar="FILE",
                   help="also load FILE (a ggufsparse GGUF) as the tools do and say which kernels its decode "
                   "uses on this machine and why: the runtime times the skipping kernels against the dense "
                   "products per site when a context is made (GGUFSPARSE_KERNELS=auto; docs/never-slower.md)")
    p.add_argument("-t", "--threads", type=int, default=2, help="threads for --model's context (default 2)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = diagnose()
    if args.model is not None and report["ok"]:
        report["kernels"] = _kernels_of(Path(args.model), args.threads)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if "kernels" in report:
            print(f"kernels for {args.model} ({args.threads} threads): {stats.kernels_summary(report['kernels'])}")
    return 0 if report["ok"] else 1


def _kernels_of(path: Path, threads: int) -> dict | None:
    from ggufsparse.errors import UserError
    from ggufsparse.runtime import sparse_api
    from ggufsparse.runtime.session import ModelLoadError, Session

    if threads < 1:
        raise UserError("--threads must be at least 1")
    try:
        with Session(path, n_threads=threads) as s:
            s.open_context(64)
            return stats.kernels(sparse_api.report(s))
    except ModelLoadError as e:
        raise UserError(str(e)) from None
