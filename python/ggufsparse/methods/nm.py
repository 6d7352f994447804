"""N:M weight pruning: importance scores, channel shuffles and masks (magnitude, Wanda, E-Sparse).

Every function works on one weight W of shape (n_out, n_in) in numpy order (one row per output) and
on per-input-channel statistics; N of every M consecutive inputs of each row are kept.

  magnitude  s_ij = |W_ij|
  wanda      s_ij = |W_ij| * ||X_j||_2                      (Sun et al., arXiv 2306.11695)
  esparse    s_ij = |W_ij| * (H_j / mean(H) + alpha * ||X_j||_2 / mean(||X||_2))

E-Sparse (Li et al., arXiv 2310.15929) adds the information entropy H_j of input channel j's
activations to Wanda's weight-times-norm score and reorders input channels before choosing the
N of every M. The paper's exact combination, entropy estimator and shuffle parameters are not
reproduced here from its text, so each is a parameter (docs/esparse.md): H_j is the entropy (in
nats) of a histogram of channel j's calibration values over `bins` equal bins spanning its range;
entropy and norm are each divided by their mean over the channels so that alpha weighs two
dimensionless terms (alpha -> infinity is Wanda). The shuffles:
  global naive shuffle: channels sorted by their importance I_j = H_j / mean(H) + alpha *
      ||X_j|| / mean(||X||), dealt to the n_in/M groups in snake order (1..G, G..1, ...), so each
      group gets one channel of each importance tier instead of neighbours of similar importance;
  local block shuffle: inside each block of `block` consecutive (shuffled) channels, swaps of two
      channels between groups are made greedily, best first, while a swap raises the sum over
      all rows of the kept scores (the N largest of each group), for at most `passes` passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ggufsparse.methods import SHUFFLES, Pattern, parse_pattern  # noqa: F401 (nm's names)


@dataclass(frozen=True)
class ChannelStats:
    """Per input channel of one linear layer, over the calibration tokens."""

    norm: np.ndarray  # ||X_j||_2
    entropy: np.ndarray  # H_j, nats


def channel_entropy(x: torch.Tensor, bins: int) -> np.ndarray:
    """Entropy (nats) of each column's histogram of `bins` equal bins over the column's range;
    a constant column has entropy 0."""
    x = x.float()
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    idx = ((x - lo) / width * bins).floor().long().clamp_(0, bins - 1)
    idx += torch.arange(x.shape[1]) * bins
    counts = torch.bincount(idx.reshape(-1), minlength=x.shape[1] * bins).reshape(x.shape[1], bins).double()
    p = counts / counts.sum(dim=1, keepdim=True)
    h = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=1)
    return h.numpy()


def _unit_mean(v: np.ndarray) -> np.ndarray:
    mean = float(np.mean(v))
    return v / mean if mean > 0 else np.zeros_like(v)


def channel_importance(stats: ChannelStats, alpha: float) -> np.ndarray:
    return _unit_mean(stats.entropy) + alpha * _unit_mean(stats.norm)


def scores(weight: np.ndarray, kind: str, stats: ChannelStats | None, alpha: float) -> np.ndarray:
    w = np.abs(weight.astype(np.float32))
    if kind == "magnitude":
        return w
    if stats is None:
        raise ValueError(f"{kind} needs channel statistics")
    if kind == "wanda":
        return w * stats.norm.astype(np.float32)[None, :]
    return w * channel_importance(stats, alpha).astype(np.float32)[None, :]


def global_shuffle(importance: np.ndarray, m: int) -> np.ndarray:
    """perm such that shuffled channel c is original channel perm[c]: channels in decreasing
    importance dealt to the groups in snake order."""
    k = importance.shape[0]
    groups = k // m
    order = np.argsort(-importance, kind="stable")
    tier, pos = np.divmod(np.arange(k), groups)
    group = np.where(tier % 2 == 0, pos, groups - 1 - pos)
    perm = np.empty(k, dtype=np.int64)
    perm[group * m + tier] = order
    return perm


def _kept_sum(s: torch.Tensor, n: int) -> torch.Tensor:
    """s (..., rows, m): the sum over rows of the n largest of each group of m."""
    return s.topk(n, dim=-1).values.sum(dim=(-1, -2))


def local_block_shuffle(score: np.ndarray, perm: np.ndarray, pattern: Pattern, block: int,
                        passes: int) -> np.ndarray:
    """perm refined by greedy swaps between the groups of each block (see the module docstring)."""
    n, m = pattern.n, pattern.m
    block = max(m, block - block % m)
    s_all = torch.from_numpy(np.ascontiguousarray(score[:, perm], dtype=np.float32))
    perm = perm.copy()
    for start in range(0, len(perm), block):
        width = min(block, len(perm) - start)
        if width < 2 * m:
            continue
        local = np.arange(width)
        group_of = local // m
        a, b = np.triu_indices(width, 1)
        cross = group_of[a] != group_of[b]
        a, b = a[cross], b[cross]
        for _ in range(passes):
            s = s_all[:, start + local]  # rows x width, current order
            groups = s.reshape(s.shape[0], width // m, m)
            base = _kept_sum(groups.transpose(0, 1), n)  # per group
            ga, gb = group_of[a], group_of[b]
            sa, sb = s[:, a].T, s[:, b].T  # pairs x rows
            ia, ib = torch.from_numpy(a % m), torch.from_numpy(b % m)
            new_a = groups[:, ga].permute(1, 0, 2).clone()  # pairs x rows x m
            new_b = groups[:, gb].permute(1, 0, 2).clone()
            pairs = torch.arange(len(a))
            new_a[pairs, :, ia] = sb
            new_b[pairs, :, ib] = sa
            gain = _kept_sum(new_a, n) + _kept_sum(new_b, n) - base[ga] - base[gb]
            order = torch.argsort(gain, descending=True).numpy()
            used: set[int] = set()
            swapped = False
            for p in order:
                if gain[p] <= 1e-6 * float(base.sum()) / len(base):
                    break
                if group_of[a[p]] in used or group_of[b[p]] in used:
                    continue  # the gain was measured against the groups as they were
                used.update((group_of[a[p]], group_of[b[p]]))
                local[[a[p], b[p]]] = local[[b[p], a[p]]]
                swapped = True
            if not swapped:
                break
        perm[start:start + width] = perm[start + local]
        s_all[:, start:start + width] = s_all[:, start + local]
    return perm


def nm_mask(score: np.ndarray, pattern: Pattern, perm: np.ndarray | None = None) -> np.ndarray:
    """Boolean keep-mask in the original channel order: in each row, the N largest scores of every
    M consecutive channels of the shuffled order (channel perm[c] at shuffled position c)."""
    n_out, n_in = score.shape
    if n_in % pattern.m:
        raise ValueError(f"{n_in} inputs are not a multiple of M = {pattern.m}")
    # without a permutation no shuffled copy is made (these are the large arrays)
    shuffled = score if perm is None else score[:, perm]
    s = torch.from_numpy(np.ascontiguousarray(shuffled, dtype=np.float32))
    groups = s.reshape(n_out, n_in // pattern.m, pattern.m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(pattern.n, dim=-1).indices, True)
    if perm is None:
        return keep.reshape(n_out, n_in).numpy()
    mask = np.empty((n_out, n_in), dtype=bool)
    mask[:, perm] = keep.reshape(n_out, n_in).numpy()
    return mask
