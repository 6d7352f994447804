"""Synthetic GGUF models: real layer shapes, random weights, for measurements at sizes no model
here has. Every result from one must be labelled synthetic.

The tokenizer is copied from a real GGUF (default: the default model) so that the file loads
and tokenizes text like any model. Tensors are generated and written one at a time, so
memory stays at one tensor whatever the model's size.

A --type is either one ggml type for every matrix (q4_0, q4_k, q6_k, ...) or one of
llama-quantize's file types (q4_k_m, q5_k_s, ...: per-tensor mixes with fallbacks where a
K-quant's 256 does not divide the rows). For those the model is written in F16 next to the
output and the runtime's own llama-quantize makes the output, so the mix is exactly its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_layers: int
    n_ctx: int = 4096


SHAPES = {
    "llama2-7b": Shape(4096, 11008, 32, 32, 32),
    "llama2-13b": Shape(5120, 13824, 40, 40, 40),
    "llama3-8b": Shape(4096, 14336, 32, 8, 32),
    "smollm2-135m": Shape(576, 1536, 9, 3, 30),
    # test-sized files (the loader fuzzer's seeds, fuzz/make_corpus.py): the smallest whose rows are
    # whole Q4_0/Q8_0 blocks after 2:4 pruning, and (tiny-k) whole K-quant super-blocks of 256
    "tiny": Shape(64, 128, 4, 2, 2, 256),
    "tiny-k": Shape(256, 256, 4, 2, 1, 256),
}

FLOAT_TYPES = ("f32", "f16", "bf16")

# llama-quantize's file types, by the --type that selects them. Its Q2_K and Q6_K file types share
# their names with ggml types (plain q2_k, q6_k put every matrix in that one type), so they are
# spelled with _mix. Q2_K_S and the IQ mixes need an importance matrix, which random weights lack.
MIXES = {"q2_k_mix": "Q2_K", "q3_k_s": "Q3_K_S", "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L", "q4_k_s": "Q4_K_S",
         "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S", "q5_k_m": "Q5_K_M", "q6_k_mix": "Q6_K"}


def mix_of(type_name: str) -> str | None:
    """llama-quantize's name of the file type `--type type_name` selects, or None for a ggml type."""
    return MIXES.get(type_name.lower())


def quantize_command(quantize: Path, src: Path, dst: Path, ftype: str, threads: int | None = None) -> list[str]:
    cmd = [str(quantize), str(src), str(dst), ftype]
    return cmd + [str(threads)] if threads else cmd


