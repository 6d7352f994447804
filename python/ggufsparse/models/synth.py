"""Synthetic GGUF models: real layer shapes, random weights, for measurements at sizes no model
here has. Every result from one must be labelled synthetic.

The tokenizer is copied from a real GGUF (default: the default model) so that the file loads
and tokenizes text like any model. Tensors are generated and written one at a time, so
memory stays at one tensor whatever the model's size.
"""

from __future__ import annotations

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
}

FLOAT_TYPES = ("f32", "f16", "bf16")


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
                    tokenizer_from: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    import gguf
    from tqdm import tqdm

    from ggufsparse.format.gguf_io import copy_field, open_reader, temp_beside
    from ggufsparse.models.known import resolve

    if shape_name not in SHAPES:
        raise UserError(f"--shape {shape_name}: unknown; choose one of {', '.join(SHAPES)}")
    try:
        qtype = gguf.GGMLQuantizationType[type_name.upper()]
    except KeyError:
        raise UserError(f"--type {type_name}: not a ggml type (e.g. f16, q8_0, q4_0, q4_k)") from None
    shape = SHAPES[shape_name]
    n_layers = n_layers or shape.n_layers
    src = open_reader(tokenizer_from or resolve("default"))
    tok_fields = [f for name, f in src.fields.items() if name.startswith("tokenizer.")]
    n_vocab = len(src.fields["tokenizer.ggml.tokens"].contents())
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape.n_embd % block or shape.n_ff % block:
        raise UserError(f"--type {type_name}: block of {block} does not divide the rows of {shape_name}")

    tmp = temp_beside(out)
    try:
        w = gguf.GGUFWriter(tmp, arch="llama")
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
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
