"""The TEAL part of `ggufsparse convert` (methods/teal.py, docs/teal.md): a layer's levels and
thresholds from its calibration pass, and the keys that record them."""

from __future__ import annotations

import gguf

from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey
from ggufsparse.methods import chess, teal
from ggufsparse.pipeline.recipe import Recipe
from ggufsparse.pipeline.results import LayerResult


def layer_result(stats, recipe: Recipe) -> LayerResult:
    """teal: every site at the block's level, spread greedily or uniformly; chess+teal: CHESS's FFN
    channels at --sparsity, TEAL's attention sites at --attn-sparsity (the greedy with the FFN on)."""
    ffn, fixed = None, []
    sites, target = teal.SITES, recipe.sparsity
    if recipe.method == "chess+teal":
        ffn = chess.ffn_thresholds(stats.ffn, recipe.sparsity, recipe.chess.norm)
        sites, target = teal.ATTN_SITES, recipe.attn_sparsity
        fixed = [teal.ChannelThresholds(stats.block.layer, ffn.theta)]
    if recipe.teal.alloc == "greedy":
        levels, _ = teal.greedy_levels(stats, sites, target, recipe.teal.step, fixed)
    else:
        levels = teal.uniform_levels(sites, target)
    thresholds = teal.SiteThresholds(stats)
    inputs = {s: thresholds(s, levels[s]) for s in sites}
    reached = teal.weighted_level({s: inputs[s][1] for s in sites}, teal.params(stats.block.layer, sites))
    return LayerResult(None if ffn is None else ffn.theta, None if ffn is None else ffn.sparsity,
                       inputs=inputs, block_level=reached)


def teal_keys(recipe: Recipe, results: list[LayerResult]) -> list[ExtraKey]:
    """The ggufsparse.teal.* keys (convert writes each site's calibration levels)."""
    V = gguf.GGUFValueType
    target = recipe.attn_sparsity if recipe.method == "chess+teal" else recipe.sparsity
    return [
        ExtraKey(layout.Keys.TEAL_ALLOCATION, recipe.teal.alloc, V.STRING),
        ExtraKey(layout.Keys.TEAL_SPARSITY, target, V.FLOAT32),
        ExtraKey(layout.Keys.TEAL_BLOCK_SPARSITY, [float(r.block_level) for r in results], V.ARRAY, V.FLOAT32),
    ]
