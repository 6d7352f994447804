"""`ggufsparse convert`: its options are the recipe's fields (pipeline/recipe.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.models.known import resolve
from ggufsparse.pipeline import recipe as recipes


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="calibrate sparsity thresholds and write them into a new GGUF",
        description="Run calibration text through the model (dequantized, in PyTorch, one layer at a "
        "time), compute the method's thresholds, and write OUTPUT: every tensor and key of the input "
        "unchanged, plus thresholds, transposed weights and ggufsparse.* metadata. Methods: chess "
        "(per-channel FFN thresholds, He et al. 2024) and cats (one FFN threshold per layer, Lee et al. "
        "2024); --attn-sparsity adds CHESS's thresholds on the inputs of the attention q and output "
        "projections. teal (Liu et al. 2024): a threshold on the input of every projection, levels "
        "spread over each block's projections greedily; chess+teal: CHESS's FFN with TEAL on q, k, v and "
        "output. Flags override the fields of --recipe.")
    p.add_argument("model", nargs="?", help="GGUF file (any quant type), Hugging Face folder, known model "
                   "name or 'default'; optional with a --recipe that names one")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write (whole or not at all: a run killed "
                   "at any moment leaves none; see docs/convert.md, \"Interruptions\")")
    p.add_argument("--recipe", help="a recipe in convert/ by name (e.g. smollm2-135m-chess) or a .toml file")
    groups: dict[str | None, argparse._ActionsContainer] = {None: p}
    for name, flag, kind, help_, group in recipes.flags():
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        groups[group].add_argument(flag, dest=name, type=kind, help=help_)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="PyTorch dtype for calibration (default float32)")
    p.add_argument("--outtype", default="f16", help="for a Hugging Face folder: convert_hf_to_gguf.py's "
                   "--outtype (f32, f16, bf16, q8_0; default f16)")
    p.add_argument("--quantize", help="for a Hugging Face folder: quantize with llama-quantize to this type "
                   "(e.g. q4_0, q4_k_m) before calibrating")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: the conversion loads torch (seconds), which the other commands never need
    from ggufsparse.pipeline.convert import convert
    from ggufsparse.pipeline.results import summary

    recipe, recipe_model = recipes.load_recipe(args.recipe) if args.recipe else (recipes.Recipe(), None)
    recipe = recipe.override(**{name: getattr(args, name) for name, *_ in recipes.flags()})
    name = args.model or recipe_model
    if name is None:
        raise UserError("give a MODEL (a GGUF file, a Hugging Face folder or a known model's name)")
    model = Path(name) if Path(name).is_dir() else resolve(name)
    result = convert(model, Path(args.output), recipe, force=args.force, progress=not args.quiet,
                     dtype=args.dtype, outtype=args.outtype, quantize=args.quantize)
    figures, what = summary(result, recipe)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"wrote {figures['output']}: {what}; see: ggufsparse inspect {figures['output']}")
    return 0
