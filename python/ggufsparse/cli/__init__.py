"""The `ggufsparse` command line: one module per command, each with add_parser(sub) and run(args).

The commands only parse, call and print; a UserError from anywhere becomes one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from ggufsparse import __version__
from ggufsparse.cli import (
    bench,
    build_runtime,
    chat,
    convert,
    doctor,
    evaluate,
    finetune,
    generate,
    inspect,
    models,
    predictor,
    reference,
    sweep,
    synth,
)
from ggufsparse.errors import UserError

EXIT_USER_ERROR = 2
# in the order `ggufsparse --help` lists them
COMMANDS = (build_runtime, doctor, models, generate, chat, convert, reference, synth, bench, evaluate, sweep,
            finetune, predictor, inspect)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line and exit code 2, like every other user error."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"ggufsparse: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ggufsparse",
        description="Activation and weight sparsity for GGUF models, run with a patched llama.cpp.")
    parser.add_argument("--version", action="version", version=f"ggufsparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"ggufsparse: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); not an error
        return 0
    except KeyboardInterrupt:
        print("\nggufsparse: interrupted", file=sys.stderr)
        return 130
