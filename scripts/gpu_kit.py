#!/usr/bin/env python3
"""Gather what scripts/gpu-check.sh needs on a GPU machine that has CUDA, cmake, ninja, numpy
and Python but cannot download: the patched llama.cpp sources (without the folders no CUDA
build of llama-bench and test-backend-ops reads), the default model's tokenizer as a vocab-only
GGUF (so synthetic models there equal the ones made here), and the thresholds that
`ggufsparse convert` calibrated here on synthetic Llama-2-7B shapes (scripts/graft_thresholds.py).

  python scripts/gpu_kit.py KIT [DONOR.gguf NAME ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ggufsparse.format.gguf_io import copy_field, open_reader
from ggufsparse.models.known import resolve
from ggufsparse.paths import cache_dir
from ggufsparse.runtime import sdist, source
from ggufsparse.runtime.build import python_version_string

ROOT = Path(__file__).resolve().parent.parent
# large folders of the vendored llama.cpp that the CUDA build of the benchmark tools never reads
_DROP = ["docs", "models", "examples", "benches", "ggml/src/ggml-vulkan", "ggml/src/ggml-sycl",
         "ggml/src/ggml-opencl", "ggml/src/ggml-metal", "ggml/src/ggml-cann", "ggml/src/ggml-webgpu",
         "ggml/src/ggml-hexagon", "ggml/src/ggml-zdnn", "ggml/src/ggml-musa", "tools/server/public",
         "tools/server/webui", "tools/mtmd/legacy-models", "gguf-py/tests"]


def patched_tree(dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        source.extract(sdist.fetch(cache_dir()), stage)
        source.apply_patches(stage, ROOT / "patches")
        source.copy_sparse_ops(stage, ROOT / "ggml-sparse")
        phash = source.patch_hash(ROOT / "patches", ROOT / "ggml-sparse")
        source.stamp(stage, phash, python_version_string(phash))
        llama = stage / source.LLAMA_DIR
        for rel in _DROP:
            shutil.rmtree(llama / rel, ignore_errors=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(llama, dest)


def vocab_only(model: Path, out: Path) -> None:
    import gguf

    reader = open_reader(model)
    w = gguf.GGUFWriter(out, arch="llama")
    for field in reader.fields.values():
        if field.name.startswith("tokenizer."):
            copy_field(w, field)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kit", type=Path)
    p.add_argument("donors", nargs="*", help="pairs: a converted synthetic GGUF and the name its thresholds get")
    args = p.parse_args()
    if len(args.donors) % 2:
        p.error("donors come in pairs: FILE NAME")
    args.kit.mkdir(parents=True, exist_ok=True)
    patched_tree(args.kit / "llama.cpp")
    vocab_only(resolve("default"), args.kit / "vocab.gguf")
    for donor, name in zip(args.donors[::2], args.donors[1::2]):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "graft_thresholds.py"), "extract", donor,
                        str(args.kit / f"{name}.npz")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
