"""The share of a model's projection weights that a run skipped, from the runtime's report.

Each sparse site skips the weights its zeroed inputs multiply: the FFN channels of CHESS/CATS skip
a row of ffn_up and a column of ffn_down each (ffn_gate stays dense, except the rows a predictor
leaves out: the site ffn_gate); a thresholded projection
input skips that input's column of the projection. The denominator is every block's seven
projections (q, k, v, output, gate, up, down), so methods that sparsify different projections
compare at equal weights read. Where a layer has both CHESS's channels and a cut on ffn_down's input
(`--down-sparsity`), the cut's fraction counts every zero down input (the gate's included), so
there the channels count for ffn_up only.
"""

from __future__ import annotations

from pathlib import Path

from ggufsparse.format import layout
from ggufsparse.format.gguf_io import open_reader

PROJECTIONS = layout.PROJECTIONS
# runtime report site -> the projections whose weights one skipped input saves
SITE_WEIGHTS = {s.name: s.saves for s in layout.STATS}


def parameter_sparsity(model: Path, report: dict | None) -> float:
    """Skipped weights / all projection weights, with each layer's skipped fraction per site."""
    sizes = {t.name: int(t.n_elements) for t in open_reader(model).tensors}
    total = sum(n for name, n in sizes.items()
                if name.startswith("blk.") and name.endswith(".weight") and name.split(".")[2] in PROJECTIONS)
    report = report or {}
    down_cut = report.get("ffn_down_in", {}).get("layers", [])
    skipped = 0.0
    for site, counts in report.items():
        for i, fraction in enumerate(counts["layers"]):
            if fraction is None:
                continue
            weights = SITE_WEIGHTS[site]
            if site == "ffn" and i < len(down_cut) and down_cut[i] is not None:
                weights = ("ffn_up",)
            skipped += fraction * sum(sizes.get(f"blk.{i}.{w}.weight", 0) for w in weights)
    return skipped / total if total else 0.0
