"""A gradual swap to ReLU (not in the paper, which swaps at step 0): over the first `relu_anneal`
of the run each FFN computes (1 - a) * own(x) + a * relu(x), a rising linearly from 0 to 1, so the
weights adapt a little at a time instead of meeting the whole swap at once (on SmolLM2 the swap
alone takes held-out perplexity from 30.6 to 5738). From a = 1 on the activation is ReLU exactly.
"""

from __future__ import annotations


def alpha_at(step: int, relu_anneal: float, steps: int) -> float:
    """The share of ReLU in the activation at `step` (0-based; 1 throughout when relu_anneal is 0)."""
    n = round(relu_anneal * steps)
    return 1.0 if n == 0 else min(1.0, step / n)


def blend_module(own):
    """A torch module mixing `own` (the model's activation module) with ReLU; set `.alpha`. At
    alpha 1 it is ReLU exactly, which is how the paper's swap at step 0 runs too."""
    import torch

    class ReLUBlend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.own = own
            self.alpha = 0.0

        def forward(self, x):
            relu = torch.relu(x)
            if self.alpha >= 1.0:
                return relu
            return torch.lerp(self.own(x), relu, self.alpha)

        def extra_repr(self) -> str:
            return f"alpha={self.alpha}"

    return ReLUBlend()


def install(layers) -> list:
    """Every gated FFN of `layers` computes the blend (of its own activation, however often this is
    called); returns the blend modules, at alpha 0."""
    blends = []
    for layer in layers:
        own = layer.mlp.act_fn
        own = getattr(own, "own", own)
        layer.mlp.act_fn = blend_module(own)
        blends.append(layer.mlp.act_fn)
    return blends


def set_alpha(blends: list, alpha: float) -> None:
    for b in blends:
        b.alpha = alpha
