"""`ggufsparse predictor`: add FFN activation predictors (predictor.py) to a sparse FFN file.

Every tensor and key of the input is kept; the predictor's three tensors per layer and the
ggufsparse.predictor.* keys are added (docs/format.md, "Activation predictors").
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from ggufsparse.calib import text as calib_text
from ggufsparse.calib.text import default_calibration_file
from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor, check_writable, open_reader, write_with_extras
from ggufsparse.methods.predictor import (
    LayerPredictor,
    PredictorRecipe,
    collect_layers,
    gate_thresholds,
    random_layer,
    stored,
    train_layer,
)
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.pipeline.predictor_checkpoint import Checkpoint, checkpoint_path, discard, settings
from ggufsparse.pipeline.results import PredictorResult


def _check_input(reader, path: Path) -> None:
    names = {t.name for t in reader.tensors}
    if any(layout.FFN_PRED_A.stem in n for n in names):
        raise UserError(f"{path}: already has predictors; start from the file without them")
    if layout.Keys.FORMAT_VERSION not in reader.fields:
        raise UserError(f"{path}: not a ggufsparse file; convert it with an FFN method first "
                        "(e.g. ggufsparse convert MODEL --method chess)")


def _extras(layers: list[LayerPredictor], weight_type: str) -> list[ExtraTensor]:
    out = []
    for i, p in enumerate(layers):
        for t, w in ((layout.FFN_PRED_A, p.pred_a), (layout.FFN_PRED_B, p.pred_b)):
            data, qtype = stored(w, weight_type)
            out.append(ExtraTensor(t.name(i), data, qtype))
        out.append(ExtraTensor(layout.FFN_PRED_THR.name(i), p.pred_thr.astype(np.float32),
                               gguf.GGMLQuantizationType.F32))
    return out


def _keys(result: PredictorResult, recipe: PredictorRecipe, calib) -> list[ExtraKey]:
    V, K = gguf.GGUFValueType, layout.Keys
    keys = [
        ExtraKey(K.FORMAT_VERSION, layout.FORMAT_VERSION, V.UINT32),
        ExtraKey(K.PREDICTOR_KIND, result.kind, V.STRING),
        ExtraKey(K.PREDICTOR_RANK, recipe.rank, V.UINT32),
        ExtraKey(K.PREDICTOR_PREDICTED, [float(p.predicted) for p in result.layers], V.ARRAY, V.FLOAT32),
    ]
    if calib is not None:
        keys += [
            ExtraKey(K.PREDICTOR_RECALL_TARGET, recipe.recall, V.FLOAT32),
            ExtraKey(K.PREDICTOR_RECALL, [float(p.recall) for p in result.layers], V.ARRAY, V.FLOAT32),
            ExtraKey(K.PREDICTOR_FILE, calib.source, V.STRING),
            ExtraKey(K.PREDICTOR_SHA256, calib.sha256, V.STRING),
        ]
    return keys


def _train(model: Path, recipe: PredictorRecipe, thresholds: list[np.ndarray], calib_file: Path,
           checkpoint: Path, restart: bool, progress: bool) -> tuple[list[LayerPredictor], object]:
    """Each layer's predictor, trained or (a layer an earlier run finished) from the checkpoint."""
    tokenize, bos = gguf_tokenizer(model)
    calib = calib_text.load(calib_file, tokenize, bos, recipe.calib_tokens, recipe.calib_seq_len)
    ckpt = Checkpoint(checkpoint, settings(model, recipe, calib.sha256))
    done = ckpt.start(restart)
    n_windows = len(calib.windows)
    n_held = max(1, round(n_windows * recipe.held_out))
    if n_held >= n_windows:
        raise UserError(f"{calib_file}: {n_windows} calibration window(s) leave none to train on")
    n_train = (n_windows - n_held) * calib.windows.shape[1]
    layers: list[LayerPredictor] = []
    bar = tqdm(total=len(thresholds) * n_windows, desc="predictors", unit="win", disable=not progress)
    with bar:
        for i, data in collect_layers(model, calib.windows, thresholds, bar.update):
            if i in done:  # the forward pass still runs: the next layer's inputs come through it
                layers.append(done[i])
                continue
            bar.set_postfix_str(f"training layer {i}")
            layers.append(train_layer(data.x, data.active, n_train, recipe, seed=recipe.seed * 1000 + i))
            p = layers[-1]
            ckpt.save(i, p)
            bar.set_postfix_str(f"layer {i}: recall {p.recall:.3f}, {p.predicted:.2f} of rows on")
    return layers, calib


def add_predictors(model: Path, out: Path, recipe: PredictorRecipe, *, random_share: float | None = None,
                   calib_file: Path | None = None, force: bool = False, restart: bool = False,
                   progress: bool = True) -> PredictorResult:
    """Train (or, with random_share, draw at random for a synthetic model) a predictor per layer
    and write model + predictors to out. Training checkpoints each layer to out.ckpt (a folder,
    removed once out is written); a run of the same settings resumes there unless restart."""
    recipe.check()
    model, out = Path(model), Path(out)
    check_writable(out, force)
    reader = open_reader(model)
    _check_input(reader, model)
    thresholds = gate_thresholds(reader)
    by_name = {t.name: t for t in reader.tensors}
    gate = by_name["blk.0.ffn_gate.weight"]
    n_embd, n_ff = int(gate.shape[0]), int(gate.shape[1])
    del reader, by_name, gate
    if recipe.weight_type == "q8_0" and n_embd % 32:
        raise UserError(f"--pred-type q8_0: the model's {n_embd} inputs are not whole Q8_0 blocks of 32; "
                        "use --pred-type f16")
    calib = None
    if random_share is not None:
        if not 0.0 < random_share <= 1.0:
            raise UserError(f"--random {random_share}: must be in (0, 1]")
        layers = [random_layer(n_embd, n_ff, recipe, random_share, seed=recipe.seed * 1000 + i)
                  for i in range(len(thresholds))]
        kind = "random"
    else:
        calib_file = Path(calib_file) if calib_file else default_calibration_file()
        layers, calib = _train(model, recipe, thresholds, calib_file, checkpoint_path(out), restart, progress)
        kind = "trained"
    result = PredictorResult(out, kind, recipe.rank, layers, calib.n_tokens if calib is not None else 0)
    write_with_extras(model, out, _keys(result, recipe, calib), _extras(layers, recipe.weight_type),
                      force=force, progress=progress)
    if calib is not None:
        discard(checkpoint_path(out))
    return result
