"""The `ggufsparse finetune` command (ProSparse): arguments and summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.models.known import resolve
from ggufsparse.pipeline import recipe as recipes


def add_parser(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a model for activation sparsity (ProSparse)",
        description="ProSparse: swap the gated FFN's activation for ReLU and fine-tune with an L1 penalty on the "
        "FFN's intermediate activations whose factor rises in sine-shaped stages (the recipe's 'stages'), then "
        "export with FATReLU (--fatrelu) as a GGUF in the source's weight types, with the sparse FFN's tensors. "
        "Checkpoints go to OUTPUT.ckpt every --save-every steps; running the same command again resumes there "
        "(after the last step it only exports, so another --fatrelu needs no training), also after a kill at any "
        "moment, and ends with the same bytes as an uninterrupted run; OUTPUT is written last, whole. Trains on CUDA when "
        "torch finds a GPU, else on the CPU. See docs/prosparse.md.")
    p.add_argument("model", nargs="?", help="a GGUF file or a known model's name; optional with a --recipe that names one")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")
    p.add_argument("--method", help="prosparse (the only one)")
    p.add_argument("--recipe", help="a recipe in convert/ (e.g. prosparse-smollm2-135m) or a .toml file")
    p.add_argument("--data", help="training text, .txt or .jsonl(.gz) with a \"text\" field (default: the C4 sample); "
                   "its last --eval-windows windows are held out")
    p.add_argument("--steps", type=int, help="optimizer steps (default 240); the stages scale to them")
    p.add_argument("--batch", type=int, help="windows per step (default 4)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 256)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--fatrelu", type=float, help="FATReLU threshold written at export (default 0.01; 0: ReLU)")
    p.add_argument("--save-every", type=int, help="checkpoint interval in steps (default 20)")
    p.add_argument("--eval-windows", type=int, help="held-out windows scored at each stage's end (default 8)")
    p.add_argument("--distill", type=float, help="weight in [0, 1] of distillation from the original model (KL to its "
                   "next-token distribution) in place of cross-entropy (default 0: the paper's loss); costs one "
                   "more forward a step and a second copy of the model in memory")
    p.add_argument("--relu-anneal", type=float, metavar="F", help="blend the model's own activation into ReLU "
                   "linearly over the first fraction F of the steps instead of swapping at step 0 (default 0: the "
                   "paper's swap; not in the paper, see docs/prosparse.md)")
    p.add_argument("--seed", type=int, help="seed of the data order and the initialisation (default 0)")
    p.add_argument("--outtype", default="auto", help="type of the trained weights: auto (default: the source's if it "
                   "is f32, f16, bf16 or q8_0, else q8_0), source (the source's own, e.g. Q4_1: see docs/prosparse.md "
                   "for what requantising a fine-tune to 4 bits costs), f16, q8_0")
    p.add_argument("--checkpoint", help="checkpoint file (default: OUTPUT.ckpt)")
    p.add_argument("--stop-after", type=int, metavar="N", help="run at most N steps now, checkpoint and stop")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: training loads torch (seconds), which the other commands never need
    from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
    from ggufsparse.methods.prosparse.run import finetune

    recipe, recipe_model = recipes.load_finetune_recipe(args.recipe) if args.recipe else (FinetuneRecipe(), None)
    recipe = recipe.override(method=args.method, data=args.data, steps=args.steps, batch=args.batch,
                             seq_len=args.seq_len, lr=args.lr, fatrelu=args.fatrelu, save_every=args.save_every,
                             eval_windows=args.eval_windows, seed=args.seed,
                             distill=args.distill, relu_anneal=args.relu_anneal).validate()
    if args.stop_after is not None and args.stop_after < 1:
        raise UserError("--stop-after must be at least 1")
    name = args.model or recipe_model
    if name is None:
        raise UserError("give a MODEL (a GGUF file or a known model's name)")
    log = (lambda _msg: None) if args.json else print
    r = finetune(resolve(name), Path(args.output), recipe, restart=args.restart, stop_after=args.stop_after,
                 force=args.force, progress=not args.quiet, log=log, outtype=args.outtype,
                 checkpoint=Path(args.checkpoint) if args.checkpoint else None)
    h = r.result.history
    summary = {"output": str(r.output) if r.result.steps == recipe.steps else None, "checkpoint": str(r.checkpoint),
               "steps": r.result.steps, "tokens": r.result.tokens, "resumed_from": r.result.resumed_from,
               "seconds": round(r.seconds, 1), "device": r.device,
               "activation": {"kind": r.activation.kind, "threshold": r.activation.threshold},
               "held_out_ffn_sparsity": r.export_sparsity,
               "history": [{"step": p.step, "lambda": p.lam, "held_out_ppl": p.ppl, "sparsity": p.sparsity,
                            "sparsity_at_threshold": p.sparsity_at_threshold} for p in h]}
    if args.json:
        print(json.dumps(summary, indent=2))
    elif summary["output"]:
        print(f"wrote {r.output}: {r.activation.kind} (threshold {r.activation.threshold}), {r.result.steps} steps, "
              f"{r.result.tokens} tokens, {r.seconds:.0f} s on {r.device}; held-out ppl {h[0].ppl:.2f} -> "
              f"{h[-1].ppl:.2f}, FFN sparsity {r.export_sparsity:.3f} at threshold {r.activation.threshold}")
    return 0
