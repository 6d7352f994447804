"""Streaming calibration statistics: fixed-memory histograms and running sums, filled by hooks.

Nothing here stores activations: memory depends on the layer's width, never on how many
calibration tokens pass through.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

# Histogram range and resolution for |activation|: 10 decades at 128 bins a decade, so a bin
# is 1.8% wide; below LO (exact zeros included) and above HI have a bin each.
LO = 1e-6
HI = 1e4
BINS_PER_DECADE = 128
N_LOG_BINS = 10 * BINS_PER_DECADE
N_BINS = N_LOG_BINS + 2


def bin_edges() -> np.ndarray:
    """Lower edges of the log bins, and HI: N_LOG_BINS + 1 values."""
    return LO * 10.0 ** (np.arange(N_LOG_BINS + 1) / BINS_PER_DECADE)


class LogHistograms:
    """One histogram of |v| per row (channel); `rows=1` for a tensor-wide histogram."""

    def __init__(self, rows: int):
        self.rows = rows
        self.counts = torch.zeros(rows * N_BINS, dtype=torch.int64)

    def add(self, values: torch.Tensor) -> None:
        """values: (..., rows), or any shape when rows == 1."""
        v = values.detach().reshape(-1, self.rows).abs().float()
        pos = torch.log10(v.clamp_min(LO) / LO) * BINS_PER_DECADE
        idx = (pos.floor().long() + 1).clamp_(1, N_LOG_BINS + 1)
        idx = torch.where(v < LO, torch.zeros_like(idx), idx)
        idx += torch.arange(self.rows, dtype=torch.int64) * N_BINS
        self.counts += torch.bincount(idx.reshape(-1), minlength=self.rows * N_BINS)

    def table(self) -> np.ndarray:
        return self.counts.reshape(self.rows, N_BINS).numpy()


class CDF:
    """Per row, the fraction of values with |v| <= threshold (log-linear inside a bin)."""

    def __init__(self, table: np.ndarray):
        self.table = table
        self.total = np.maximum(table.sum(axis=1), 1)
        # below[:, j] = counts in bins < j
        self.below = np.concatenate([np.zeros((table.shape[0], 1)), np.cumsum(table, axis=1)], axis=1)

    def __call__(self, thresholds) -> np.ndarray:
        table, below, total = self.table, self.below, self.total
        rows = table.shape[0]
        t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (rows,))
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = np.log10(np.maximum(t, LO) / LO) * BINS_PER_DECADE
        pos = np.where(np.isfinite(pos), pos, N_LOG_BINS + 1)
        j = np.clip(np.floor(pos).astype(np.int64) + 1, 1, N_LOG_BINS + 1)
        frac = np.where(j <= N_LOG_BINS, pos - (j - 1), 1.0)
        r = np.arange(rows)
        counted = below[r, j] + table[r, j] * np.clip(frac, 0.0, 1.0)
        counted = np.where(t < LO, table[:, 0], counted)  # zeros and denormal-small values
        return counted / total


def solve_log(fraction_at, target: float, lo: float = LO * 1e-3, hi: float = HI * 1e3,
              iterations: int = 80) -> float:
    """The x where the increasing function fraction_at(x) reaches target, by bisection on log x."""
    a, b = np.log(lo), np.log(hi)
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        if fraction_at(np.exp(mid)) < target:
            a = mid
        else:
            b = mid
    return float(np.exp(b))


@dataclass
class FFNStats:
    """Per FFN channel: histogram of |act(gate)|, and sums of up^2 and |up| (CHESS's m_i)."""

    n_ff: int
    gate_hist: LogHistograms = field(init=False)
    up_sq_sum: torch.Tensor = field(init=False)
    up_abs_sum: torch.Tensor = field(init=False)
    tokens: int = 0

    def __post_init__(self):
        self.gate_hist = LogHistograms(self.n_ff)
        self.up_sq_sum = torch.zeros(self.n_ff, dtype=torch.float64)
        self.up_abs_sum = torch.zeros(self.n_ff, dtype=torch.float64)

    def add_gate(self, a_gate: torch.Tensor) -> None:
        self.gate_hist.add(a_gate)

    def add_up(self, a_up: torch.Tensor) -> None:
        flat = a_up.detach().reshape(-1, self.n_ff).double()
        self.up_sq_sum += (flat * flat).sum(dim=0)
        self.up_abs_sum += flat.abs().sum(dim=0)
        self.tokens += flat.shape[0]


@dataclass
class BlockInputs:
    """The loaded layer and the hidden states entering it for some calibration windows, for
    methods that run the block again (TEAL's greedy allocation)."""

    layer: object
    inputs: list  # [torch.Tensor (1, seq, n_embd)]
    kwargs: dict


@dataclass
class FFNInputs:
    """The layer's FFN module and its inputs on the calibration windows, for a threshold that
    depends on the channel thresholds (methods/down_cut.py)."""

    mlp: object
    inputs: list  # [torch.Tensor (tokens, n_embd)]


@dataclass
class LayerStats:
    """What a method reads of one layer's calibration pass: the fields are the names of the
    collectors it was given (layer_collectors(), plus e.g. methods/teal.py's collectors())."""

    ffn: FFNStats
    q_input: LogHistograms  # |x| at attn_q's input (also attn_k's and attn_v's), tensor-wide
    o_input: LogHistograms  # |x| at attn_output's input, tensor-wide
    ffn_input: LogHistograms | None = None  # |x| at ffn_gate's and ffn_up's input (TEAL only)
    down_input: LogHistograms | None = None  # |h| at ffn_down's input (TEAL only)
    block: BlockInputs | None = None  # with a KeepBlock collector
    ffn_inputs: FFNInputs | None = None  # with a KeepFFNInputs collector


# Collectors: each, for one decoder layer's calibration pass, puts forward hooks on the layer that
# feed a fresh accumulator (`hooks(layer, hidden, kwargs)`, a context manager entered before the
# windows go through the layer) and hands it over afterwards (`result()`).


@contextmanager
def _hooked(handles: list):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class FFNChannels:
    """FFNStats of the layer's FFN: |act(gate)| per channel and up's sums."""

    def hooks(self, layer, hidden: list, kwargs: dict):
        mlp = layer.mlp
        self.stats = s = FFNStats(mlp.up_proj.out_features)
        return _hooked([mlp.act_fn.register_forward_hook(lambda _m, _i, out: s.add_gate(out)),
                        mlp.up_proj.register_forward_hook(lambda _m, _i, out: s.add_up(out))])

    def result(self) -> FFNStats:
        return self.stats


class InputHistogram:
    """A tensor-wide histogram of |x| at the input of the layer's submodule `path` (e.g. self_attn.q_proj)."""

    def __init__(self, path: str):
        self.path = path

    def hooks(self, layer, hidden: list, kwargs: dict):
        self.hist = h = LogHistograms(1)
        return _hooked([layer.get_submodule(self.path).register_forward_pre_hook(lambda _m, args: h.add(args[0]))])

    def result(self) -> LogHistograms:
        return self.hist


class KeepBlock:
    """The layer and the dense hidden states entering it for its first `windows` windows."""

    def __init__(self, windows: int):
        self.windows = windows

    def hooks(self, layer, hidden: list, kwargs: dict):
        self.block = BlockInputs(layer, [h.clone() for h in hidden[: self.windows]], kwargs)
        return nullcontext()

    def result(self) -> BlockInputs:
        return self.block


class KeepFFNInputs:
    """The layer's FFN module and its inputs on every window."""

    def hooks(self, layer, hidden: list, kwargs: dict):
        self.kept = kept = FFNInputs(layer.mlp, [])
        return _hooked([layer.mlp.register_forward_pre_hook(
            lambda _m, args: kept.inputs.append(args[0].detach().reshape(-1, args[0].shape[-1]).clone()))])

    def result(self) -> FFNInputs:
        return self.kept


def layer_collectors() -> dict:
    """The collectors of LayerStats' required fields: the FFN's channels and the attention inputs."""
    return {"ffn": FFNChannels(), "q_input": InputHistogram("self_attn.q_proj"),
            "o_input": InputHistogram("self_attn.o_proj")}
