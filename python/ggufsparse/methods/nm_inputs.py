"""The inputs of a decoder layer's seven projections over the calibration windows, for N:M scores.

q, k and v read the same input (the attention norm's output), as do gate and up (the FFN norm's);
so four inputs are recorded: attn_in, attn_output's, ffn_in and ffn_down's. They are kept whole for
one layer at a time (calibration tokens x width floats each): the entropy needs each channel's
range before its histogram.
"""

from __future__ import annotations

import torch
from typing_extensions import Self

from ggufsparse.methods.nm import ChannelStats, channel_entropy

# GGUF projection name -> (transformers module path in a decoder layer, the input it reads)
PROJECTIONS = {
    "attn_q": ("self_attn.q_proj", "attn_in"),
    "attn_k": ("self_attn.k_proj", "attn_in"),
    "attn_v": ("self_attn.v_proj", "attn_in"),
    "attn_output": ("self_attn.o_proj", "attn_output_in"),
    "ffn_gate": ("mlp.gate_proj", "ffn_in"),
    "ffn_up": ("mlp.up_proj", "ffn_in"),
    "ffn_down": ("mlp.down_proj", "ffn_down_in"),
}
# the one projection per input whose pre-hook records it
_RECORDED_AT = {"attn_in": "attn_q", "attn_output_in": "attn_output", "ffn_in": "ffn_gate",
                "ffn_down_in": "ffn_down"}


def module(layer, projection: str) -> torch.nn.Linear:
    obj = layer
    for part in PROJECTIONS[projection][0].split("."):
        obj = getattr(obj, part)
    return obj


class InputTaps:
    """Forward pre-hooks that record the four inputs of one layer; a context manager."""

    def __init__(self, layer):
        self.layer = layer
        self.rows: dict[str, list[torch.Tensor]] = {name: [] for name in _RECORDED_AT}
        self.handles = []

    def __enter__(self) -> Self:
        for name, projection in _RECORDED_AT.items():
            def hook(_m, args, name=name):
                x = args[0].detach()
                self.rows[name].append(x.reshape(-1, x.shape[-1]).float().clone())
            self.handles.append(module(self.layer, projection).register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def stats(self, bins: int) -> dict[str, ChannelStats]:
        """Per projection, the statistics of its input channels."""
        per_input = {}
        for name, rows in self.rows.items():
            x = torch.cat(rows)
            norm = torch.linalg.vector_norm(x.double(), dim=0).numpy()
            per_input[name] = ChannelStats(norm, channel_entropy(x, bins))
        return {p: per_input[inp] for p, (_, inp) in PROJECTIONS.items()}

