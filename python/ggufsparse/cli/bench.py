"""`ggufsparse bench`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.eval import bench
from ggufsparse.models.known import resolve


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="dense vs sparse tokens/s with llama-bench",
                       description="Run llama.cpp's llama-bench on DENSE and SPARSE alternately (one call "
                       "per model and repetition, so the machine's drift falls on both), and print the "
                       "median tokens/s of decode (tg) and prompt processing (pp) and the sparse/dense ratio. "
                       "With one file, its dense side is the same file run with GGUFSPARSE_DENSE=1 (sparsity "
                       "tensors ignored): the baseline of a fine-tuned file such as ProSparse's. Beside each decode "
                       "ratio: its bytes-read bound, the bytes of weights a dense decode token reads over those a "
                       "sparse one reads at the sparsity the runtime counted, and the share of it reached.")
    p.add_argument("dense", help="the dense GGUF (or a known model's name, or 'default'); alone: the sparse GGUF")
    p.add_argument("sparse", nargs="?", help="the sparse GGUF made from DENSE")
    p.add_argument("-r", "--reps", type=int, default=5, help="repetitions of each model (default 5)")
    p.add_argument("--tg", type=int, help="tokens generated per decode test (default 128; 0: none; "
                   "--parallel: per stream, default 32)")
    p.add_argument("--pp", type=int, help="prompt tokens per prompt test (default 512; 0: none; "
                   "--parallel: each stream's prompt, default 128)")
    p.add_argument("-t", "--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--parallel", metavar="N,N,...",
                   help="served throughput instead: N streams decoding together (e.g. 1,2,4,8) with "
                   "llama-batched-bench, alternated as above; prints aggregate decode tokens/s, each stream's "
                   "milliseconds a token, and from how many streams on the sparse file is slower")
    p.add_argument("--kernels", choices=("auto", "sparse", "dense", "stock"),
                   help="what the sparse file's runs use: auto (the default, or GGUFSPARSE_KERNELS) times the "
                   "skipping kernels against the dense products on this machine when a context is made and "
                   "takes the faster per site; sparse: the skipping kernels wherever the file has them; dense: "
                   "the dense products on the same thresholded inputs (the same model); stock: as dense, with the "
                   "thresholds applied by stock ggml ops, as on a GPU without the sparse ops. The report says what "
                   "ran and why (docs/never-slower.md)")
    p.add_argument("--json", action="store_true", help="print medians, ratios and every run as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.reps < 1:
        raise UserError("--reps must be at least 1")
    levels = None if args.parallel is None else _levels(args.parallel)
    if args.kernels is not None:
        os.environ["GGUFSPARSE_KERNELS"] = args.kernels   # read by the runtime of every run
    # one file: that file against its own dense path
    dense, sparse = (None, resolve(args.dense)) if args.sparse is None else (resolve(args.dense), Path(args.sparse))
    if levels is not None:
        return _run_parallel(args, dense, sparse, levels)
    tg, pp = 128 if args.tg is None else args.tg, 512 if args.pp is None else args.pp
    dense_speeds, sparse_speeds = bench.run(dense, sparse, args.reps, tg, pp, args.threads,
                                            progress=not args.quiet)
    bound = bench.decode_bound(dense, sparse, dense_speeds, sparse_speeds)
    rep = bench.report(dense_speeds, sparse_speeds, bound)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(bench.table(rep))
    return 0


def _levels(text: str) -> list[int]:
    try:
        levels = [int(v) for v in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise UserError(f"--parallel {text}: a list of stream counts such as 1,2,4,8")
    return levels


def _run_parallel(args: argparse.Namespace, dense: Path | None, sparse: Path, levels: list[int]) -> int:
    tg = args.tg or 32
    pp = 128 if args.pp is None else args.pp  # each stream's prompt; decode is what is timed
    dense_speeds, sparse_speeds = bench.run_parallel(dense, sparse, args.reps, levels, tg, pp, args.threads,
                                                     progress=not args.quiet)
    rep = bench.report(dense_speeds, sparse_speeds)
    rep["streams"] = levels
    print(json.dumps(rep, indent=2) if args.json else bench.parallel_table(rep))
    return 0
