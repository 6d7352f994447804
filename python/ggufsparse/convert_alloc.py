"""`convert --allocate kl`: per-layer (and per-projection) sparsity levels chosen by end-to-end KL.

Glue only. The plain method's statistics give every layer's thresholds at every level of a grid;
sensitivity.py measures, on held-out calibration text (the windows of the calibration file that
follow the ones the thresholds were calibrated on; never evaluation data), what each level of each
site costs in KL; allocate.py picks the levels at the plain method's parameter budget. Before
writing, the KL of the uniform and the allocated levels is measured on the same held-out windows
with the real sparse forward, and the uniform levels are kept if the allocation does not win.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.recipe import Recipe

TOP_LEVEL = 0.95  # highest level the allocation may give a site


def level_grid(recipe: Recipe) -> np.ndarray:
    """Candidate levels: 0 to TOP_LEVEL by alloc_step, plus the requested levels themselves."""
    levels = [np.arange(0.0, TOP_LEVEL + 1e-9, recipe.alloc_step), [recipe.sparsity]]
    if recipe.attn_sparsity is not None:
        levels.append([recipe.attn_sparsity])
    return np.unique(np.round(np.concatenate(levels), 6))


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
    used: str  # "allocated", or "uniform" when the allocation did not lower the measured KL
    seconds: float


def heldout_windows(calib_file, tok, recipe: Recipe) -> tuple[np.ndarray, int]:
    """(windows, index of the first): the calibration file's windows after the calibration ones."""
    from ggufsparse import calib_text

    tokenize, bos = tok
    first = recipe.calib_tokens // recipe.calib_seq_len
    want = first + recipe.alloc_windows
    windows = calib_text.load(calib_file, tokenize, bos, want * recipe.calib_seq_len, recipe.calib_seq_len).windows
    if len(windows) < want:
        raise UserError(f"{calib_file}: --allocate needs {recipe.alloc_windows} windows of held-out text after "
                        f"the {first} calibration windows, the file has {max(len(windows) - first, 0)}; "
                        "use a longer file or fewer --alloc-windows")
    return windows[first:], first


def _baked(name: str, results: list):
    from ggufsparse.reference import BakedThresholds

    return BakedThresholds(name, None, [r.ffn_theta for r in results], [r.q_threshold for r in results],
                           [r.o_threshold for r in results])


# per site kind (sensitivity.FFN, ATTN_Q, ATTN_OUT): the LayerResult fields of its threshold and sparsity
_FIELDS = {"ffn": ("ffn_theta", "ffn_sparsity"), "attn_q": ("q_threshold", "q_sparsity"),
           "attn_output": ("o_threshold", "o_sparsity")}


def _pick(grids: list[list], sites, levels: np.ndarray) -> list:
    """One LayerResult per layer: each site's threshold and sparsity from its chosen grid level."""
    from ggufsparse.convert import LayerResult

    out = [LayerResult(None, 0.0) for _ in grids]
    for site, j in zip(sites, levels):
        for name in _FIELDS[site.kind]:
            setattr(out[site.layer], name, getattr(grids[site.layer][int(j)], name))
    return out


def _site_thresholds(grids: list[list], site) -> np.ndarray:
    """The site's threshold at each grid level: [levels, n_ff] for FFN sites, [levels] otherwise."""
    return np.stack([np.asarray(getattr(r, _FIELDS[site.kind][0]), dtype=np.float32) for r in grids[site.layer]])


def allocate_levels(tm, recipe: Recipe, grid: np.ndarray, grids: list[list], calib_file, tok,
                    progress: bool) -> tuple[list, AllocationReport]:
    """(one LayerResult per layer at the chosen levels, the report). grids[i][j]: layer i's
    LayerResult at level grid[j]. tm: the model the statistics came from (reloaded whole here)."""
    from tqdm import tqdm

    from ggufsparse import allocate, reference, sensitivity

    start = time.monotonic()
    windows, first = heldout_windows(calib_file, tok, recipe)
    tm.load_all()
    kinds = (sensitivity.FFN,) + (() if recipe.attn_sparsity is None else (sensitivity.ATTN_Q, sensitivity.ATTN_OUT))
    sites = sensitivity.sites_of(tm, kinds)
    with tqdm(total=len(windows) * recipe.alloc_draws, desc="sensitivity", unit="pass",
              disable=not progress) as bar:
        table = sensitivity.measure(tm, windows, sites, [_site_thresholds(grids, s) for s in sites], grid,
                                    recipe.alloc_draws, progress=bar.update)
    at = {x: int(np.flatnonzero(grid == np.round(x, 6))[0]) for x in (recipe.sparsity, recipe.attn_sparsity)
          if x is not None}
    uniform = np.array([at[recipe.sparsity if s.kind == sensitivity.FFN else recipe.attn_sparsity]
                        for s in sites])
    chosen = allocate.lagrangian(table, uniform)
    results = {"uniform": _pick(grids, sites, uniform), "allocated": _pick(grids, sites, chosen.levels)}
    configs = [reference.BakedThresholds.dense(tm.n_layers)] + [_baked(k, v) for k, v in results.items()]
    quality = reference.evaluate(tm, configs, windows, progress=progress)
    measured = tuple(q.kl_sum / q.n for q in quality[1:])
    used = "allocated" if measured[1] < measured[0] else "uniform"
    fractions = grid[chosen.levels if used == "allocated" else uniform]

    def of(kind: str) -> list[float] | None:
        values = [float(x) for s, x in zip(sites, fractions) if s.kind == kind]
        return values or None

    params = np.array([s.params for s in sites], dtype=np.float64)
    report = AllocationReport(of(sensitivity.FFN), of(sensitivity.ATTN_Q), of(sensitivity.ATTN_OUT),
                              float((params * grid[uniform]).sum() / params.sum()), first, len(windows),
                              (chosen.uniform_kl, chosen.predicted_kl), measured, used, time.monotonic() - start)
    return results[used], report
