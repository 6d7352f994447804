"""Check the gradient-based sensitivity table of `convert --allocate kl` against measured KL.

For every layer and a few FFN levels, the KL to dense of the model with only that layer sparse,
measured with the PyTorch sparse forward on held-out calibration windows, beside the value the
sensitivity table predicts for the same windows. Prints both tables, their correlation per level
and the time each took.

    python scripts/sensitivity_check.py default --windows 2 --levels 0.3,0.5,0.7
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    from ggufsparse.calib import layers as calibrate
    from ggufsparse.calib import text as calib_text
    from ggufsparse.models import known as models
    from ggufsparse.models.tokenizer import gguf_tokenizer
    from ggufsparse.models.torch_model import GGUFTorchModel
    from ggufsparse.pipeline.convert import _layer_result
    from ggufsparse.pipeline.convert_alloc import heldout_windows
    from ggufsparse.pipeline.recipe import Recipe
    from ggufsparse.reference import sensitivity
    from ggufsparse.reference import sparse_forward as reference

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--levels", default="0.3,0.5,0.7")
    ap.add_argument("--json", help="write the tables to this file")
    args = ap.parse_args()
    path = models.resolve(args.model)
    levels = np.array([float(v) for v in args.levels.split(",")])
    recipe = Recipe(alloc_windows=args.windows)
    tok = gguf_tokenizer(path)
    calib = calib_text.load(calib_text.default_calibration_file(), *tok, recipe.calib_tokens, recipe.calib_seq_len)
    tm = GGUFTorchModel(path)
    grids: list[list] = []
    calibrate.run_layers(tm, calib.windows,
                         lambda i, stats: grids.append([_layer_result(stats, recipe, x, None) for x in levels]))
    held, _ = heldout_windows(calib_text.default_calibration_file(), tok, recipe)
    tm.load_all()
    sites = sensitivity.sites_of(tm, (sensitivity.FFN,))
    start = time.monotonic()
    grid = np.concatenate([[0.0], levels])
    thresholds = [np.stack([np.zeros_like(grids[s.layer][0].ffn_theta)] + [r.ffn_theta for r in grids[s.layer]])
                  for s in sites]
    table = sensitivity.measure(tm, held, sites, thresholds, grid, args.draws)
    predicted = table.kl[:, 1:]
    predict_s = time.monotonic() - start
    start = time.monotonic()
    measured = np.zeros_like(predicted)
    dense = reference.BakedThresholds.dense(tm.n_layers)
    for n, site in enumerate(sites):
        configs = [dense]
        for r in grids[site.layer]:
            one = reference.BakedThresholds.dense(tm.n_layers)
            one.ffn[site.layer] = r.ffn_theta
            configs.append(one)
        quality = reference.evaluate(tm, configs, held, progress=False)
        measured[n] = [q.kl_sum / q.n for q in quality[1:]]
        print(f"layer {site.layer:3d}  measured {np.round(measured[n], 4)}  predicted {np.round(predicted[n], 4)}",
              flush=True)
    measure_s = time.monotonic() - start
    for j, x in enumerate(levels):
        r = np.corrcoef(np.log(measured[:, j]), np.log(predicted[:, j]))[0, 1]
        print(f"level {x:g}: correlation of log KL {r:.3f}, sums measured {measured[:, j].sum():.4f} "
              f"predicted {predicted[:, j].sum():.4f}")
    print(f"time: sensitivity table {predict_s:.0f} s, measured table {measure_s:.0f} s")
    # the most any allocation of these levels can gain if the layers' KL added up
    if 0.5 in levels:
        from ggufsparse.reference.allocate import lagrangian

        half = np.full(len(sites), 1 + int(np.flatnonzero(levels == 0.5)[0]))
        for name, kl in (("measured", measured), ("predicted", predicted)):
            table = sensitivity.Sensitivity(sites, grid, np.concatenate([np.zeros((len(sites), 1)), kl], axis=1))
            best = lagrangian(table, half)
            print(f"allocation on the {name} table at mean level 0.5: sum of KL {best.predicted_kl:.4f} "
                  f"against {best.uniform_kl:.4f} uniform ({best.predicted_kl / best.uniform_kl:.3f}x); "
                  f"levels {grid[best.levels].tolist()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"levels": levels.tolist(), "measured": measured.tolist(), "predicted": predicted.tolist(),
                       "seconds": {"predicted": predict_s, "measured": measure_s}}, f, indent=1)


if __name__ == "__main__":
    main()
