"""`ggufsparse convert`: calibrate thresholds for a model and write them into a new GGUF.

Glue only: the methods compute thresholds (methods/), calib/layers.py runs the model,
transpose.py makes the runtime's transposed weights and gguf_io.py writes the file.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from ggufsparse import __version__
from ggufsparse.calib import layers as calib_layers
from ggufsparse.calib import text as calib_text
from ggufsparse.calib.stats import KeepFFNInputs, LayerStats, layer_collectors
from ggufsparse.calib.text import default_calibration_file
from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import (
    ExtraKey,
    ExtraTensor,
    check_writable,
    open_reader,
    scratch_beside,
    write_with_extras,
)
from ggufsparse.format.transpose import transposed
from ggufsparse.methods import ACTIVATION_METHODS, attention, cats, chess, teal
from ggufsparse.methods.down_cut import down_input_threshold
from ggufsparse.methods.prosparse.export import convert_relu_family
from ggufsparse.models.hf_import import hf_activation, hf_to_gguf, is_hf_dir
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.models.torch_model import GGUFTorchModel, check_supported, gguf_architecture
from ggufsparse.pipeline.convert_alloc import allocate_levels, level_grid, split_levels, split_recipe
from ggufsparse.pipeline.convert_nm import convert_nm
from ggufsparse.pipeline.convert_teal import layer_result, teal_keys
from ggufsparse.pipeline.recipe import Recipe
from ggufsparse.pipeline.results import ConvertResult, LayerResult


def _check_input(reader, path: Path) -> None:
    check_supported(gguf_architecture(reader), path)
    if layout.Keys.FORMAT_VERSION in reader.fields:
        raise UserError(f"{path}: already converted by ggufsparse "
                        f"(method {reader.fields[layout.Keys.METHOD].contents()}); convert the original file")


def _layer_result(stats, recipe: Recipe, ffn_level: float, attn_level: float | None) -> LayerResult:
    if recipe.method == "chess":
        ffn = chess.ffn_thresholds(stats.ffn, ffn_level, recipe.chess.norm)
    else:
        ffn = cats.ffn_thresholds(stats.ffn, ffn_level)
    result = LayerResult(ffn.theta, ffn.sparsity)
    down = recipe.allocation.down_sparsity
    if down is not None:
        ffn_in = stats.ffn_inputs
        result.inputs[layout.FFN_DOWN_IN_SITE] = down_input_threshold(ffn_in.mlp, ffn_in.inputs, ffn.theta, down)
    if attn_level is not None:
        result.q_threshold, result.q_sparsity = attention.input_threshold(stats.q_input, attn_level)
        result.o_threshold, result.o_sparsity = attention.input_threshold(stats.o_input, attn_level)
    return result


def _calibrate(path: Path, recipe: Recipe, calib_file: Path, progress: bool, dtype: str):
    """(per-layer results, calibration set, the allocation report or None)."""
    tokenize, bos = gguf_tokenizer(path)
    calib = calib_text.load(calib_file, tokenize, bos, recipe.calib_tokens, recipe.calib_seq_len)
    model = GGUFTorchModel(path, dtype)
    # with --allocate, every layer's thresholds at every candidate level; the allocation picks
    grid = None
    if recipe.allocation.mode != "none":
        grid = level_grid(recipe)
        split_gate_levels = split_levels(recipe)
    per_layer: list = []
    splits: list[dict] = []  # with --allocate: per layer, split gate level -> LayerResult with the cut

    def on_layer(i: int, stats) -> None:
        if recipe.is_teal:
            if recipe.teal.alloc == "greedy":
                bar.set_postfix_str(f"greedy allocation of layer {i}")
            per_layer.append(layer_result(stats, recipe))
        elif grid is None:
            per_layer.append(_layer_result(stats, recipe, recipe.sparsity, recipe.attn_sparsity))
        else:
            attn = recipe.attn_sparsity is not None
            per_layer.append([_layer_result(stats, recipe, x, x if attn else None) for x in grid])
            splits.append({a: _layer_result(stats, split_recipe(recipe, a), a, recipe.attn_sparsity)
                           for a in split_gate_levels})

    collectors = layer_collectors()
    if recipe.is_teal:
        collectors |= teal.collectors(recipe.teal.windows)
    if recipe.allocation.down_sparsity is not None or grid is not None:  # the down cut follows the channels
        collectors["ffn_inputs"] = KeepFFNInputs()
    total = model.n_layers * len(calib.windows)
    bar = tqdm(total=total, desc="calibrating", unit="win", disable=not progress)
    with bar:
        calib_layers.run_layers(model, calib.windows, collectors, lambda i, got: on_layer(i, LayerStats(**got)),
                                calib_layers.Progress(bar.update))
    if grid is None:
        return per_layer, calib, None
    results, report = allocate_levels(model, recipe, grid, per_layer, splits, calib_file, (tokenize, bos), progress)
    return results, calib, report


def _extras(reader, results: list[LayerResult], progress: bool) -> list[ExtraTensor]:
    by_name = {t.name: t for t in reader.tensors}
    out: list[ExtraTensor] = []
    written: set[str] = set()
    for i, r in enumerate(tqdm(results, desc="transposing", unit="layer", disable=not progress)):
        pairs = [] if r.ffn_theta is None else [(layout.FFN_GATE_THR, layout.FFN_DOWN_T, r.ffn_theta)]
        if r.q_threshold is not None:
            pairs.append((layout.ATTN_Q_THR, layout.ATTN_Q_T, np.array([r.q_threshold], dtype=np.float32)))
            pairs.append((layout.ATTN_OUT_THR, layout.ATTN_OUT_T, np.array([r.o_threshold], dtype=np.float32)))
        for site, (t, _) in r.inputs.items():
            pairs.append((*layout.INPUT_SITES[site], np.array([t], dtype=np.float32)))
        for thr, weight_t, values in pairs:
            out.append(ExtraTensor(thr.name(i), values.astype(np.float32), gguf.GGMLQuantizationType.F32))
            if weight_t.name(i) in written:
                continue  # ffn_down_t serves the channel thresholds and the cut on down's input alike
            written.add(weight_t.name(i))
            source = by_name.get(f"blk.{i}.{weight_t.source}")
            if source is None:
                raise UserError(f"{reader.data.filename}: layer {i} has no {weight_t.source}")
            data, qtype = transposed(source.data, source.tensor_type)
            out.append(ExtraTensor(weight_t.name(i), data, qtype))
    return out


def _keys(recipe: Recipe, results: list[LayerResult], calib) -> list[ExtraKey]:
    V = gguf.GGUFValueType
    targets = [layout.TARGET_FFN] if results[0].ffn_theta is not None else []
    if results[0].q_threshold is not None:
        targets += [layout.TARGET_ATTN_Q, layout.TARGET_ATTN_OUT]
    targets += list(results[0].inputs)
    keys = [
        ExtraKey(layout.Keys.FORMAT_VERSION, layout.FORMAT_VERSION, V.UINT32),
        ExtraKey(layout.Keys.TOOL_VERSION, __version__, V.STRING),
        ExtraKey(layout.Keys.METHOD, recipe.method, V.STRING),
        ExtraKey(layout.Keys.TARGETS, targets, V.ARRAY, V.STRING),
        ExtraKey(layout.Keys.RECIPE, recipe.to_json(), V.STRING),
        ExtraKey(layout.Keys.CALIB_FILE, calib.source, V.STRING),
        ExtraKey(layout.Keys.CALIB_SHA256, calib.sha256, V.STRING),
        ExtraKey(layout.Keys.CALIB_TOKENS, calib.n_tokens, V.UINT64),
    ]
    if results[0].ffn_theta is not None:
        keys.append(ExtraKey(layout.Keys.CALIB_FFN_SPARSITY, [float(r.ffn_sparsity) for r in results],
                             V.ARRAY, V.FLOAT32))
    if results[0].q_threshold is not None:
        keys += [
            ExtraKey(layout.Keys.CALIB_ATTN_Q_SPARSITY, [float(r.q_sparsity) for r in results], V.ARRAY, V.FLOAT32),
            ExtraKey(layout.Keys.CALIB_ATTN_OUT_SPARSITY, [float(r.o_sparsity) for r in results],
                     V.ARRAY, V.FLOAT32),
        ]
    # per input site (TEAL's, or the cut on down's input) the level each layer reached
    keys += [ExtraKey(layout.calib_sparsity_key(site), [float(r.inputs[site][1]) for r in results],
                      V.ARRAY, V.FLOAT32) for site in results[0].inputs]
    if recipe.is_teal:
        keys += teal_keys(recipe, results)
    return keys


def _allocation_keys(report, calib) -> list[ExtraKey]:
    if report is None:
        return []
    V, K = gguf.GGUFValueType, layout.Keys
    keys = [
        ExtraKey(K.ALLOC_METHOD, "kl", V.STRING),
        ExtraKey(K.ALLOC_USED, report.used, V.STRING),
        ExtraKey(K.ALLOC_BUDGET, report.budget, V.FLOAT32),
        ExtraKey(K.ALLOC_FILE, calib.source, V.STRING),
        ExtraKey(K.ALLOC_SHA256, calib.sha256, V.STRING),
        ExtraKey(K.ALLOC_WINDOWS, [report.first_window, report.windows], V.ARRAY, V.UINT32),
        ExtraKey(K.ALLOC_KL_PREDICTED, list(report.predicted_kl), V.ARRAY, V.FLOAT32),
        ExtraKey(K.ALLOC_KL_MEASURED, list(report.measured_kl), V.ARRAY, V.FLOAT32),
        ExtraKey(K.ALLOC_FFN_LEVEL, report.ffn_levels, V.ARRAY, V.FLOAT32),
    ]
    if report.split_levels:
        keys += [ExtraKey(K.ALLOC_SPLIT_LEVEL, report.split_levels, V.ARRAY, V.FLOAT32),
                 ExtraKey(K.ALLOC_SPLIT_KL, report.split_kl, V.ARRAY, V.FLOAT32)]
    if report.attn_q_levels is not None:
        keys += [ExtraKey(K.ALLOC_ATTN_Q_LEVEL, report.attn_q_levels, V.ARRAY, V.FLOAT32),
                 ExtraKey(K.ALLOC_ATTN_OUT_LEVEL, report.attn_out_levels, V.ARRAY, V.FLOAT32)]
    return keys


def convert(model: Path, out: Path, recipe: Recipe, *, force: bool = False, progress: bool = True,
            dtype: str = "float32", outtype: str = "f16", quantize: str | None = None):
    """A ConvertResult, or for the N:M methods a convert_nm.NMConvertResult."""
    recipe = recipe.validate()
    out = Path(out)
    check_writable(out, force)
    calib_file = Path(recipe.calib) if recipe.calib else default_calibration_file()
    reads_text = not (recipe.is_nm and recipe.method == "magnitude")  # magnitude scores need no text
    if reads_text and not calib_file.is_file():
        hint = "" if recipe.calib else "; set GGUFSPARSE_DATA to the data folder or pass --calib FILE"
        raise UserError(f"{calib_file}: calibration file not found{hint}")
    model = Path(model)
    act = hf_activation(model) if is_hf_dir(model) else None
    if (act is None) != (recipe.method not in ACTIVATION_METHODS):
        raise UserError(f"{model}: --method {recipe.method} is for checkpoints whose config declares ReLU or FATReLU "
                        "(make one with: ggufsparse finetune)" if act is None else
                        f"{model}: a {act.kind} checkpoint; convert it with --method prosparse")
    with scratch_beside(out) as scratch:
        if is_hf_dir(model):
            source = hf_to_gguf(model, Path(scratch) / "model.gguf", outtype, quantize)
        elif model.is_dir():
            raise UserError(f"{model}: a folder without config.json; give a GGUF file or a Hugging Face folder")
        else:
            source = model
        reader = open_reader(source)
        _check_input(reader, source)
        if act is not None:
            added, original = convert_relu_family(source, out, act, force=force, progress=progress)
            return ConvertResult(out, [], 0, added, original, None)
        if recipe.is_nm:
            return convert_nm(source, reader, out, recipe, calib_file, force=force, progress=progress, dtype=dtype)
        calib_recipe = recipe
        if recipe.prunes_nm:  # chess+esparse: prune first, then calibrate CHESS on the pruned model
            pruned = Path(scratch) / "pruned.gguf"
            convert_nm(source, reader, pruned, recipe.override(method="esparse", nm_storage=recipe.storage), calib_file, force=True,
                       progress=progress, dtype=dtype)
            source, reader = pruned, open_reader(pruned)
            calib_recipe = recipe.override(method="chess")
        results, calib, allocation = _calibrate(source, calib_recipe, calib_file, progress, dtype)
        extras = _extras(reader, results, progress)
        keys = _keys(recipe, results, calib) + _allocation_keys(allocation, calib)
        write_with_extras(source, out, keys, extras, force=force, progress=progress)
        original = sum(int(t.n_bytes) for t in reader.tensors)
    return ConvertResult(out, results, calib.n_tokens, sum(t.data.nbytes for t in extras), original, allocation)
