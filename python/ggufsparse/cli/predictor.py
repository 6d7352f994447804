"""The `ggufsparse predictor` command: arguments and summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.models.known import resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predictor", help="add FFN activation predictors, so decode skips gate rows too",
        description="A sparse FFN file (CHESS, CATS or a ProSparse fine-tune) still computes every ffn_gate row, "
        "since the gate decides which channels are active. This adds a small low-rank predictor per layer, "
        "trained on calibration text to guess those channels from the FFN's input, so decode computes only the "
        "predicted gate rows. A channel predicted off is dropped: the predictor's only error, set by --recall "
        "(the share of active channels it must keep, per layer, on held-out calibration windows). "
        "Each trained layer is checkpointed to OUTPUT.ckpt (a folder, removed once OUTPUT is written); running "
        "the same command again after an interruption resumes at the first unfinished layer and writes the same "
        "file as an uninterrupted run. See docs/predictor.md.")
    p.add_argument("model", help="a GGUF converted with an FFN method (it carries ffn_gate_thr)")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")
    p.add_argument("--rank", type=int, default=128, help="inner size of each predictor (default 128)")
    p.add_argument("--recall", type=float, default=0.999,
                   help="share of active channels kept on held-out calibration windows, per layer (default 0.999)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training tokens (default 10)")
    p.add_argument("--calib", help="calibration text (default: the C4 sample in ../shared/data)")
    p.add_argument("--calib-tokens", type=int, default=32768,
                   help="calibration tokens, 1/8 of them held out for the cut-offs (default 32768)")
    p.add_argument("--pred-type", choices=("q8_0", "f16", "f32"), default="q8_0",
                   help="type of the predictor weights (default q8_0, through ggml's quantizer: half of f16's bytes "
                   "for decode to read; it needs a --rank and a model width that are multiples of 32)")
    p.add_argument("--random", type=float, metavar="SHARE",
                   help="synthetic models only: random predictors that turn on SHARE of the gate rows, for speed "
                   "measurements (they predict nothing; label any figure as synthetic)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: the predictors train with torch (seconds), which the other commands never need
    from ggufsparse.methods.predictor import PredictorRecipe
    from ggufsparse.pipeline.convert_predictor import add_predictors

    recipe = PredictorRecipe(rank=args.rank, recall=args.recall, epochs=args.epochs, calib_tokens=args.calib_tokens,
                             weight_type=args.pred_type, seed=args.seed)
    result = add_predictors(resolve(args.model), Path(args.output), recipe, random_share=args.random,
                            calib_file=Path(args.calib) if args.calib else None, force=args.force,
                            restart=args.restart, progress=not (args.quiet or args.json))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if result.kind == "random":
        print(f"wrote {result.output}: random predictors of rank {result.rank}, {summary['predicted']:.3f} of gate rows "
              "on (synthetic: label any figure from it as synthetic)")
    else:
        print(f"wrote {result.output}: predictors of rank {result.rank} on {result.calib_tokens} calibration tokens; "
              f"held out: recall {summary['recall']:.4f}, gate rows computed {summary['predicted']:.3f} "
              f"(active {summary['active']:.3f})")
    return 0
