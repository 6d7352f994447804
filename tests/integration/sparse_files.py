"""Build GGUF files with ggufsparse tensors (good and malformed) from a real model."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor, write_with_extras


def tensor(reader: gguf.GGUFReader, name: str):
    return next(t for t in reader.tensors if t.name == name)


def layer0_extras(model: Path) -> list[ExtraTensor]:
    """Valid sparse tensors for block 0: zero thresholds and a transposed f16 ffn_down."""
    reader = gguf.GGUFReader(model)
    down = tensor(reader, "blk.0.ffn_down.weight")
    down_f32 = gguf.quants.dequantize(down.data, down.tensor_type)  # (n_embd, n_ff)
    n_ff = down_f32.shape[1]
    return [
        ExtraTensor(layout.FFN_GATE_THR.name(0), np.zeros(n_ff, dtype=np.float32),
                    gguf.GGMLQuantizationType.F32),
        ExtraTensor(layout.FFN_DOWN_T.name(0), np.ascontiguousarray(down_f32.T).astype(np.float16),
                    gguf.GGMLQuantizationType.F16),
    ]


def version_key(version: int = layout.FORMAT_VERSION) -> ExtraKey:
    return ExtraKey(layout.Keys.FORMAT_VERSION, version, gguf.GGUFValueType.UINT32)


def write(model: Path, out: Path, tensors: list[ExtraTensor], keys: list[ExtraKey] | None = None) -> Path:
    write_with_extras(model, out, [version_key()] if keys is None else keys, tensors, progress=False)
    return out


SMALL_CALIBRATION = ["--calib-tokens", "1024", "--calib-seq-len", "256", "-q"]


def converted_chess(model: Path, out: Path, sparsity: str = "0.5", attn_sparsity: str = "0.5") -> Path:
    """`ggufsparse convert MODEL --sparsity S --attn-sparsity A` on a little calibration text."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ggufsparse", "convert", str(model), "-o", str(out),
                           "--sparsity", sparsity, "--attn-sparsity", attn_sparsity, *SMALL_CALIBRATION],
                          capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out
