"""Run calibration windows through a GGUF model one decoder layer at a time and collect statistics.

Layer by layer (as Wanda and SparseGPT do): the inputs of layer 0 for every window are captured
once, then each layer is loaded from the GGUF, run over all windows with the caller's collectors'
hooks on (calib/stats.py), handed with what they collected to the caller, and unloaded. Memory is one layer, the embeddings
and the hidden states of the calibration windows, whatever the model's depth.
The statistics are those of the dense model (every layer sees dense inputs), as in CHESS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ggufsparse.models.torch_model import GGUFTorchModel


class _Recorder(torch.nn.Module):
    """Stands in for a decoder layer: records what the model passes it and changes nothing."""

    def __init__(self, index: int, kwargs: dict, inputs: list | None):
        super().__init__()
        self.index, self.kwargs, self.inputs = index, kwargs, inputs

    def forward(self, hidden_states, *args, **kwargs):
        if args:
            raise RuntimeError("decoder layer called with positional arguments; this transformers "
                               "version is not supported")
        self.kwargs.setdefault(self.index, kwargs)
        if self.inputs is not None:
            self.inputs.append(hidden_states.detach().clone())
        return hidden_states


def _layer_inputs(tm: GGUFTorchModel, windows: np.ndarray) -> tuple[list[torch.Tensor], dict[int, dict]]:
    """Hidden states entering layer 0 (one per window) and the keyword arguments of every layer.

    Every window has the same length and no padding, so position embeddings and masks are the
    same for all windows; those of the first window are kept.
    """
    layers = tm.model.model.layers
    originals = list(layers)
    kwargs: dict[int, dict] = {}
    inputs: list[torch.Tensor] = []
    for i in range(len(layers)):
        layers[i] = _Recorder(i, kwargs, inputs if i == 0 else None)
    try:
        with torch.inference_mode():
            for row in windows:
                tm.model.model(input_ids=torch.from_numpy(row[None, :]), use_cache=False)
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer
    return inputs, kwargs


@dataclass
class Progress:
    """A callback per finished (layer, window) step; total = n_layers * n_windows."""

    advance: Callable[[int], None] = lambda n: None


def through_layer(layer, hidden: list[torch.Tensor], kwargs: dict, progress: Progress) -> None:
    """Every window's hidden state replaced by the layer's output for it."""
    with torch.inference_mode():
        for w in range(len(hidden)):
            out = layer(hidden[w], **kwargs)
            hidden[w] = out[0] if isinstance(out, tuple) else out
            progress.advance(1)


def each_layer(tm: GGUFTorchModel, windows: np.ndarray):
    """(i, layer, hidden states entering it, its keyword arguments) for each decoder layer, loaded
    for the caller's step and unloaded after it."""
    tm.load_globals(head=False)
    hidden, kwargs = _layer_inputs(tm, windows)
    for i in range(tm.n_layers):
        tm.load_layer(i)
        yield i, tm.layers[i], hidden, kwargs[i]
        tm.unload_layer(i)


class Collector(Protocol):
    """Statistics of one layer's pass: hooks(layer, hidden states entering it, its keyword arguments)
    is entered before the windows go through the layer and starts a fresh accumulator; result()
    hands it over afterwards."""

    def hooks(self, layer, hidden: list[torch.Tensor], kwargs: dict) -> AbstractContextManager: ...

    def result(self) -> Any: ...


def run_layers(tm: GGUFTorchModel, windows: np.ndarray, collectors: Mapping[str, Collector],
               on_layer: Callable[[int, dict[str, Any]], None], progress: Progress | None = None) -> None:
    """Calls on_layer(i, {name: collector.result()}) for each decoder layer after its calibration
    pass with every collector's hooks on (the layer still loaded)."""
    progress = progress or Progress()
    for i, layer, hidden, kwargs in each_layer(tm, windows):
        with ExitStack() as stack:
            for c in collectors.values():
                stack.enter_context(c.hooks(layer, hidden, kwargs))
            through_layer(layer, hidden, kwargs, progress)
        on_layer(i, {name: c.result() for name, c in collectors.items()})


def prune_layers(tm: GGUFTorchModel, windows: np.ndarray,
                 prune_layer: Callable[[int, torch.nn.Module, Callable[[], None]], None],
                 progress: Progress | None = None) -> None:
    """One-shot pruning layer by layer, as Wanda's and SparseGPT's code do: prune_layer(i, layer,
    forward) may run `forward()` (every window through the layer, for its hooks), then changes the
    layer's weights; the windows then go through the pruned layer, so each layer is calibrated on
    the outputs of the already pruned ones. Progress: 2 * n_layers * n_windows steps."""
    progress = progress or Progress()
    for i, layer, hidden, kwargs in each_layer(tm, windows):

        def forward(layer=layer, hidden=hidden, kwargs=kwargs) -> None:
            with torch.inference_mode():
                for h in hidden:
                    layer(h, **kwargs)
                    progress.advance(1)

        prune_layer(i, layer, forward)
        through_layer(layer, hidden, kwargs, progress)
