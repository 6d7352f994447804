"""`ggufsparse eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.cli.args import flash_attn_arg
from ggufsparse.eval.evaluate import evaluate, format_report, make_plan
from ggufsparse.format.gguf_io import check_writable, write_atomic
from ggufsparse.models.known import resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="perplexity, KL to the dense model, task accuracy and sparsity, on the real runtime",
        description="Measure MODEL through the patched llama.cpp (the runtime users run). Perplexity over "
        "non-overlapping windows of --ctx tokens, scoring the second half of each as llama-perplexity "
        "does; with --ref, the KL divergence KL(ref || model) per scored token (mean, 99th percentile) "
        "and top-1 agreement on the same windows; multiple-choice tasks (acc, acc_norm, standard errors, "
        "lm-evaluation-harness's scoring); and the fraction of channels the runtime skipped, from its "
        "counters.")
    p.add_argument("model", help="a GGUF file, a known model's name, or 'default'")
    p.add_argument("--ref", help="the dense GGUF the model was made from: adds KL divergence and top-1 agreement")
    p.add_argument("--ppl", metavar="FILE", help="text for perplexity: a text file, or a .jsonl(.gz) of "
                   "{\"text\"} documents joined by blank lines (default: ../shared/data/wikitext2/wiki.test.raw)")
    p.add_argument("--ppl-docs", metavar="START:END", help="with a .jsonl --ppl: only these documents, e.g. "
                   "800: for the C4 sample's last 200, which calibration (reading from the first) never uses")
    p.add_argument("--no-ppl", action="store_true", help="skip perplexity (tasks only)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per perplexity window (default 512)")
    p.add_argument("--chunks", type=int, default=0, help="perplexity windows to score, 0 for all (default 0)")
    p.add_argument("--tasks", action="append", metavar="LIST",
                   help="comma-separated tasks: bundled names (piqa, arc_easy, boolq, winogrande; 'all' for "
                   "the four) or .jsonl files in the format of ../shared/data/README.md; may repeat")
    p.add_argument("--limit", type=int, help="first N examples of each task")
    p.add_argument("--task-ctx", type=int, default=2048,
                   help="longest task input in tokens; longer ones lose tokens on the left (default 2048)")
    p.add_argument("-t", "--threads", type=int, help="CPU threads (default: all cores)")
    flash_attn_arg(p)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_writable(Path(args.json), force=True)
    plan = make_plan(ppl=args.ppl, no_ppl=args.no_ppl, ppl_docs=args.ppl_docs, ctx=args.ctx, chunks=args.chunks,
                     tasks=args.tasks, limit=args.limit, task_ctx=args.task_ctx, threads=args.threads,
                     flash_attn=args.flash_attn)
    ref = resolve(args.ref) if args.ref else None
    report = evaluate(resolve(args.model), ref, plan, progress=not args.quiet)
    if args.json:
        write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 0
