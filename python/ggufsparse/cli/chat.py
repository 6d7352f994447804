"""`ggufsparse chat`."""

from __future__ import annotations

import argparse
import sys

from ggufsparse.cli.args import model_args
from ggufsparse.models.known import resolve
from ggufsparse.runtime import llm
from ggufsparse.runtime.chat import chat


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model", description="Chat using the chat template "
                       "stored in the GGUF. Reads one message a line from standard input; Ctrl-C stops an "
                       "answer, Ctrl-C or Ctrl-D at the prompt quits.")
    model_args(p)
    p.add_argument("--system", default="You are a helpful assistant.", help="system message ('' for none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = llm.load(resolve(args.model), n_ctx=args.ctx, verbose=args.verbose)
    if sys.stdin.isatty():
        print("chatting with " + args.model + "; an empty line is ignored, Ctrl-C or Ctrl-D quits",
              file=sys.stderr)
    chat(model, system=args.system, max_tokens=args.n_predict, temperature=args.temp)
    return 0
