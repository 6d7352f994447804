"""N:M pruning of a GGUF model's projections (magnitude, Wanda, E-Sparse), layer by layer.

Masks are chosen on the GGUF tensors themselves (dequantized, numpy order: one row per output),
so they apply to the file as written; each mask is also applied to the PyTorch layer (moved to
transformers' layout) before the calibration windows go on to the next layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ggufsparse.format.gguf_io import dequantize_rows
from ggufsparse.methods import nm
from ggufsparse.methods.nm_inputs import PROJECTIONS, InputTaps, module

ALL_PROJECTIONS = tuple(PROJECTIONS)


@dataclass(frozen=True)
class NMPlan:
    pattern: nm.Pattern
    score: str  # magnitude | wanda | esparse
    shuffle: str = "none"  # none | global | global+local
    alpha: float = 4.0
    bins: int = 64
    block: int = 32
    passes: int = 2
    projections: tuple[str, ...] = ALL_PROJECTIONS
    dense_blocks: tuple[int, ...] = ()  # block indices kept dense (negative: from the end)


@dataclass
class PrunedWeight:
    name: str  # GGUF tensor name
    mask: np.ndarray  # bool (n_out, n_in): kept weights
    perm: np.ndarray | None  # shuffled channel c is input channel perm[c]; None: no shuffle
    kept_score: float  # fraction of the total score kept (1.0 = nothing of value pruned)


@dataclass
class PruneResult:
    weights: list[PrunedWeight] = field(default_factory=list)
    dense_blocks: list[int] = field(default_factory=list)


def dense_blocks(plan: NMPlan, n_layers: int) -> set[int]:
    return {b if b >= 0 else n_layers + b for b in plan.dense_blocks} & set(range(n_layers))


def choose(plan: NMPlan, weight: np.ndarray, stats: nm.ChannelStats | None) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(mask, permutation, kept score fraction) for one weight (n_out, n_in)."""
    score = nm.scores(weight, plan.score, stats, plan.alpha)
    perm = None
    if plan.shuffle != "none":
        importance = nm.channel_importance(stats, plan.alpha) if plan.score == "esparse" else score.sum(axis=0)
        perm = nm.global_shuffle(importance, plan.pattern.m)
        if plan.shuffle == "global+local":
            perm = nm.local_block_shuffle(score, perm, plan.pattern, plan.block, plan.passes)
    mask = nm.nm_mask(score, plan.pattern, perm)
    total = float(score.sum(dtype=np.float64))
    return mask, perm, float(score[mask].sum(dtype=np.float64)) / total if total > 0 else 1.0


def prune_by_magnitude(reader, plan: NMPlan, n_layers: int, progress=None) -> PruneResult:
    """Masks for a magnitude plan, read off the file's tensors alone: magnitude scores need no
    activations, so no model is loaded and no text runs (the masks equal those of prune())."""
    assert plan.score == "magnitude"
    by_name = {t.name: t for t in reader.tensors}
    result = PruneResult()
    dense = dense_blocks(plan, n_layers)
    for i in range(n_layers):
        if i in dense:
            result.dense_blocks.append(i)
        else:
            for projection in plan.projections:
                name = f"blk.{i}.{projection}.weight"
                tensor = by_name[name]
                weight = dequantize_rows(tensor.data, tensor.tensor_type).astype(np.float32)
                result.weights.append(PrunedWeight(name, *choose(plan, weight, None)))
        if progress is not None:
            progress(1)
    return result


def prune(tm, windows: np.ndarray, plan: NMPlan, progress=None) -> PruneResult:
    """Masks for every target projection of every block not kept dense; tm's layers are pruned
    in place as it goes (calib_layers.prune_layers)."""
    from ggufsparse.calib import layers as calib_layers

    result = PruneResult()
    needs_stats = plan.score != "magnitude"
    dense = dense_blocks(plan, tm.n_layers)

    def prune_layer(i: int, layer, forward) -> None:
        if i in dense:
            result.dense_blocks.append(i)
            return
        stats = None
        if needs_stats:
            with InputTaps(layer) as taps:
                forward()
            stats = taps.stats(plan.bins)
        for projection in plan.projections:
            name = f"blk.{i}.{projection}.weight"
            tensor = tm.tensor(name)
            weight = dequantize_rows(tensor.data, tensor.tensor_type).astype(np.float32)
            mask, perm, kept = choose(plan, weight, stats[projection] if stats else None)
            result.weights.append(PrunedWeight(name, mask, perm, kept))
            linear = module(layer, projection)
            keep = torch.from_numpy(np.ascontiguousarray(tm.to_module_layout(name, mask.astype(np.float32))))
            with torch.no_grad():
                linear.weight.mul_(keep.to(linear.weight.dtype))

    calib_layers.prune_layers(tm, windows, prune_layer, progress)
    return result
