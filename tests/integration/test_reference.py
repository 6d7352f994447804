"""The PyTorch reference forward: the oracle the C++ runtime will be checked against."""

from __future__ import annotations

import subprocess

import gguf
import logits_of
import numpy as np
import pytest
import torch
from ggufsparse.calib import text as calib_text
from ggufsparse.format import layout
from ggufsparse.methods import NEVER
from ggufsparse.models import torch_model
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.reference import sparse_forward

pytestmark = [pytest.mark.model]


@pytest.fixture(scope="module")
def model(default_model):
    return torch_model.load(default_model)


@pytest.fixture(scope="module")
def ids(default_model):
    tokenize, _ = gguf_tokenizer(default_model)
    return torch.tensor([tokenize(logits_of.TEXT)])


def logits(model, ids, thresholds=None, counters=None):
    t = thresholds or sparse_forward.BakedThresholds.dense(model.n_layers)
    with sparse_forward.SparseForward(model.layers, t, counters or sparse_forward.Counters()), torch.inference_mode():
        return model.model(input_ids=ids, use_cache=False).logits[0].numpy()


def test_dense_reference_computes_what_llama_cpp_computes(default_model, model, ids, tmp_path):
    ours = logits(model, ids)
    theirs = logits_of.in_subprocess(default_model, tmp_path / "l.npy")
    assert ours.shape == theirs.shape
    # llama.cpp quantizes activations to 8 bits for Q4_1 products: close, not equal
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.995


def test_zero_thresholds_give_the_dense_logits_exactly(model, ids):
    n = model.n_layers
    zero = sparse_forward.BakedThresholds("zero", "chess", [np.zeros(1536, np.float32)] * n, [0.0] * n, [0.0] * n)
    counters = sparse_forward.Counters()
    np.testing.assert_array_equal(logits(model, ids, zero, counters), logits(model, ids))
    assert counters.sparsity("ffn") < 0.001 and counters.sparsity("attn_q") < 0.001


def test_never_active_channels_remove_the_ffn(model, ids):
    n = model.n_layers
    never = sparse_forward.BakedThresholds("never", "chess", [np.full(1536, NEVER, np.float32)] * n, [None] * n,
                                      [None] * n)
    counters = sparse_forward.Counters()
    sparse = logits(model, ids, never, counters)
    handles = [layer.mlp.register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)) for layer in model.layers]
    try:
        without_ffn = logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    np.testing.assert_allclose(sparse, without_ffn, atol=1e-4)
    assert counters.sparsity("ffn") == 1.0


def test_thresholds_zero_exactly_the_entries_at_or_below_them(model, ids):
    """One layer's FFN with a threshold, checked against a hand-written masked FFN."""
    layer = model.layers[4]
    seen = {}
    h = layer.mlp.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].clone()))
    logits(model, ids)
    h.remove()
    x = seen["x"]
    theta = torch.full((1536,), 0.05)
    with torch.inference_mode():
        a = layer.mlp.act_fn(layer.mlp.gate_proj(x))
        expected = layer.mlp.down_proj(torch.where(a.abs() > theta, a, 0.0) * layer.mlp.up_proj(x))
        t = sparse_forward.BakedThresholds("one", "chess", [None] * 4 + [theta.numpy()] + [None] * (model.n_layers - 5),
                                      [None] * model.n_layers, [None] * model.n_layers)
        counters = sparse_forward.Counters()
        with sparse_forward.SparseForward(model.layers, t, counters):
            got = layer.mlp(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert counters.sparsity("ffn") == pytest.approx(float((a.abs() <= theta).float().mean()))


def test_calibration_sparsity_matches_what_the_reference_measures(default_model, model, tmp_path):
    """The converter's histogram quantiles, checked by counting on the same calibration windows."""
    out = tmp_path / "c.gguf"
    proc = subprocess.run(["ggufsparse", "convert", str(default_model), "-o", str(out), "--sparsity", "0.4",
                           "--attn-sparsity", "0.6", "--calib-tokens", "1024", "--calib-seq-len", "256", "-q"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    fields = gguf.GGUFReader(out).fields
    tokenize, bos = gguf_tokenizer(default_model)
    windows = calib_text.load(calib_text.default_calibration_file(), tokenize, bos, 1024, 256).windows
    counters = sparse_forward.Counters()
    t = sparse_forward.BakedThresholds.read(out, model.n_layers)
    with sparse_forward.SparseForward(model.layers, t, counters), torch.inference_mode():
        # layer by layer on dense inputs, as calibration saw them: one site per pass
        for w in windows:
            model.model(input_ids=torch.from_numpy(w[None, :]), use_cache=False)
    ffn = np.mean(fields[layout.Keys.CALIB_FFN_SPARSITY].contents())
    q = np.mean(fields[layout.Keys.CALIB_ATTN_Q_SPARSITY].contents())
    assert ffn == pytest.approx(0.4, abs=0.01) and q == pytest.approx(0.6, abs=0.01)
    # the sparse forward feeds sparse outputs to later layers, so counts drift a little from
    # calibration's dense statistics; a wrong quantile would be off by far more
    assert counters.sparsity("ffn") == pytest.approx(0.4, abs=0.03)
    assert counters.sparsity("attn_q") == pytest.approx(0.6, abs=0.03)
    assert counters.sparsity("attn_output") == pytest.approx(0.6, abs=0.03)
