"""`ggufsparse build-runtime`."""

from __future__ import annotations

import argparse
import json
import sys

from ggufsparse.errors import UserError
from ggufsparse.runtime.build import DEFAULT_CUDA_ARCHS, BuildFlags, build_runtime


def add_parser(sub) -> None:
    p = sub.add_parser("build-runtime", help="build the patched llama.cpp and point llama_cpp at it",
                       description="Fetch the pinned llama-cpp-python sdist (verified by sha256), apply "
                       "patches/ and ggml-sparse/, build llama.cpp's libraries and tools into a cache "
                       "outside the clone, and install llama-cpp-python's bindings on those libraries. "
                       "A build with nothing changed returns at once.")
    p.add_argument("--cuda", action="store_true", help="build the CUDA backend too")
    p.add_argument("--cuda-archs", help="CMAKE_CUDA_ARCHITECTURES for --cuda (default 75;80;86;89;90)")
    p.add_argument("--metal", action="store_true", help="build the Metal backend (macOS)")
    p.add_argument("--vulkan", action="store_true",
                   help="build the Vulkan backend too (needs libvulkan-dev and glslc; on a machine without a "
                   "GPU, Mesa's lavapipe is a software Vulkan device)")
    p.add_argument("--native", action="store_true",
                   help="optimise for this CPU only (-march=native); the default runs on its whole family")
    p.add_argument("--stock", action="store_true",
                   help="build unpatched llama.cpp libraries, the reference for comparisons; "
                   "does not change what llama_cpp loads")
    p.add_argument("-j", "--jobs", type=int, help="parallel compile jobs (default: number of cores)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache says it is up to date")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if sum((args.cuda, args.metal, args.vulkan)) > 1:
        raise UserError("--cuda, --metal and --vulkan exclude each other")
    if args.metal and sys.platform != "darwin":
        raise UserError("--metal builds only on macOS")
    backend = "cuda" if args.cuda else "metal" if args.metal else "vulkan" if args.vulkan else "cpu"
    flags = BuildFlags(backend=backend, cuda_archs=args.cuda_archs or DEFAULT_CUDA_ARCHS,
                       native=args.native, stock=args.stock)
    state = build_runtime(flags, jobs=args.jobs, force=args.force)
    if args.json:
        print(json.dumps({"version": state.version, "key": state.key, "bin_dir": state.bin_dir,
                          "tools": state.tools, "flags": state.flags}, indent=2))
    return 0
