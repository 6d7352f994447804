"""`ggufsparse reference`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.models.known import resolve
from ggufsparse.paths import shared_data_dir


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reference", help="quality of sparse GGUFs from the PyTorch reference forward",
        description="Load the model once in PyTorch (dequantized), and for each FILE apply exactly its "
        "baked thresholds (FFN channel i active iff |act(gate)_i| > theta_i; q / output projection inputs "
        "kept iff |x| > t). Reports perplexity, KL divergence to the dense model, top-1 agreement and the "
        "sparsity reached, on the same windows for every file. The oracle for the C++ runtime.")
    p.add_argument("files", nargs="+", help="GGUF files converted from one model (a dense file adds only "
                   "the dense row)")
    p.add_argument("--text", help="evaluation text (default: ../shared/data/wikitext2/wiki.test.raw)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--chunks", type=int, default=24, help="windows to score, 0 for all (default 24)")
    p.add_argument("--score", choices=("all", "second-half"), default="all",
                   help="score every token (default) or the second half of each window as llama-perplexity")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: the reference loads torch (seconds), which the other commands never need
    from ggufsparse.reference.compare import compare, table

    text = Path(args.text) if args.text else shared_data_dir() / "wikitext2" / "wiki.test.raw"
    meta = compare([resolve(f) for f in args.files], text, args.ctx, args.chunks, args.score,
                   progress=not args.quiet)
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"reference (PyTorch), {text.name}: {meta['windows']} windows of {args.ctx} tokens, scoring {args.score}")
    print(table(meta["rows"]))
    return 0
