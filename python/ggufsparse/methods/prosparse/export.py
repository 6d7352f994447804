"""A fine-tuned ReLU/FATReLU model as a GGUF: the source file with its trained tensors written
back in their own types (through ggml's quantizers), `ggufsparse.activation`, and for each layer
the sparse FFN's tensors (docs/format.md): ffn_gate_thr at the activation's threshold for every
channel (the runtime's sparse_act then computes exactly ReLU / FATReLU) and ffn_down_t."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ggufsparse import __version__
from ggufsparse.errors import UserError
from ggufsparse.format import ggml_quant, layout
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor, write_with_extras
from ggufsparse.format.transpose import transposed
from ggufsparse.models.activation import Activation


def encode(values: np.ndarray, qtype) -> np.ndarray:
    """float32 values (gguf-py numpy layout) in ggml type qtype, as the file stores them."""
    import gguf

    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return values.astype(np.float32)
    if qtype == T.F16:
        return values.astype(np.float16)
    if qtype == T.BF16:
        return gguf.quants.quantize(values, qtype)
    if ggml_quant.requires_imatrix(qtype):
        raise UserError(f"{gguf.GGMLQuantizationType(qtype).name} needs an importance matrix to quantize; "
                        "fine-tune a file of another type")
    return ggml_quant.quantize(values.reshape(-1, values.shape[-1]), qtype)


OUTTYPES = ("auto", "source", "f16", "q8_0")


def output_type(source, outtype: str):
    """The type a trained weight of type `source` is written in.

    auto: the source's own type when it is F32, F16, BF16 or Q8_0, else Q8_0. Requantising a
    fine-tuned model to 4 or 5 bits adds fresh rounding noise to weights it has adapted to, which
    compounds over the layers (docs/prosparse.md); `source` does it anyway."""
    import gguf

    T = gguf.GGMLQuantizationType
    if outtype not in OUTTYPES:
        raise UserError(f"--outtype {outtype}: choose one of {', '.join(OUTTYPES)}")
    if outtype == "source" or (outtype == "auto" and T(source) in (T.F32, T.F16, T.BF16, T.Q8_0)):
        return T(source)
    return T.F16 if outtype == "f16" else T.Q8_0


def trained_tensors(tm, names: set[str], outtype: str = "auto") -> list[ExtraTensor]:
    """The GGUF tensors whose modules' parameters are in `names` (transformers names), re-encoded
    (1-D tensors, the norms, keep their type)."""
    state = tm.model.state_dict()
    out = []
    for t in tm.reader.tensors:
        hf = tm._key_map.get(t.name)
        if hf is None or hf not in names:
            continue
        values = tm.to_gguf_layout(t.name, state[hf].detach().float().cpu().numpy())
        qtype = output_type(t.tensor_type, outtype) if values.ndim == 2 else t.tensor_type
        out.append(ExtraTensor(t.name, encode(values, qtype), qtype))
    return out


def sparse_ffn_tensors(ffn_downs: dict[int, ExtraTensor], n_ff: int, act: Activation) -> list[ExtraTensor]:
    import gguf

    out = []
    for i, down in sorted(ffn_downs.items()):
        out.append(ExtraTensor(layout.FFN_GATE_THR.name(i), np.full(n_ff, act.threshold, np.float32),
                               gguf.GGMLQuantizationType.F32))
        data, qtype = transposed(down.data, down.ggml_type)
        out.append(ExtraTensor(layout.FFN_DOWN_T.name(i), data, qtype))
    return out


def activation_keys(act: Activation, method: str, layer_sparsity: list[float] | None) -> list[ExtraKey]:
    import gguf

    V = gguf.GGUFValueType
    keys = [
        ExtraKey(layout.Keys.FORMAT_VERSION, layout.FORMAT_VERSION, V.UINT32),
        ExtraKey(layout.Keys.TOOL_VERSION, __version__, V.STRING),
        ExtraKey(layout.Keys.METHOD, method, V.STRING),
        ExtraKey(layout.Keys.TARGETS, [layout.TARGET_FFN], V.ARRAY, V.STRING),
        ExtraKey(layout.Keys.ACTIVATION, act.kind, V.STRING),
        ExtraKey(layout.Keys.ACTIVATION_THRESHOLD, float(act.threshold), V.FLOAT32),
    ]
    if layer_sparsity is not None:
        keys.append(ExtraKey(layout.Keys.CALIB_FFN_SPARSITY, [float(s) for s in layer_sparsity], V.ARRAY, V.FLOAT32))
    return keys


def write(tm, out: Path, act: Activation, names: set[str], keys: list[ExtraKey], *, force: bool,
          progress: bool, outtype: str = "auto") -> None:
    """tm's source file with the parameters `names` written back, the activation and sparse FFN."""
    replaced = trained_tensors(tm, names, outtype)
    by_name = {t.name: t for t in replaced}
    downs = {}
    for t in tm.reader.tensors:
        if t.name.endswith(".ffn_down.weight") and t.name.startswith("blk."):
            i = int(t.name.split(".")[1])
            downs[i] = by_name.get(t.name) or ExtraTensor(t.name, t.data, t.tensor_type)
    if not downs:
        raise UserError(f"{tm.path}: no gated FFN (ffn_down) to sparsify")
    n_ff = tm.config.intermediate_size
    write_with_extras(tm.path, out, keys, sparse_ffn_tensors(downs, n_ff, act), force=force, progress=progress,
                      replace=replaced)


def convert_relu_family(source: Path, out: Path, act: Activation, *, force: bool,
                        progress: bool) -> tuple[int, int]:
    """`convert --method prosparse` of a ReLU-family checkpoint (already a GGUF in `source`): its
    weights as they are, the activation and the sparse FFN's tensors. Returns (the bytes added, the
    bytes of the source's tensors)."""
    from ggufsparse.models.torch_model import GGUFTorchModel

    tm = GGUFTorchModel(source)
    write(tm, out, act, set(), activation_keys(act, "prosparse", None), force=force, progress=progress)
    original = sum(int(t.n_bytes) for t in tm.reader.tensors)
    return Path(out).stat().st_size - original, original
