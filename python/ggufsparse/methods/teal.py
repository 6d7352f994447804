"""TEAL: magnitude thresholds on the inputs of every projection, allocated greedily per block
(Liu et al., arXiv 2408.14690, sections 3-4; github FasterDecoding/TEAL, teal/greedyopt.py).

Sites, by the runtime's names: attn_q, attn_k, attn_v (all three read the attention norm's
output, each with its own threshold), attn_output, ffn_gate_in, ffn_up_in (both read the FFN norm's
output) and ffn_down_in. An entry x_j of a site's input is kept iff |x_j| > t_site, with
t_site(level) = the level-quantile of |x| over the calibration tokens and channels (a tensor-wide
histogram; the paper's F^-1(0.5 + p/2) of a zero-mean distribution is the same quantile of |x|).

Allocation within a block (the paper's greedy, `greedy_levels`): every site starts at level 0.
At each step, every site in turn is raised by its step and the block is run on calibration inputs;
the raise that adds the least block-output error per weight it skips is kept. Steps repeat until
the parameter-weighted mean level reaches the target. Error: the mean over tokens of
||y - y_dense||_2 at the block's output. A site's step skips `step` x (the block's weights) of its
weights, capped at MAX_STEP of its level, so small projections (k, v) move in sensible steps; with
equal steps the per-weight rule is the paper's least-error rule. `uniform_levels`: every site at
the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing_extensions import Self

from ggufsparse.calib.stats import InputHistogram, KeepBlock, LayerStats
from ggufsparse.format import layout
from ggufsparse.methods import attention

SITES = tuple(layout.INPUT_SITES)  # the input sites, in the order of format/layout.py
ATTN_SITES = SITES[:4]

# the transformers module whose input each site thresholds
MODULES = {
    "attn_q": ("self_attn", "q_proj"), "attn_k": ("self_attn", "k_proj"), "attn_v": ("self_attn", "v_proj"),
    "attn_output": ("self_attn", "o_proj"), "ffn_gate_in": ("mlp", "gate_proj"), "ffn_up_in": ("mlp", "up_proj"),
    "ffn_down_in": ("mlp", "down_proj"),
}

MAX_LEVEL = 0.95
MAX_STEP = 0.1


def collectors(windows: int) -> dict:
    """What TEAL reads beside calib.stats.layer_collectors(): the FFN projections' input histograms,
    and the block with its inputs on `windows` windows for the greedy allocation."""
    return {"ffn_input": InputHistogram("mlp.gate_proj"), "down_input": InputHistogram("mlp.down_proj"),
            "block": KeepBlock(windows)}


def module(layer, site: str):
    parent, child = MODULES[site]
    return getattr(getattr(layer, parent), child)


def histogram(stats: LayerStats, site: str):
    if site in ("attn_q", "attn_k", "attn_v"):
        return stats.q_input
    if site == "attn_output":
        return stats.o_input
    return stats.ffn_input if site in ("ffn_gate_in", "ffn_up_in") else stats.down_input


class SiteThresholds:
    """Thresholds of a layer's sites at any level, from its calibration histograms (cached)."""

    def __init__(self, stats: LayerStats):
        self.stats, self.cache = stats, {}

    def __call__(self, site: str, level: float) -> tuple[float, float]:
        """(threshold, fraction of the site's calibration inputs at or below it)."""
        key = (site, round(level, 6))
        if key not in self.cache:
            self.cache[key] = attention.input_threshold(histogram(self.stats, site), level)
        return self.cache[key]


class InputThresholds:
    """Forward pre-hooks that zero |x| <= t at the inputs of a layer's sites; a context manager."""

    def __init__(self, layer, thresholds: dict[str, float]):
        self.layer, self.thresholds, self.handles = layer, thresholds, []

    def __enter__(self) -> Self:
        for site, t in self.thresholds.items():
            def hook(_m, args, t=t):
                x = args[0]
                return (torch.where(x.abs() > t, x, torch.zeros_like(x)), *args[1:])
            self.handles.append(module(self.layer, site).register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def params(layer, sites) -> dict[str, int]:
    return {s: module(layer, s).weight.numel() for s in sites}


def weighted_level(levels: dict[str, float], weights: dict[str, int]) -> float:
    return sum(levels[s] * weights[s] for s in levels) / sum(weights[s] for s in levels)


def uniform_levels(sites, target: float) -> dict[str, float]:
    return {s: target for s in sites}


@dataclass
class GreedyTrace:
    """The steps the greedy took: (site raised, its new level, block error after the step)."""

    steps: list[tuple[str, float, float]]
    dense_error: float  # error before any step (non-zero when other sites are fixed sparse)


def _block_outputs(block, hooks: list) -> list[torch.Tensor]:
    from contextlib import ExitStack

    outs = []
    with ExitStack() as stack, torch.inference_mode():
        for h in hooks:
            stack.enter_context(h)
        for x in block.inputs:
            out = block.layer(x, **block.kwargs)
            outs.append(out[0] if isinstance(out, tuple) else out)
    return outs


def _error(outs: list[torch.Tensor], target: list[torch.Tensor]) -> float:
    norms = [torch.linalg.vector_norm((o - t).float(), dim=-1).reshape(-1) for o, t in zip(outs, target)]
    return float(torch.cat(norms).mean())


def greedy_levels(stats: LayerStats, sites, target: float, step: float = 0.02,
                  fixed: list | None = None) -> tuple[dict[str, float], GreedyTrace]:
    """Levels per site whose parameter-weighted mean is `target`, chosen greedily on
    stats.block's calibration inputs. `fixed`: hook context managers that stay on throughout
    (chess+teal: CHESS's FFN thresholds); the error is always to the dense block's output."""
    block, fixed = stats.block, list(fixed or [])
    thresholds = SiteThresholds(stats)
    weights = params(block.layer, sites)
    total = sum(weights.values())
    dense = _block_outputs(block, [])

    def error(levels: dict[str, float]) -> float:
        on = {s: thresholds(s, lv)[0] for s, lv in levels.items() if lv > 0}
        return _error(_block_outputs(block, [*fixed, InputThresholds(block.layer, on)]), dense)

    levels = {s: 0.0 for s in sites}
    current = error(levels)
    trace = GreedyTrace([], current)
    while (need := target - weighted_level(levels, weights)) > 1e-6:
        best = None
        for s in sites:
            if levels[s] >= MAX_LEVEL:
                continue
            rise = min(MAX_STEP, step * total / weights[s], need * total / weights[s], MAX_LEVEL - levels[s])
            e = error(levels | {s: levels[s] + rise})
            score = (e - current) / (rise * weights[s])
            if best is None or score < best[0]:
                best = (score, s, levels[s] + rise, e)
        if best is None:
            break  # every site at MAX_LEVEL
        _, s, level, current = best
        levels[s] = level
        trace.steps.append((s, level, current))
    return levels, trace


class ChannelThresholds:
    """A forward hook zeroing FFN channels with |act(gate)_i| <= theta_i (CHESS's FFN, for
    chess+teal's greedy); a context manager."""

    def __init__(self, layer, theta):
        self.act, self.theta, self.handle = layer.mlp.act_fn, torch.from_numpy(theta), None

    def __enter__(self) -> Self:
        def hook(_m, _inputs, out):
            return torch.where(out.abs() > self.theta.to(out.dtype), out, torch.zeros_like(out))
        self.handle = self.act.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()
