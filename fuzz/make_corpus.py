#!/usr/bin/env python3
"""Write the loader fuzzer's seed corpus (fuzz/corpus/): one small file per kind of ggufsparse
file, each made by the project's own commands from a test-sized synthetic model.

    python fuzz/make_corpus.py [OUT] [--regressions DIR]   # default: fuzz/corpus (replaced)

With --regressions, also the regression files of the patches' fuzzer findings (docs/fuzzing.md),
rebuilt from the seeds: `predictor-a-repacked-q4_0.gguf` is the predictor seed with
`blk.0.ffn_pred_a.weight` requantized to Q4_0, a type the CPU repacks (finding 1). None of these
files is kept in git; scripts/sanitize.py writes them into its build folder.

Every file is a `ggufsparse synth --shape tiny` model (64 wide, one layer; `tiny-k`, 256 wide, for
the packed K-quants) with a 259-token byte-level vocabulary, converted with one method: CHESS with
attention, CATS, TEAL, CHESS+TEAL, CHESS with the cut on down's input, E-Sparse 2:4 stored packed only
(with its channel shuffle), magnitude 2:4 masked+packed, CHESS+E-Sparse, random predictors, a
ProSparse fine-tune (FATReLU), CHESS on Q4_K; plus the dense model itself. Calibration uses 256
tokens of the default C4 sample, so a file takes seconds.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CALIB = ["--calib-tokens", "256", "--calib-seq-len", "32", "-q", "--force"]

# name in the corpus: (base model, command after `ggufsparse`, with {base} and {out})
FILES = {
    "dense-q4_0": ("q4_0", None),
    "chess-attn-q4_0": ("q4_0", ["convert", "{base}", "--method", "chess", "--sparsity", "0.5",
                                 "--attn-sparsity", "0.5", "-o", "{out}", *CALIB]),
    "cats-q8_0": ("q8_0", ["convert", "{base}", "--method", "cats", "--sparsity", "0.5", "-o", "{out}", *CALIB]),
    "teal-q4_0": ("q4_0", ["convert", "{base}", "--method", "teal", "--sparsity", "0.5", "-o", "{out}", *CALIB]),
    "chess-teal-f16": ("f16", ["convert", "{base}", "--method", "chess+teal", "--sparsity", "0.5",
                               "--attn-sparsity", "0.5", "-o", "{out}", *CALIB]),
    "chess-down-q4_0": ("q4_0", ["convert", "{base}", "--method", "chess", "--sparsity", "0.4",
                                 "--down-sparsity", "0.6", "-o", "{out}", *CALIB]),
    "esparse-packed-q8_0": ("q8_0", ["convert", "{base}", "--method", "esparse", "--nm", "2:4", "-o", "{out}",
                                     *CALIB]),
    "magnitude-masked-packed-q4_0": ("q4_0", ["convert", "{base}", "--method", "magnitude", "--nm", "4:8",
                                              "--nm-storage", "masked+packed", "-o", "{out}", *CALIB]),
    "chess-esparse-q8_0": ("q8_0", ["convert", "{base}", "--method", "chess+esparse", "--nm", "2:4",
                                    "--sparsity", "0.5", "-o", "{out}", *CALIB]),
    "predictor-q4_0": ("chess-attn-q4_0", ["predictor", "{base}", "--random", "0.5", "--rank", "32", "-o", "{out}",
                                           "-q", "--force"]),
    "prosparse-q8_0": ("q8_0", ["finetune", "{base}", "--steps", "6", "--batch", "1", "--seq-len", "32",
                                "--eval-windows", "1", "--save-every", "6", "-o", "{out}", "-q", "--force"]),
    "chess-q4_k": ("k-q4_k", ["convert", "{base}", "--method", "chess", "--sparsity", "0.5", "-o", "{out}",
                              *CALIB]),
}


def byte_vocab(path: Path) -> Path:
    """A GPT-2 style vocabulary of the 256 byte tokens (any text tokenizes), one merge, BOS and EOS."""
    import gguf
    from gguf.vocab import bytes_to_unicode

    chars = bytes_to_unicode()
    tokens = [chars[b] for b in range(256)] + ["\u0120\u0120", "<s>", "</s>"]
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * 257 + [gguf.TokenType.CONTROL] * 2)
    w.add_token_merges(["\u0120 \u0120"])
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    return path


def ggufsparse(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ggufsparse", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        sys.exit(f"make_corpus: ggufsparse {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def predictor_a_repacked(seed: Path, out: Path) -> None:
    """Finding 1: a predictor weight in a type the CPU backend repacks, which the value check could
    not read back."""
    import gguf
    from ggufsparse.format.gguf_io import ExtraTensor, write_with_extras

    name = "blk.0.ffn_pred_a.weight"
    t = next(t for t in gguf.GGUFReader(seed).tensors if t.name == name)
    values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    q = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q4_0)
    write_with_extras(seed, out, [], [], replace=[ExtraTensor(name, q, gguf.GGMLQuantizationType.Q4_0)],
                      force=True, progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "fuzz" / "corpus")
    parser.add_argument("--regressions", type=Path, help="also write the regression files here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        vocab = byte_vocab(tmp / "vocab.gguf")
        for qtype in ("q4_0", "q8_0", "f16"):
            ggufsparse("synth", "--shape", "tiny", "--layers", "1", "--type", qtype, "--tokenizer-from", str(vocab),
                       "-o", f"{qtype}.gguf", "-q", cwd=tmp)
        ggufsparse("synth", "--shape", "tiny-k", "--layers", "1", "--type", "q4_k", "--tokenizer-from", str(vocab),
                   "-o", "k-q4_k.gguf", "-q", cwd=tmp)
        made = {}
        for name, (base, cmd) in FILES.items():
            src = made.get(base, tmp / f"{base}.gguf")
            out = tmp / f"{name}.gguf"
            if cmd is None:
                shutil.copyfile(src, out)
            else:
                # relative names: the recipe a file records holds no folder of this machine
                ggufsparse(*[a.format(base=src.name, out=out.name) for a in cmd], cwd=tmp)
            made[name] = out
            print(f"{name}.gguf: {out.stat().st_size} bytes")
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        for name, path in made.items():
            shutil.copyfile(path, args.out / f"{name}.gguf")
        if args.regressions is not None:
            args.regressions.mkdir(parents=True, exist_ok=True)
            predictor_a_repacked(made["predictor-q4_0"], args.regressions / "predictor-a-repacked-q4_0.gguf")
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {len(made)} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
