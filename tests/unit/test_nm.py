"""N:M scores, shuffles and masks (methods/nm.py) on small random weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ggufsparse.errors import UserError
from ggufsparse.methods import nm


def _groups(a: np.ndarray, perm: np.ndarray, m: int) -> np.ndarray:
    return a[:, perm].reshape(a.shape[0], -1, m)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 16)])
def test_mask_keeps_the_n_largest_of_every_group(n, m):
    rng = np.random.default_rng(n * 100 + m)
    score = rng.random((7, 4 * m))
    perm = rng.permutation(4 * m)
    mask = nm.nm_mask(score, nm.Pattern(n, m), perm)
    g_mask, g_score = _groups(mask, perm, m), _groups(score, perm, m)
    assert (g_mask.sum(axis=-1) == n).all()
    smallest_kept = np.where(g_mask, g_score, np.inf).min(axis=-1)
    largest_dropped = np.where(g_mask, -np.inf, g_score).max(axis=-1)
    assert (smallest_kept > largest_dropped).all()


def test_mask_without_shuffle_groups_consecutive_inputs():
    score = np.array([[4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]])
    assert nm.nm_mask(score, nm.Pattern(2, 4)).tolist() == [[True, True, False, False, False, False, True, True]]


def test_global_shuffle_deals_one_channel_of_each_tier_to_every_group():
    rng = np.random.default_rng(1)
    k, m = 48, 4
    importance = rng.random(k)
    perm = nm.global_shuffle(importance, m)
    assert sorted(perm) == list(range(k))
    rank = np.empty(k, dtype=int)
    rank[np.argsort(-importance)] = np.arange(k)
    tiers = rank[perm].reshape(-1, m) // (k // m)
    assert (np.sort(tiers, axis=1) == np.arange(m)).all()


def _kept(score, perm, pattern):
    return float(score[nm.nm_mask(score, pattern, perm)].sum())


def test_local_block_shuffle_never_loses_and_finds_an_obvious_swap():
    pattern = nm.Pattern(2, 4)
    # two groups: all the weight of the first two rows sits in group 0, so 2:4 drops half of it;
    # moving two of those channels into group 1 keeps it all
    score = np.zeros((2, 8))
    score[:, :4] = 1.0
    start = np.arange(8)
    perm = nm.local_block_shuffle(score, start, pattern, block=8, passes=2)
    assert sorted(perm) == list(range(8))
    assert _kept(score, perm, pattern) == pytest.approx(4 * 2)
    assert _kept(score, start, pattern) == pytest.approx(2 * 2)
    rng = np.random.default_rng(2)
    for _ in range(5):
        score = rng.random((16, 64)) ** 4
        perm0 = nm.global_shuffle(score.sum(axis=0), 4)
        perm = nm.local_block_shuffle(score, perm0, pattern, block=16, passes=3)
        assert sorted(perm) == list(range(64))
        assert _kept(score, perm, pattern) >= _kept(score, perm0, pattern) - 1e-9


def test_local_block_shuffle_matches_exhaustive_search_on_one_small_block():
    """On one block of two 1:2 groups the greedy swap reaches the best of all orders."""
    pattern = nm.Pattern(1, 2)
    rng = np.random.default_rng(3)
    for _ in range(10):
        score = rng.random((3, 4))
        best = max(_kept(score, np.array(p), pattern) for p in itertools.permutations(range(4)))
        perm = nm.local_block_shuffle(score, np.arange(4), pattern, block=4, passes=4)
        assert _kept(score, perm, pattern) == pytest.approx(best)


def test_entropy_of_uniform_and_constant_channels():
    x = torch.cat([torch.linspace(0, 1, 64 * 100)[:, None], torch.full((6400, 1), 3.0)], dim=1)
    h = nm.channel_entropy(x, bins=64)
    assert h[0] == pytest.approx(np.log(64), rel=1e-3)
    assert h[1] == 0.0


def test_scores_weigh_inputs_as_documented():
    w = np.array([[1.0, -2.0, 3.0, -4.0]])
    stats = nm.ChannelStats(norm=np.array([4.0, 1.0, 1.0, 1.0]), entropy=np.array([1.0, 1.0, 1.0, 5.0]))
    assert nm.scores(w, "magnitude", None, 1.0).tolist() == [[1, 2, 3, 4]]
    assert nm.scores(w, "wanda", stats, 1.0).tolist() == [[4, 2, 3, 4]]
    # entropy / mean(entropy) + alpha * norm / mean(norm); both means are 2 and 1.75
    expected = np.abs(w) * (stats.entropy / 2.0 + 0.5 * stats.norm / 1.75)
    assert nm.scores(w, "esparse", stats, 0.5) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["2", "4:2", "0:4", "2:32", "a:b"])
def test_bad_patterns_are_user_errors(text):
    with pytest.raises(UserError):
        nm.parse_pattern(text)
