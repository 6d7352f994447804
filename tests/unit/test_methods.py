"""The threshold methods against exact quantiles computed on the raw activations.

The histograms are an approximation; these tests bound how far the thresholds they give are
from the exact ones of the papers' definitions, on heavy-tailed synthetic activations.
"""

import numpy as np
import pytest
import torch
from ggufsparse.calib.stats import FFNStats, LogHistograms
from ggufsparse.methods import attention, cats, chess

N_TOKENS, N_FF = 4000, 64


@pytest.fixture(scope="module")
def activations():
    rng = np.random.default_rng(7)
    scale = np.exp(rng.normal(0, 1.5, N_FF))  # channels of very different sizes
    a_gate = rng.standard_t(3, (N_TOKENS, N_FF)) * scale * 0.1
    a_gate[rng.random((N_TOKENS, N_FF)) < 0.02] = 0.0  # some exact zeros
    a_up = rng.standard_t(4, (N_TOKENS, N_FF)) * np.exp(rng.normal(0, 1.0, N_FF))
    stats = FFNStats(N_FF)
    for chunk in range(4):  # streamed in pieces, as windows arrive
        rows = slice(chunk * 1000, (chunk + 1) * 1000)
        stats.add_gate(torch.from_numpy(a_gate[rows]).float())
        stats.add_up(torch.from_numpy(a_up[rows]).float())
    return a_gate.astype(np.float32), a_up.astype(np.float32), stats


def fraction_at_or_below(a_gate, theta):
    return float((np.abs(a_gate) <= theta).mean())


@pytest.mark.parametrize("k", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_cats_threshold_is_the_k_quantile(activations, k):
    a_gate, _, stats = activations
    t = cats.ffn_thresholds(stats, k)
    exact = np.quantile(np.abs(a_gate), k)
    assert np.all(t.theta == t.theta[0])
    assert t.theta[0] == pytest.approx(exact, rel=0.02)
    assert fraction_at_or_below(a_gate, t.theta) == pytest.approx(k, abs=0.005)
    assert t.sparsity == pytest.approx(fraction_at_or_below(a_gate, t.theta), abs=0.005)


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("k", [0.3, 0.5, 0.7])
def test_chess_thresholds_follow_the_paper(activations, norm, k):
    a_gate, a_up, stats = activations
    a64, u64 = a_gate.astype(np.float64), a_up.astype(np.float64)
    if norm == "l2":
        m = (u64 ** 2).mean(axis=0)
        tau = np.quantile(a64 ** 2 * m, k)
        exact = np.sqrt(tau / m)
    else:
        m = np.abs(u64).mean(axis=0)
        tau = np.quantile(np.abs(a64) * m, k)
        exact = tau / m
    t = chess.ffn_thresholds(stats, k, norm)
    np.testing.assert_allclose(t.theta, exact, rtol=0.03)
    assert fraction_at_or_below(a_gate, t.theta) == pytest.approx(k, abs=0.005)
    # channel-wise: channels with large E[up] get low thresholds, unlike CATS
    order = np.argsort(m)
    assert t.theta[order[-1]] < t.theta[order[0]]


def test_chess_l1_and_l2_differ(activations):
    _, _, stats = activations
    assert not np.allclose(chess.ffn_thresholds(stats, 0.5, "l1").theta, chess.ffn_thresholds(stats, 0.5, "l2").theta)


@pytest.mark.parametrize("method", [lambda s, k: cats.ffn_thresholds(s, k), lambda s, k: chess.ffn_thresholds(s, k)])
def test_zero_sparsity_gives_zero_thresholds(activations, method):
    _, _, stats = activations
    t = method(stats, 0.0)
    assert np.all(t.theta == 0.0) and t.sparsity == 0.0


def test_dead_channel_never_fires(activations):
    a_gate, a_up, _ = activations
    up = a_up.copy()
    up[:, 3] = 0.0
    stats = FFNStats(N_FF)
    stats.add_gate(torch.from_numpy(a_gate))
    stats.add_up(torch.from_numpy(up))
    t = chess.ffn_thresholds(stats, 0.5)
    assert t.theta[3] == np.finfo(np.float32).max
    assert np.all(np.isfinite(t.theta))


@pytest.mark.parametrize("k", [0.25, 0.5, 0.75])
def test_attention_input_threshold_is_the_k_quantile(k):
    x = np.random.default_rng(3).standard_normal((3000, 48)).astype(np.float32) * 0.7
    hist = LogHistograms(1)
    hist.add(torch.from_numpy(x))
    t, reached = attention.input_threshold(hist, k)
    assert t == pytest.approx(np.quantile(np.abs(x), k), rel=0.02)
    assert float((np.abs(x) <= t).mean()) == pytest.approx(k, abs=0.005)
    assert reached == pytest.approx(k, abs=0.005)


def test_histogram_memory_does_not_grow_with_tokens():
    stats = FFNStats(16)
    before = (stats.gate_hist.counts.numel(), stats.up_sq_sum.numel())
    for _ in range(5):
        stats.add_gate(torch.randn(1000, 16))
        stats.add_up(torch.randn(1000, 16))
    assert (stats.gate_hist.counts.numel(), stats.up_sq_sum.numel()) == before
    assert stats.tokens == 5000
    assert int(stats.gate_hist.counts.sum()) == 5000 * 16
