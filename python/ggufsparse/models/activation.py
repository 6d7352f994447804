"""The FFN activation a sparsity fine-tune (ProSparse) gives a model: ReLU or FATReLU.

A file that carries `ggufsparse.activation` computes act(gate) with it instead of the
architecture's own (SiLU, GELU); the patched runtime does the same (patches/0005).
"""

from __future__ import annotations

from dataclasses import dataclass

from ggufsparse.errors import UserError
from ggufsparse.format import layout


@dataclass(frozen=True)
class Activation:
    kind: str  # relu | fatrelu
    threshold: float = 0.0  # FATReLU keeps x where x > threshold; ReLU is FATReLU at 0

    def __post_init__(self):
        if self.kind not in layout.ACTIVATIONS:
            raise UserError(f"activation '{self.kind}': choose one of {', '.join(layout.ACTIVATIONS)}")
        if not self.threshold >= 0.0 or self.threshold == float("inf"):
            raise UserError(f"activation threshold {self.threshold}: must be a finite number >= 0")
        if self.kind == "relu" and self.threshold != 0.0:
            raise UserError("ReLU has no threshold; use fatrelu")

    @classmethod
    def with_threshold(cls, threshold: float) -> Activation:
        """FATReLU at threshold, or plain ReLU at 0."""
        return cls("fatrelu", threshold) if threshold > 0 else cls("relu")


def module(act: Activation):
    """A torch module computing the activation."""
    import torch

    class FATReLU(torch.nn.Module):
        def __init__(self, threshold: float):
            super().__init__()
            self.threshold = threshold

        def forward(self, x):
            return x * (x > self.threshold).to(x.dtype)

        def extra_repr(self) -> str:
            return f"threshold={self.threshold}"

    return torch.nn.ReLU() if act.kind == "relu" else FATReLU(act.threshold)


def read(reader) -> Activation | None:
    """The file's activation, or None for the architecture's own."""
    field = reader.fields.get(layout.Keys.ACTIVATION)
    if field is None:
        return None
    thr = reader.fields.get(layout.Keys.ACTIVATION_THRESHOLD)
    return Activation(field.contents(), float(thr.contents()) if thr is not None else 0.0)


def install(layers, act: Activation) -> None:
    """Every gated FFN of `layers` (transformers decoder layers) computes act(gate) with `act`."""
    for layer in layers:
        layer.mlp.act_fn = module(act)
