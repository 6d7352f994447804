"""--allocate kl on the default model: the gradient-based sensitivity against the KL measured with the
sparse forward, and the sensitivity text coming from the calibration file only (the allocation on
known costs: tests/unit/test_allocation.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import gguf
import numpy as np
import pytest
from ggufsparse.calib import layers as calib_layers
from ggufsparse.calib import text as calib_text
from ggufsparse.calib.stats import LayerStats, layer_collectors
from ggufsparse.format import layout
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.models.torch_model import GGUFTorchModel
from ggufsparse.pipeline.convert import _layer_result
from ggufsparse.pipeline.recipe import AllocationSection, Recipe
from ggufsparse.reference import sensitivity, sparse_forward


@pytest.mark.model
def test_gradient_sensitivity_matches_measured_kl(default_model):
    """The second-order prediction of one site's KL against the KL of the sparse forward."""
    tokenize, bos = gguf_tokenizer(default_model)
    recipe = Recipe(sparsity=0.5)
    text = calib_text.load(calib_text.default_calibration_file(), tokenize, bos, 3 * 256, 256).windows
    tm = GGUFTorchModel(default_model)
    grids = []
    calib_layers.run_layers(tm, text[:2], layer_collectors(),
                            lambda i, got: grids.append(_layer_result(LayerStats(**got), recipe, 0.5, None)))
    tm.load_all()
    held = text[2:]
    sites = [s for s in sensitivity.sites_of(tm, (sensitivity.FFN,)) if s.layer in (2, 20)]
    levels = np.array([0.0, 0.5])
    thresholds = [np.stack([np.zeros_like(grids[s.layer].ffn_theta), grids[s.layer].ffn_theta]) for s in sites]
    table = sensitivity.measure(tm, held, sites, thresholds, levels, draws=16)
    for n, site in enumerate(sites):
        only = sparse_forward.BakedThresholds.dense(tm.n_layers)
        only.ffn[site.layer] = grids[site.layer].ffn_theta
        _, sparse = sparse_forward.evaluate(tm, [sparse_forward.BakedThresholds.dense(tm.n_layers), only], held,
                                           progress=False)
        measured = sparse.kl_sum / sparse.n
        predicted = table.kl[n, 1]
        assert measured > 0 and 0.6 < predicted / measured < 1.6, (site, predicted, measured)


@pytest.mark.model
def test_heldout_windows_follow_the_calibration_windows(default_model):
    tok = gguf_tokenizer(default_model)
    recipe = Recipe(calib_tokens=512, calib_seq_len=128, allocation=AllocationSection(windows=3))
    from ggufsparse.pipeline.convert_alloc import heldout_windows

    path = calib_text.default_calibration_file()
    held, first = heldout_windows(path, tok, recipe)
    both = calib_text.load(path, *tok, 7 * 128, 128).windows
    calib = calib_text.load(path, *tok, 512, 128).windows
    assert first == 4 and held.shape == (3, 128)
    assert np.array_equal(calib, both[:4]) and np.array_equal(held, both[4:])


@pytest.mark.model
@pytest.mark.runtime
def test_allocation_reads_the_calibration_file_only(default_model, tmp_path):
    """With a data folder holding nothing but the calibration text, --allocate kl works, and the
    file records that its sensitivity text is that file's windows after the calibration ones."""
    data = tmp_path / "data"
    (data / "c4").mkdir(parents=True)
    source = calib_text.default_calibration_file()
    (data / "c4" / source.name).symlink_to(source)
    out = tmp_path / "alloc.gguf"
    env = {**os.environ, "GGUFSPARSE_DATA": str(data)}
    proc = subprocess.run(["ggufsparse", "convert", str(default_model), "-o", str(out), "--sparsity", "0.5",
                           "--allocate", "kl", "--calib-tokens", "512", "--calib-seq-len", "128",
                           "--alloc-windows", "2", "--alloc-draws", "1", "--alloc-step", "0.1", "-q"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    f = gguf.GGUFReader(out).fields
    K = layout.Keys
    assert f[K.ALLOC_FILE].contents() == source.name == f[K.CALIB_FILE].contents()
    assert f[K.ALLOC_SHA256].contents() == hashlib.sha256(source.read_bytes()).hexdigest()
    assert f[K.ALLOC_WINDOWS].contents() == [4, 2]
    levels = np.array(f[K.ALLOC_FFN_LEVEL].contents())
    n_layers = f["llama.block_count"].contents()
    # the FFN splits tried (channels lower, down's input cut higher, the same weights), and the
    # file holds whichever of uniform, allocated and the splits measured the least KL
    assert f[K.ALLOC_SPLIT_LEVEL].contents() == pytest.approx([0.35, 0.4, 0.45])
    kl = [*f[K.ALLOC_KL_MEASURED].contents(), *f[K.ALLOC_SPLIT_KL].contents()]
    used = f[K.ALLOC_USED].contents()
    assert used == ["uniform", "allocated", "split", "split", "split"][int(np.argmin(kl))]
    down = layout.calib_sparsity_key("ffn_down_in")
    if used == "split":
        gate = [0.35, 0.4, 0.45][int(np.argmin(kl)) - 2]
        assert levels == pytest.approx([gate] * n_layers)
        np.testing.assert_allclose(f[K.CALIB_FFN_SPARSITY].contents(), gate, atol=0.01)
        np.testing.assert_allclose(f[down].contents(), 1.0 - gate, atol=0.01)
    else:
        assert down not in f
        assert len(levels) == n_layers and abs(levels.mean() - 0.5) <= 0.1 / n_layers + 1e-6
    if used == "allocated":
        np.testing.assert_allclose(f[K.CALIB_FFN_SPARSITY].contents(), levels, atol=0.01)
    shown = subprocess.run(["ggufsparse", "inspect", str(out)], capture_output=True, text=True, check=True).stdout
    assert "allocation: kl" in shown and "windows 4..5" in shown
