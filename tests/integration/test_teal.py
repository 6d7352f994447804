"""TEAL: the greedy allocation on a real block, the file it writes, and the runtime running it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
import torch
from ggufsparse.calib import layers as calib_layers
from ggufsparse.calib import text as calib_text
from ggufsparse.calib.stats import LayerStats, layer_collectors
from ggufsparse.format import layout
from ggufsparse.methods import teal
from ggufsparse.models import torch_model
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.models.torch_model import GGUFTorchModel
from ggufsparse.reference import sparse_forward

SMALL = ["--calib-tokens", "1024", "--calib-seq-len", "256", "--teal-windows", "1", "-q"]


def ggufsparse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def layer2_stats(default_model):
    """SmolLM2's layer 2 after a calibration pass that keeps one window of its inputs."""
    tokenize, bos = gguf_tokenizer(default_model)
    windows = calib_text.load(calib_text.default_calibration_file(), tokenize, bos, 512, 256).windows
    tm = GGUFTorchModel(default_model)
    kept = {}

    class Enough(Exception):
        pass

    def on_layer(i, stats):
        if i == 2:
            kept["stats"] = stats
            raise Enough  # leaves the layer loaded: its unloading comes after on_layer returns

    with pytest.raises(Enough):
        calib_layers.run_layers(tm, windows, layer_collectors() | teal.collectors(1),
                                lambda i, got: on_layer(i, LayerStats(**got)))
    return kept["stats"]


@pytest.mark.model
def test_greedy_reaches_the_target_in_parameter_weighted_level(layer2_stats):
    levels, trace = teal.greedy_levels(layer2_stats, teal.SITES, 0.3, step=0.05)
    weights = teal.params(layer2_stats.block.layer, teal.SITES)
    assert teal.weighted_level(levels, weights) == pytest.approx(0.3, abs=1e-6)
    assert all(0.0 <= v <= teal.MAX_LEVEL for v in levels.values())
    assert trace.dense_error == 0.0 and trace.steps[-1][2] > 0


@pytest.mark.model
def test_greedy_spends_the_budget_where_it_costs_nothing(layer2_stats):
    """With ffn_down's weights zeroed the FFN adds nothing to the block output, so sparsifying the
    three FFN inputs is free: the greedy must take its whole budget there and leave attention dense."""
    mlp = layer2_stats.block.layer.mlp
    saved = mlp.down_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            mlp.down_proj.weight.zero_()
        levels, _ = teal.greedy_levels(layer2_stats, teal.SITES, 0.3, step=0.05)
    finally:
        with torch.no_grad():
            mlp.down_proj.weight.copy_(saved)
    assert all(levels[s] == 0.0 for s in teal.ATTN_SITES), levels
    assert sum(levels[s] for s in ("ffn_gate_in", "ffn_up_in", "ffn_down_in")) > 0.9


@pytest.mark.model
def test_greedy_beats_uniform_on_the_block_it_allocated(layer2_stats):
    block, weights = layer2_stats.block, teal.params(layer2_stats.block.layer, teal.SITES)
    thresholds = teal.SiteThresholds(layer2_stats)
    dense = teal._block_outputs(block, [])

    def error(levels):
        on = {s: thresholds(s, v)[0] for s, v in levels.items() if v > 0}
        return teal._error(teal._block_outputs(block, [teal.InputThresholds(block.layer, on)]), dense)

    greedy, _ = teal.greedy_levels(layer2_stats, teal.SITES, 0.4, step=0.05)
    assert teal.weighted_level(greedy, weights) == pytest.approx(0.4, abs=1e-6)
    assert error(greedy) < error(teal.uniform_levels(teal.SITES, 0.4))


