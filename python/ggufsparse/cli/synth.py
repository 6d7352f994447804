"""`ggufsparse synth`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.format.gguf_io import check_writable
from ggufsparse.models.synth import MIXES, SHAPES, write_synthetic


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic model with real layer shapes and random weights",
        description="A llama-architecture GGUF with the layer shapes of a real model (e.g. llama2-7b), "
        "random weights in the chosen ggml type and the default model's tokenizer, for speed and memory "
        "measurements at sizes no model here has. Figures from it are synthetic.")
    p.add_argument("--shape", default="llama2-7b",
                   help=f"{', '.join(SHAPES)} (default llama2-7b; tiny and tiny-k are test-sized, 64 and 256 wide)")
    p.add_argument("--type", default="q4_0",
                   help="a ggml type for every matrix: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, ... (default q4_0; "
                   "a K type needs 256 to divide the rows); or a file type of the runtime's llama-quantize, its "
                   f"per-tensor mix with its fallbacks where 256 does not divide the rows: {', '.join(MIXES)} "
                   "(q2_k_mix and q6_k_mix are llama-quantize's Q2_K and Q6_K file types, as plain q2_k and q6_k "
                   "are the single ggml types); written in F16 to a temporary file beside OUTPUT, then quantized")
    p.add_argument("--layers", type=int, help="number of layers (default: the real model's)")
    p.add_argument("--tokenizer-from", metavar="GGUF",
                   help="copy the tokenizer from this GGUF (a model or a vocab-only file; default: the default model)")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-t", "--threads", type=int, help="llama-quantize's threads, for its file types (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no llama-quantize output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    check_writable(out, args.force)
    tokenizer = Path(args.tokenizer_from) if args.tokenizer_from else None
    if tokenizer is not None and not tokenizer.is_file():
        raise UserError(f"--tokenizer-from {tokenizer}: file not found")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    write_synthetic(out, args.shape, args.type, args.layers, tokenizer_from=tokenizer, progress=not args.quiet,
                    threads=args.threads)
    print(f"wrote {out} (synthetic: random weights; label any figure from it as synthetic)")
    return 0
