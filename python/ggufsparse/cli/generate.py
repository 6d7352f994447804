"""`ggufsparse generate`."""

from __future__ import annotations

import argparse
import sys

from ggufsparse.cli.args import model_args
from ggufsparse.models.known import resolve
from ggufsparse.runtime import llm
from ggufsparse.runtime.chat import generate


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt", description="Stream a completion of the "
                       "prompt from the model through llama-cpp-python on the patched runtime.")
    model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="text to complete")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = llm.load(resolve(args.model), n_ctx=args.ctx, verbose=args.verbose)
    sys.stdout.write(args.prompt)
    generate(model, args.prompt, max_tokens=args.n_predict, temperature=args.temp, seed=args.seed,
             out=sys.stdout)
    return 0
