"""`ggufsparse sweep`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ggufsparse.cli.args import flash_attn_arg
from ggufsparse.eval import sweep
from ggufsparse.models.known import resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="convert, evaluate and benchmark a model at several sparsities; table and plot",
        description="For each method and sparsity: convert MODEL, evaluate it against MODEL (perplexity, "
        "KL divergence, top-1 agreement, sparsity reached; `ggufsparse eval`) and benchmark it against "
        "MODEL (`ggufsparse bench`). Writes OUTDIR/sweep.json, sweep.md and sweep.png (quality against "
        "measured sparsity and against decode speed, one line per method). Converted files and "
        "evaluations already in OUTDIR are reused; delete them to redo a point.")
    p.add_argument("model", help="the dense GGUF, a known model's name, or 'default'")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the files (created)")
    p.add_argument("--method", default="chess", help="comma-separated methods: chess, cats (default chess)")
    p.add_argument("--sparsity", default="0.3,0.5,0.7", help="comma-separated FFN sparsities (default 0.3,0.5,0.7)")
    p.add_argument("--attn-sparsity", help="attention q/output sparsity: one value for all points or one per "
                   "--sparsity value (default: dense attention)")
    p.add_argument("--chunks", type=int, default=16, help="perplexity windows per evaluation (default 16)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--calib-tokens", type=int, help="calibration tokens per conversion (default: convert's)")
    p.add_argument("-r", "--reps", type=int, default=3, help="benchmark repetitions (default 3)")
    p.add_argument("--tg", type=int, default=64, help="decode tokens per benchmark (default 64)")
    p.add_argument("--pp", type=int, default=128, help="prompt tokens per benchmark (default 128; 0: none)")
    p.add_argument("-t", "--threads", type=int, default=2, help="CPU threads (default 2)")
    flash_attn_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = sweep.make_plan(args.method, args.sparsity, args.attn_sparsity, chunks=args.chunks, ctx=args.ctx,
                           reps=args.reps, tg=args.tg, pp=args.pp, threads=args.threads,
                           calib_tokens=args.calib_tokens, flash_attn=args.flash_attn)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = sweep.run(resolve(args.model), out_dir, plan, progress=not args.quiet)
    files = sweep.write_outputs(result, out_dir)
    print(sweep.markdown(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
