"""Activation predictors: skip the FFN gate rows too (PowerInfer's idea, our own code).

A sparse FFN file skips ffn_up's rows and ffn_down's columns of channels whose act(gate) is at or
below its threshold, but it must compute every gate row to know which those are. A predictor
guesses them from the FFN's input x with a small low-rank network,

    logit = pred_b . relu(pred_a . x),    gate row i computed where logit_i > pred_thr_i,

so decode reads only the predicted gate rows. A row predicted off is taken as zero (its channel is
dropped even if it would have been active: the predictor's only error); a row predicted on but
below the threshold is still zeroed by the threshold, exactly as without a predictor.

Trained per layer on the dense model's FFN inputs over calibration text (never evaluation text):
binary cross-entropy against the file's own activity (|act(gate)| > ffn_gate_thr), then each
layer's cut-off is set on held-out calibration windows to keep the requested recall.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.format import layout


@dataclass(frozen=True)
class PredictorRecipe:
    rank: int = 128
    # of active channels, per layer, on the held-out windows; on SmolLM2's ProSparse fine-tune 0.99 cost
    # +14% perplexity and 0.999 +0.7% (docs/predictor.md)
    recall: float = 0.999
    epochs: int = 10
    lr: float = 3e-3  # Adam; 1e-3 left SmolLM2's predictors visibly short of converged after 10 epochs
    calib_tokens: int = 32768
    calib_seq_len: int = 512
    held_out: float = 0.125  # share of the calibration windows kept for the cut-offs
    weight_type: str = "q8_0"  # of pred_a and pred_b
    seed: int = 0

    def check(self) -> None:
        if self.rank < 1:
            raise UserError(f"--rank {self.rank}: must be at least 1")
        if not 0.0 < self.recall <= 1.0:
            raise UserError(f"--recall {self.recall}: must be in (0, 1]")
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs}: must be at least 1")
        if self.calib_tokens < 2 * self.calib_seq_len:
            raise UserError(f"--calib-tokens {self.calib_tokens}: need at least two windows of {self.calib_seq_len}")
        if self.weight_type not in WEIGHT_TYPES:
            raise UserError(f"--pred-type {self.weight_type}: choose one of {', '.join(WEIGHT_TYPES)}")
        if self.weight_type == "q8_0" and self.rank % 32:
            raise UserError(f"--rank {self.rank}: Q8_0 predictors need a multiple of 32")


@dataclass(frozen=True)
class LayerPredictor:
    pred_a: np.ndarray  # (rank, n_embd)
    pred_b: np.ndarray  # (n_ff, rank)
    pred_thr: np.ndarray  # (n_ff,) cut-off on the logit
    recall: float  # held-out share of active channels predicted on
    predicted: float  # held-out share of channels predicted on (gate rows computed)
    active: float  # held-out share of channels truly active


def logits(pred_a: np.ndarray, pred_b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The predictor's logits for inputs x (tokens, n_embd), as the runtime computes them."""
    return np.maximum(x @ pred_a.T, 0.0) @ pred_b.T


def cutoff_for_recall(scores: np.ndarray, active: np.ndarray, recall: float) -> float:
    """The largest cut-off c such that scores > c holds for at least `recall` of the active
    entries (scores - c for every entry: one cut-off per layer)."""
    pos = np.sort(scores[active])
    if pos.size == 0:
        return float(np.inf)
    missed = int(np.floor((1.0 - recall) * pos.size))  # entries allowed at or below c
    if missed == 0:
        return float(np.nextafter(pos[0], -np.inf))
    return float(pos[missed - 1])


