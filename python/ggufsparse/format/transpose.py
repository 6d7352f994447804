"""Transposed copies of weight matrices, for the runtime's input-sparse products.

Q4_0, Q4_1, Q8_0 weights with a multiple of 32 outputs, and Q4_K, Q5_K, Q6_K weights with a
multiple of 64 outputs whose rows are whole 256-value super-blocks, are packed (docs/format.md,
"Packed transposed weights"): the original quantization blocks rearranged so that each input
channel's values are contiguous, an exact copy the runtime multiplies in integers. Other K-quants
(Q2_K, Q3_K, rows of e.g. 576 or 640, or e.g. 96 outputs) whose fallback type (below) is one of
the first three are requantised to it along their original rows and packed.
Other weights of ggml shape {n_in, n_out} (a row per output) become W_t of shape {n_out, n_in}:
one row per input channel, so an inactive input channel is one skipped row. Such a copy keeps the
source's type when its block fits the new row length; otherwise the nearest type whose 32-wide
block fits and that is at least as precise (K-quants need rows that are multiples of 256, which
n_embd often is not: 576 for SmolLM2, 640 for Gemma-3-270M).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quant_shape_from_byte_shape

from ggufsparse.format import ggml_quant
from ggufsparse.format.gguf_io import dequantize_rows

T = GGMLQuantizationType

# type to use when the source's block does not divide the transposed row
# (Q5_0, Q5_1: the types llama-quantize's K mixes fall back to where 256 does not divide a row;
# requantised along their own rows to Q8_0, each value moves by at most 1/16 of a Q5 step, where
# a Q5 copy requantised along the transposed rows would move by up to a whole step)
_FALLBACK = {
    T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q4_1, T.Q5_K: T.Q8_0, T.Q6_K: T.Q8_0,
    T.Q5_0: T.Q8_0, T.Q5_1: T.Q8_0,
}
_FLOAT = (T.F32, T.F16, T.BF16)


def transposed_type(source, n_per_row: int) -> GGMLQuantizationType:
    """The type of the transposed copy of a `source`-typed weight whose new rows hold n_per_row."""
    source = T(source)
    if source in _FLOAT:
        return source
    block = GGML_QUANT_SIZES[source][0]
    if n_per_row % block == 0 and not ggml_quant.requires_imatrix(source):
        return source
    fallback = _FALLBACK.get(source, T.Q8_0)
    if n_per_row % GGML_QUANT_SIZES[fallback][0] == 0:
        return fallback
    return T.F16


# packable types and the inputs of one packed column (one block)
PACKABLE = {T.Q4_0: 32, T.Q4_1: 32, T.Q8_0: 32, T.Q4_K: 256, T.Q5_K: 256, T.Q6_K: 256}
# the multiple of outputs each packable type needs (the K-quants' quant rows hold spans of 64)
PACKED_OUTPUTS = {T.Q4_0: 32, T.Q4_1: 32, T.Q8_0: 32, T.Q4_K: 64, T.Q5_K: 64, T.Q6_K: 64}


def packed_type(source, n_in: int, n_out: int) -> GGMLQuantizationType | None:
    """The type of a packed transposed copy of a `source`-typed weight: its own type if packable,
    else its fallback (requantised along its original rows), or None for a plain copy."""
    source = T(source)
    for qtype in (source, _FALLBACK.get(source)):  # the fallback is None for float types
        if qtype in PACKABLE and n_in % PACKABLE[qtype] == 0 and n_out % PACKED_OUTPUTS[qtype] == 0:
            return qtype
    return None


def transposed(data: np.ndarray, source, target=None) -> tuple[np.ndarray, GGMLQuantizationType]:
    """(data of the transposed copy in gguf-py's numpy layout, its type: I8 when packed).

    `data` is the reader's array for the source tensor (numpy order: n_out rows). A `target`
    type asks for a plain requantised copy even where a packed one is possible.
    """
    source = T(source)
    # quantized (and bf16) data come as raw bytes, float data as elements
    n_out, n_in = quant_shape_from_byte_shape(data.shape, source) if data.dtype == np.uint8 else data.shape
    packed = packed_type(source, n_in, n_out) if target is None else None
    if packed is not None:
        raw = data if packed == source else ggml_quant.quantize(dequantize_rows(data, source).astype(np.float32), packed)
        return ggml_quant.pack_transposed(raw, packed, n_in, n_out), T.I8
    dense = dequantize_rows(data, source)  # (n_out, n_in) float32 or the float type itself
    target = T(target) if target is not None else transposed_type(source, n_out)
    flipped = np.ascontiguousarray(dense.T)  # (n_in, n_out)
    if target == T.F32:
        return flipped.astype(np.float32), target
    if target == T.F16:
        return flipped.astype(np.float16), target
    if target == source == T.BF16:
        # exact: move the raw 16-bit words, no float round trip
        words = np.asarray(data).view(np.uint16).reshape(n_out, n_in)
        return np.ascontiguousarray(words.T).view(np.uint8), target
    return ggml_quant.quantize(flipped.astype(np.float32), target), target