def failure_line(lines: list[str], returncode: int) -> str:
    """The line of llama-quantize's output that says why it failed."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        m = re.search(r"failed to quantize: (.+)", line)
        if m:
            return m.group(1)
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else f"exit code {returncode}"


def run_quantize(src: Path, dst: Path, ftype: str, threads: int | None = None, progress: bool = True) -> None:
    """llama-quantize src -> dst in file type ftype; its output passed through to stderr when
    progress, kept otherwise; a failure raises a one-line UserError."""
    from ggufsparse.runtime.locate import tool

    cmd = quantize_command(tool("llama-quantize"), src, dst, ftype, threads)
    tail: deque[str] = deque(maxlen=50)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace")
    except OSError as exc:
        raise UserError(f"llama-quantize: cannot run {cmd[0]} ({exc.strerror or exc})") from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            if progress:
                sys.stderr.write(line)
                sys.stderr.flush()
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        raise UserError(f"llama-quantize to {ftype} failed: {failure_line(list(tail), rc)}")


def _tensors(shape: Shape, n_vocab: int, n_layers: int) -> list[tuple[str, tuple[int, int] | tuple[int], bool]]:
    """(name, numpy shape (n_out, n_in) or (n,), is a matmul weight)."""
    e, f = shape.n_embd, shape.n_ff
    kv = e // shape.n_head * shape.n_head_kv
    out = [("token_embd.weight", (n_vocab, e), True), ("output_norm.weight", (e,), False),
           ("output.weight", (n_vocab, e), True)]
    for i in range(n_layers):
        out += [(f"blk.{i}.attn_norm.weight", (e,), False), (f"blk.{i}.attn_q.weight", (e, e), True),
                (f"blk.{i}.attn_k.weight", (kv, e), True), (f"blk.{i}.attn_v.weight", (kv, e), True),
                (f"blk.{i}.attn_output.weight", (e, e), True), (f"blk.{i}.ffn_norm.weight", (e,), False),
                (f"blk.{i}.ffn_gate.weight", (f, e), True), (f"blk.{i}.ffn_up.weight", (f, e), True),
                (f"blk.{i}.ffn_down.weight", (e, f), True)]
    return out


def _weight(seed: int, shape, is_matrix: bool, qtype) -> np.ndarray:
    import gguf

    from ggufsparse.format import ggml_quant

    rng = np.random.default_rng(seed)
    if not is_matrix:
        return np.ones(shape, dtype=np.float32)
    # unit-variance outputs for unit-variance inputs, as in a trained model's typical layer
    w = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[1]))
    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return w
    if qtype == T.F16:
        return w.astype(np.float16)
    if qtype == T.BF16:
        return gguf.quants.quantize(w, T.BF16)
    return ggml_quant.quantize(w, qtype)


def write_synthetic(out: Path, shape_name: str, type_name: str, n_layers: int | None = None,
                    tokenizer_from: Path | None = None, seed: int = 0, progress: bool = True,
                    threads: int | None = None) -> Path:
    """Write the synthetic model to `out` (through a temporary file renamed onto it). threads:
    llama-quantize's, for the file types (default: its own, every core)."""
    import gguf

    from ggufsparse.format.gguf_io import open_reader, temp_beside
    from ggufsparse.models.known import resolve

    if shape_name not in SHAPES:
        raise UserError(f"--shape {shape_name}: unknown; choose one of {', '.join(SHAPES)}")
    ftype = mix_of(type_name)
    try:
        qtype = gguf.GGMLQuantizationType.F16 if ftype else gguf.GGMLQuantizationType[type_name.upper()]
    except KeyError:
        raise UserError(f"--type {type_name}: not a ggml type (e.g. f16, q8_0, q4_0, q4_k) nor a llama-quantize "
                        f"file type ({', '.join(MIXES)})") from None
    shape = SHAPES[shape_name]
    n_layers = n_layers or shape.n_layers
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape.n_embd % block or shape.n_ff % block:
        raise UserError(f"--type {type_name}: block of {block} does not divide the rows of {shape_name} "
                        f"(a llama-quantize file type such as q4_k_m falls back to other types there)")
    src = open_reader(tokenizer_from or resolve("default"))

    tmp = temp_beside(out)
    unquantized = temp_beside(out) if ftype else None
    try:
        _write(unquantized or tmp, src, shape, shape_name, n_layers, qtype, type_name, seed, progress)
        if ftype:
            run_quantize(unquantized, tmp, ftype, threads, progress)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if unquantized is not None:
            unquantized.unlink(missing_ok=True)
    return out


def _write(path: Path, src, shape: Shape, shape_name: str, n_layers: int, qtype, type_name: str, seed: int,
           progress: bool) -> None:
    import gguf
    from tqdm import tqdm

    from ggufsparse.format.gguf_io import copy_field

    tok_fields = [f for name, f in src.fields.items() if name.startswith("tokenizer.")]
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].contents())
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_name(f"synthetic {shape_name} {n_layers} layers {type_name} (random weights)")
    w.add_block_count(n_layers)
    w.add_context_length(shape.n_ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.n_embd // shape.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(int(qtype) if qtype != gguf.GGMLQuantizationType.F32 else 0)
    for f in tok_fields:
        copy_field(w, f)
    specs = _tensors(shape, n_vocab, n_layers)
    for name, shp, is_matrix in specs:
        t = qtype if is_matrix else gguf.GGMLQuantizationType.F32
        n_bytes = int(np.prod(shp)) * gguf.GGML_QUANT_SIZES[t][1] // gguf.GGML_QUANT_SIZES[t][0]
        w.add_tensor_info(name, shp, np.dtype(np.float32), n_bytes, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for k, (name, shp, is_matrix) in enumerate(tqdm(specs, desc="generating", disable=not progress)):
        w.write_tensor_data(_weight(seed * 100003 + k, shp, is_matrix, qtype))
    w.close()