@pytest.fixture(scope="module")
def teal_file(default_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teal") / "teal.gguf"
    proc = ggufsparse("convert", str(default_model), "-o", str(out), "--method", "teal", "--sparsity", "0.4", *SMALL)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.model
def test_teal_file_carries_a_threshold_and_transposed_copy_per_projection(teal_file, default_model):
    src = {t.name: t for t in gguf.GGUFReader(default_model).tensors}
    reader = gguf.GGUFReader(teal_file)
    dst = {t.name: t for t in reader.tensors}
    f = reader.fields
    n_layers = f["llama.block_count"].contents()
    assert f[layout.Keys.TARGETS].contents() == list(layout.INPUT_SITES)
    assert f[layout.Keys.FORMAT_VERSION].contents() == layout.FORMAT_VERSION
    assert f[layout.Keys.TEAL_ALLOCATION].contents() == "greedy"
    block = np.array(f[layout.Keys.TEAL_BLOCK_SPARSITY].contents())
    assert len(block) == n_layers and np.abs(block - 0.4).max() < 0.02
    for site, (thr, w_t) in layout.INPUT_SITES.items():
        levels = f[layout.calib_sparsity_key(site)].contents()
        assert len(levels) == n_layers and all(0.0 <= v <= teal.MAX_LEVEL + 0.01 for v in levels)
        for i in (0, n_layers - 1):
            assert dst[thr.name(i)].tensor_type == gguf.GGMLQuantizationType.F32 and dst[thr.name(i)].n_elements == 1
            source, copy = src[f"blk.{i}.{w_t.source}"], dst[w_t.name(i)]
            assert copy.tensor_type == gguf.GGMLQuantizationType.I8 or copy.n_elements == source.n_elements
            assert np.array_equal(dst[source.name].data, source.data)
    assert layout.FFN_GATE_THR.name(0) not in dst
    shown = subprocess.run(["ggufsparse", "inspect", str(teal_file)], capture_output=True, text=True, check=True)
    assert "TEAL: greedy allocation" in shown.stdout and "ffn_down_in" in shown.stdout


@pytest.mark.parametrize("args, phrase", [
    (["--method", "teal", "--attn-sparsity", "0.5"], "not with --method teal"),
    (["--method", "chess+teal"], "needs --attn-sparsity"),
    (["--method", "teal", "--teal-alloc", "best"], "--teal-alloc best"),
    (["--method", "teal", "--allocate", "kl"], "--allocate"),
])
def test_bad_teal_options_are_one_line(args, phrase, tmp_path):
    proc = ggufsparse("convert", "default", "-o", str(tmp_path / "x.gguf"), *args)
    assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.model
@pytest.mark.runtime
def test_runtime_reports_every_site_as_the_reference_measures(teal_file, tmp_path):
    tokenize, bos = gguf_tokenizer(teal_file)
    from ggufsparse.paths import shared_data_dir

    windows = sparse_forward.text_windows(shared_data_dir() / "wikitext2" / "wiki.test.raw", tokenize, bos, 512, 2)
    np.save(tmp_path / "w.npy", windows)
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(teal_file, tmp_path / "rt.npy", windows=tmp_path / "w.npy", n_batch=512,
                            env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    model = torch_model.load(teal_file)
    [q] = sparse_forward.evaluate(model, [sparse_forward.BakedThresholds.read(teal_file, model.n_layers)], windows,
                             progress=False)
    assert "ffn" not in report
    for site in layout.INPUT_SITES:
        assert len(report[site]["layers"]) == model.n_layers, site
        assert abs(report[site]["fraction"] - q.counters.sparsity(site)) < 0.02, site


@pytest.mark.model
@pytest.mark.runtime
def test_chess_plus_teal_combines_ffn_channels_with_teal_attention(default_model, tmp_path):
    out = tmp_path / "ct.gguf"
    proc = ggufsparse("convert", str(default_model), "-o", str(out), "--method", "chess+teal", "--sparsity", "0.5",
                      "--attn-sparsity", "0.4", "--teal-alloc", "uniform", *SMALL)
    assert proc.returncode == 0, proc.stderr
    f = gguf.GGUFReader(out).fields
    assert f[layout.Keys.TARGETS].contents() == ["ffn", "attn_q", "attn_k", "attn_v", "attn_output"]
    assert np.mean(f[layout.Keys.CALIB_FFN_SPARSITY].contents()) == pytest.approx(0.5, abs=0.01)
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(out, tmp_path / "rt.npy", n_batch=1, env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    assert set(report) - {"format", "kernels"} == {"ffn", "attn_q", "attn_k", "attn_v", "attn_output"}


@pytest.mark.runtime
@pytest.mark.parametrize("n_batch", [1, 512])
def test_zero_thresholds_on_every_input_give_the_dense_logits(n_batch, tmp_path):
    """TEAL at level 0 (all thresholds 0) on an F32 model, whose transposed copies are exact: the
    dense logits, within the difference llama.cpp shows between its batch and one-token paths."""
    dense_file, zero = tmp_path / "f32.gguf", tmp_path / "zero.gguf"
    assert ggufsparse("synth", "--shape", "smollm2-135m", "--type", "f32", "--layers", "3", "-o", str(dense_file),
                      "-q").returncode == 0
    proc = ggufsparse("convert", str(dense_file), "-o", str(zero), "--method", "teal", "--sparsity", "0",
                      "--teal-alloc", "uniform", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert len([t for t in gguf.GGUFReader(zero).tensors if t.name.endswith("_thr")]) == 3 * 7
    dense = logits_of.in_subprocess(dense_file, tmp_path / "dense.npy", n_batch=n_batch)
    other = logits_of.in_subprocess(dense_file, tmp_path / "other.npy", n_batch=513 - n_batch)
    sparse = logits_of.in_subprocess(zero, tmp_path / "sparse.npy", n_batch=n_batch)
    noise, diff = float(np.abs(other - dense).max()), float(np.abs(sparse - dense).max())
    print(f"n_batch {n_batch}: max abs diff {diff:.3g}; dense n_batch 1 vs 512: {noise:.3g}")
    assert diff <= 2 * noise + 1e-5 * float(np.abs(dense).max())
