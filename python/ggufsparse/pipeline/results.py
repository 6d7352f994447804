"""What a conversion returns: per-layer thresholds, the written file's figures, the allocation's
report. Apart from the dispatcher, so that the per-method conversions and the CLI share them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ggufsparse.format import layout

if TYPE_CHECKING:  # annotations only: importing them loads torch, which a result never needs
    from ggufsparse.methods.nm_prune import PruneResult
    from ggufsparse.methods.predictor import LayerPredictor


@dataclass
class LayerResult:
    ffn_theta: np.ndarray | None  # None: no CHESS/CATS FFN channel thresholds (teal)
    ffn_sparsity: float | None
    q_threshold: float | None = None
    q_sparsity: float | None = None
    o_threshold: float | None = None
    o_sparsity: float | None = None
    # TEAL: site (layout.INPUT_SITES) -> (threshold, fraction of its calibration inputs at or below)
    inputs: dict[str, tuple[float, float]] = field(default_factory=dict)
    block_level: float | None = None  # TEAL: parameter-weighted level of the layer's sparse inputs


@dataclass
class ConvertResult:
    output: Path
    layers: list[LayerResult] = field(default_factory=list)
    calib_tokens: int = 0
    extra_bytes: int = 0
    original_bytes: int = 0
    allocation: AllocationReport | None = None  # with --allocate


@dataclass
class AllocationReport:
    ffn_levels: list[float]  # per layer, the levels written (the uniform ones when those were kept)
    attn_q_levels: list[float] | None
    attn_out_levels: list[float] | None
    budget: float  # fraction of the sparse sites' weights skipped, as the plain method's levels
    first_window: int  # sensitivity text: calibration-file windows [first_window, first_window + windows)
    windows: int
    predicted_kl: tuple[float, float]  # (uniform, allocated), from the sensitivity table
    measured_kl: tuple[float, float]  # (uniform, allocated), sparse forward on the same windows
    used: str  # "allocated", "split", or "uniform" when neither lowered the measured KL
    seconds: float
    split_levels: list[float]  # the FFN splits tried (channel levels), and their measured KL
    split_kl: list[float]


@dataclass
class NMConvertResult:
    output: Path
    pruned: PruneResult
    calib_tokens: int
    original_bytes: int
    written_bytes: int


@dataclass
class PredictorResult:
    output: Path
    kind: str  # trained or random
    rank: int
    layers: list[LayerPredictor] = field(default_factory=list)
    calib_tokens: int = 0

    def summary(self) -> dict:
        def mean(values):
            values = [v for v in values if not np.isnan(v)]
            return float(np.mean(values)) if values else None

        return {
            "output": str(self.output), "kind": self.kind, "rank": self.rank, "calibration_tokens": self.calib_tokens,
            "recall": mean([p.recall for p in self.layers]),
            "predicted": mean([p.predicted for p in self.layers]),
            "active": mean([p.active for p in self.layers]),
            "layers": [{"recall": p.recall, "predicted": p.predicted, "active": p.active} for p in self.layers],
        }


def summary(result: ConvertResult | NMConvertResult, recipe) -> tuple[dict, str]:
    """(the figures of a conversion, as JSON, and one line describing them) for `ggufsparse convert`."""
    if isinstance(result, NMConvertResult):
        return _nm_summary(result, recipe)
    summary = {"output": str(result.output), "recipe": json.loads(recipe.to_json()),
               "calibration_tokens": result.calib_tokens, "extra_bytes": result.extra_bytes,
               "original_bytes": result.original_bytes}
    parts = []
    if result.layers and result.layers[0].ffn_sparsity is not None:
        sp = [r.ffn_sparsity for r in result.layers]
        summary["ffn_sparsity_mean"] = sum(sp) / len(sp)
        parts.append(f"FFN sparsity on calibration text {summary['ffn_sparsity_mean']:.3f}")
        if not recipe.is_teal and layout.FFN_DOWN_IN_SITE in result.layers[0].inputs:
            cut = [r.inputs[layout.FFN_DOWN_IN_SITE][1] for r in result.layers]
            summary["ffn_down_in_sparsity_mean"] = sum(cut) / len(cut)
            parts.append(f"down's input {summary['ffn_down_in_sparsity_mean']:.3f}")
    if result.layers and result.layers[0].block_level is not None:
        levels = [r.block_level for r in result.layers]
        summary["teal_block_sparsity_mean"] = sum(levels) / len(levels)
        parts.append(f"TEAL ({recipe.teal.alloc}) parameter-weighted level {summary['teal_block_sparsity_mean']:.3f}")
    if recipe.method == "prosparse":
        parts.append("the checkpoint's ReLU-family activation, sparse FFN tensors")
    what = f"{recipe.method}, {', '.join(parts)}, +{100 * result.extra_bytes / result.original_bytes:.1f}% size"

    if result.allocation is not None:
        a = result.allocation
        summary["allocation"] = dataclasses.asdict(a)
        best = min(range(len(a.split_kl)), key=a.split_kl.__getitem__, default=None)
        split = "" if best is None else \
            f", best FFN split {a.split_kl[best]:.4f} (channels {a.split_levels[best]:.3f})"
        what += (f"; allocation: KL on held-out calibration text {a.measured_kl[0]:.4f} uniform, "
                 f"{a.measured_kl[1]:.4f} allocated{split} (kept: {a.used}), {a.seconds:.0f} s")
    return summary, what


def _nm_summary(result: NMConvertResult, recipe) -> tuple[dict, str]:
    kept = [w.kept_score for w in result.pruned.weights]
    summary = {"output": str(result.output), "recipe": json.loads(recipe.to_json()),
               "calibration_tokens": result.calib_tokens, "pruned_tensors": len(kept),
               "dense_blocks": sorted(result.pruned.dense_blocks),
               "kept_score_mean": sum(kept) / max(len(kept), 1),
               "original_bytes": result.original_bytes, "file_bytes": result.written_bytes}
    return summary, (f"{recipe.method} {recipe.nm.pattern} (shuffle {recipe.shuffle}), "
                     f"{len(kept)} tensors pruned, {100 * summary['kept_score_mean']:.1f}% of the score kept, "
                     f"storage {recipe.storage}: file {100 * result.written_bytes / result.original_bytes:.1f}% "
                     "of the original")
