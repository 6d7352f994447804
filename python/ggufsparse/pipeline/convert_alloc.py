"""`convert --allocate kl`: per-layer (and per-projection) sparsity levels chosen by end-to-end KL.

Glue only. The plain method's statistics give every layer's thresholds at every level of a grid;
sensitivity.py measures, on held-out calibration text (the windows of the calibration file that
follow the ones the thresholds were calibrated on; never evaluation data), what each level of each
site costs in KL; allocate.py picks the levels at the plain method's parameter budget. Before
writing, the KL of the uniform and the allocated levels is measured on the same held-out windows
with the real sparse forward, and the uniform levels are kept if the allocation does not win.

Beside the per-layer levels it tries splitting each FFN's budget between its two projections: the
channels (rows of ffn_up, columns of ffn_down) at a lower level a, and a cut on ffn_down's input
(methods/down_cut.py) to 2 x level - a, which skips the same weights. Those candidates are
measured the same way and the least KL of all is written.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from ggufsparse.calib import text as calib_text
from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.pipeline.recipe import Recipe
from ggufsparse.pipeline.results import AllocationReport, LayerResult
from ggufsparse.reference import allocate, sensitivity, sparse_forward
from ggufsparse.reference.sparse_forward import BakedThresholds

TOP_LEVEL = 0.95  # highest level the allocation may give a site
SPLIT_STEPS = (0.05, 0.10, 0.15)  # the FFN splits tried: the channels' level lowered by these


def level_grid(recipe: Recipe) -> np.ndarray:
    """Candidate levels: 0 to TOP_LEVEL by alloc_step, plus the requested levels themselves."""
    levels = [np.arange(0.0, TOP_LEVEL + 1e-9, recipe.allocation.step), [recipe.sparsity]]
    if recipe.attn_sparsity is not None:
        levels.append([recipe.attn_sparsity])
    return np.unique(np.round(np.concatenate(levels), 6))


def split_levels(recipe: Recipe) -> list[float]:
    """The channel levels of the FFN splits to try (the cut on down's input at 2 x --sparsity - each)."""
    s = recipe.sparsity
    return [round(s - step, 6) for step in SPLIT_STEPS if s - step >= 0 and 2 * s - (s - step) <= TOP_LEVEL]


def split_recipe(recipe: Recipe, gate_level: float) -> Recipe:
    """The recipe of one split: channels at gate_level, down's input cut to 2 x --sparsity - gate_level."""
    return recipe.override(down_sparsity=round(2 * recipe.sparsity - gate_level, 6))


def heldout_windows(calib_file, tok, recipe: Recipe) -> tuple[np.ndarray, int]:
    """(windows, index of the first): the calibration file's windows after the calibration ones."""
    tokenize, bos = tok
    first = recipe.calib_tokens // recipe.calib_seq_len
    want = first + recipe.allocation.windows
    windows = calib_text.load(calib_file, tokenize, bos, want * recipe.calib_seq_len, recipe.calib_seq_len).windows
    if len(windows) < want:
        raise UserError(f"{calib_file}: --allocate needs {recipe.allocation.windows} windows of held-out text after "
                        f"the {first} calibration windows, the file has {max(len(windows) - first, 0)}; "
                        "use a longer file or fewer --alloc-windows")
    return windows[first:], first


def _baked(name: str, results: list):
    down = layout.FFN_DOWN_IN_SITE
    more = {down: [r.inputs[down][0] for r in results]} if down in results[0].inputs else {}
    return BakedThresholds(name, None, [r.ffn_theta for r in results], [r.q_threshold for r in results],
                           [r.o_threshold for r in results], more)


# per site kind (sensitivity.FFN, ATTN_Q, ATTN_OUT): the LayerResult fields of its threshold and sparsity
_FIELDS = {"ffn": ("ffn_theta", "ffn_sparsity"), "attn_q": ("q_threshold", "q_sparsity"),
           "attn_output": ("o_threshold", "o_sparsity")}


def _pick(grids: list[list], sites, levels: np.ndarray) -> list:
    """One LayerResult per layer: each site's threshold and sparsity from its chosen grid level."""
    out = [LayerResult(None, 0.0) for _ in grids]
    for site, j in zip(sites, levels):
        for name in _FIELDS[site.kind]:
            setattr(out[site.layer], name, getattr(grids[site.layer][int(j)], name))
    return out


def _site_thresholds(grids: list[list], site) -> np.ndarray:
    """The site's threshold at each grid level: [levels, n_ff] for FFN sites, [levels] otherwise."""
    return np.stack([np.asarray(getattr(r, _FIELDS[site.kind][0]), dtype=np.float32) for r in grids[site.layer]])


def allocate_levels(tm, recipe: Recipe, grid: np.ndarray, grids: list[list], splits: list[dict], calib_file, tok,
                    progress: bool) -> tuple[list, AllocationReport]:
    """(one LayerResult per layer at the chosen levels, the report). grids[i][j]: layer i's
    LayerResult at level grid[j]; splits[i][a]: layer i's with the channels at a and the cut on down's
    input (split_recipe). tm: the model the statistics came from (reloaded whole here)."""
    start = time.monotonic()
    windows, first = heldout_windows(calib_file, tok, recipe)
    tm.load_all()
    kinds = (sensitivity.FFN,) + (() if recipe.attn_sparsity is None else (sensitivity.ATTN_Q, sensitivity.ATTN_OUT))
    sites = sensitivity.sites_of(tm, kinds)
    with tqdm(total=len(windows) * recipe.allocation.draws, desc="sensitivity", unit="pass",
              disable=not progress) as bar:
        table = sensitivity.measure(tm, windows, sites, [_site_thresholds(grids, s) for s in sites], grid,
                                    recipe.allocation.draws, progress=bar.update)
    at = {x: int(np.flatnonzero(grid == np.round(x, 6))[0]) for x in (recipe.sparsity, recipe.attn_sparsity)
          if x is not None}
    uniform = np.array([at[recipe.sparsity if s.kind == sensitivity.FFN else recipe.attn_sparsity]
                        for s in sites])
    chosen = allocate.lagrangian(table, uniform)
    results = {"uniform": _pick(grids, sites, uniform), "allocated": _pick(grids, sites, chosen.levels)}
    gate_levels = sorted(splits[0]) if splits else []
    results |= {f"split {a}": [layer[a] for layer in splits] for a in gate_levels}
    configs = [sparse_forward.BakedThresholds.dense(tm.n_layers)] + [_baked(k, v) for k, v in results.items()]
    quality = sparse_forward.evaluate(tm, configs, windows, progress=progress)
    kl = {name: q.kl_sum / q.n for name, q in zip(results, quality[1:])}
    best = min(kl, key=kl.get)  # ties: the earlier, uniform before allocated before the splits
    used = best.split()[0]
    fractions = grid[chosen.levels if used == "allocated" else uniform]
    if used == "split":
        fractions = np.where([s.kind == sensitivity.FFN for s in sites], float(best.split()[1]), fractions)

    def of(kind: str) -> list[float] | None:
        values = [float(x) for s, x in zip(sites, fractions) if s.kind == kind]
        return values or None

    params = np.array([s.params for s in sites], dtype=np.float64)
    report = AllocationReport(of(sensitivity.FFN), of(sensitivity.ATTN_Q), of(sensitivity.ATTN_OUT),
                              float((params * grid[uniform]).sum() / params.sum()), first, len(windows),
                              (chosen.uniform_kl, chosen.predicted_kl), (kl["uniform"], kl["allocated"]), used,
                              time.monotonic() - start, gate_levels, [kl[f"split {a}"] for a in gate_levels])
    return results[best], report