def train_layer(x: np.ndarray, active: np.ndarray, n_train: int, recipe: PredictorRecipe,
                seed: int) -> LayerPredictor:
    """Fit one layer's predictor on the first n_train tokens, set its cut-off on the rest."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n_embd, n_ff = x.shape[1], active.shape[1]
    xt = torch.from_numpy(np.ascontiguousarray(x[:n_train], dtype=np.float32))
    yt = torch.from_numpy(active[:n_train].astype(np.float32))
    a = torch.nn.Linear(n_embd, recipe.rank, bias=False)
    b = torch.nn.Linear(recipe.rank, n_ff, bias=True)
    with torch.no_grad():
        a.weight.copy_(torch.randn(a.weight.shape, generator=gen) / n_embd ** 0.5)
        b.weight.copy_(torch.randn(b.weight.shape, generator=gen) / recipe.rank ** 0.5)
        b.bias.zero_()
    params = [a.weight, b.weight, b.bias]
    opt = torch.optim.Adam(params, lr=recipe.lr)
    batch = 256
    for _ in range(recipe.epochs):
        order = torch.randperm(n_train, generator=gen)
        for s in range(0, n_train, batch):
            idx = order[s:s + batch]
            out = b(torch.relu(a(xt[idx])))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    pred_a = a.weight.detach().numpy().astype(np.float32)
    pred_b = b.weight.detach().numpy().astype(np.float32)
    bias = b.bias.detach().numpy().astype(np.float32)
    # the cut-off is taken on the runtime's own arithmetic: logits without the bias, in the
    # stored precision
    pa, pb = _stored(pred_a, recipe.weight_type), _stored(pred_b, recipe.weight_type)
    held_x, held_y = x[n_train:], active[n_train:]
    scores = logits(pa, pb, held_x) + bias
    c = cutoff_for_recall(scores, held_y, recipe.recall)
    on = scores > c
    n_active = max(int(held_y.sum()), 1)
    return LayerPredictor(pred_a, pred_b, (c - bias).astype(np.float32),
                          recall=float((on & held_y).sum() / n_active), predicted=float(on.mean()),
                          active=float(held_y.mean()))


def random_layer(n_embd: int, n_ff: int, recipe: PredictorRecipe, share: float, seed: int) -> LayerPredictor:
    """A predictor with random weights whose cut-offs turn on `share` of the gate rows for
    unit-variance inputs: for speed measurements on synthetic models only (it predicts nothing)."""
    rng = np.random.default_rng(seed)
    pred_a = (rng.standard_normal((recipe.rank, n_embd)) / np.sqrt(n_embd)).astype(np.float32)
    pred_b = (rng.standard_normal((n_ff, recipe.rank)) / np.sqrt(recipe.rank)).astype(np.float32)
    x = rng.standard_normal((512, n_embd)).astype(np.float32)
    scores = logits(_stored(pred_a, recipe.weight_type), _stored(pred_b, recipe.weight_type), x)
    thr = np.quantile(scores, 1.0 - share, axis=0).astype(np.float32)
    return LayerPredictor(pred_a, pred_b, thr, recall=float("nan"), predicted=float((scores > thr).mean()),
                          active=float("nan"))


WEIGHT_TYPES = ("f16", "q8_0", "f32")


def stored(w: np.ndarray, weight_type: str) -> tuple[np.ndarray, object]:
    """(the bytes or values to write, their ggml type) of predictor weights w in weight_type;
    Q8_0 through ggml's own quantizer."""
    import gguf

    T = gguf.GGMLQuantizationType
    if weight_type == "f16":
        return w.astype(np.float16), T.F16
    if weight_type == "q8_0":
        from ggufsparse.format import ggml_quant

        return ggml_quant.quantize(np.ascontiguousarray(w, dtype=np.float32), T.Q8_0), T.Q8_0
    return w.astype(np.float32), T.F32


def _stored(w: np.ndarray, weight_type: str) -> np.ndarray:
    """w as the runtime sees it after storing it in weight_type."""
    import gguf

    data, qtype = stored(w, weight_type)
    return gguf.quants.dequantize(data, qtype).astype(np.float32).reshape(w.shape)


@dataclass
class LayerData:
    x: np.ndarray  # (tokens, n_embd) FFN inputs of the dense model
    active: np.ndarray  # (tokens, n_ff) bool: |act(gate)| > ffn_gate_thr


def collect_layers(path: Path, windows: np.ndarray, thresholds: list[np.ndarray],
                   advance: Callable[[int], None]):
    """(layer index, LayerData) per decoder layer, from one layer-by-layer pass of the windows."""
    import torch

    from ggufsparse.calib import layers as calib_layers
    from ggufsparse.models.torch_model import GGUFTorchModel

    model = GGUFTorchModel(path)
    for i, layer, hidden, kwargs in calib_layers.each_layer(model, windows):
        xs, acts = [], []
        thr = torch.from_numpy(thresholds[i])
        mlp = layer.mlp

        # the FFN's input, and act(gate) as the layer computes it (not a second gate product)
        def take_input(_m, args, xs=xs):
            xs.append(args[0].detach().reshape(-1, args[0].shape[-1]).numpy().copy())

        def take_activity(_m, _args, out, acts=acts, thr=thr):
            acts.append((out.detach().reshape(-1, out.shape[-1]).abs() > thr).numpy())

        handles = [mlp.register_forward_pre_hook(take_input), mlp.act_fn.register_forward_hook(take_activity)]
        try:
            calib_layers.through_layer(layer, hidden, kwargs, calib_layers.Progress(advance))
        finally:
            for h in handles:
                h.remove()
        yield i, LayerData(np.concatenate(xs), np.concatenate(acts))


def gate_thresholds(reader) -> list[np.ndarray]:
    """Every layer's ffn_gate_thr, or a one-line error if the file has no FFN thresholds."""
    by_name = {t.name: t for t in reader.tensors}
    arch = reader.fields["general.architecture"].contents()
    n_layers = int(reader.fields[f"{arch}.block_count"].contents())
    out = []
    for i in range(n_layers):
        t = by_name.get(layout.FFN_GATE_THR.name(i))
        if t is None:
            raise UserError(f"{reader.data.filename}: layer {i} has no {layout.FFN_GATE_THR.stem}; a predictor "
                            "needs a file converted with an FFN method (chess, cats or a ProSparse fine-tune)")
        out.append(np.asarray(t.data, dtype=np.float32).reshape(-1))
    return out
