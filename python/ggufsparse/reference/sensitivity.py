"""How much each sparse site's level costs the model's output, end to end, from one backward pass.

A site is one place the runtime drops inputs: the FFN channels of a layer (dropped where
|act(gate)_i| <= theta_i, so down's input loses a_i * up_i) or the input of a layer's q or output
projection (dropped where |x| <= t). Dropping the part d of a projection P's input changes P's
output by -P d. To second order the KL divergence of the next-token distribution from the dense
one is 1/2 E[v^T F v], v the change of the logits and F the Fisher information of the output
distribution. For y drawn from the dense model's own distribution and g = d log p(y) / d(input of
P) (the gradient through P only), the Fisher identity gives E_y[(g . d)^2] = v^T F v for a single
site, and for several sites the dot products add before squaring:

    KL ~= 1/2 * mean over tokens and draws of z^2,   z = sum over sites of g_site . d_site(level)

So one forward and backward pass per window and draw gives, for every site and every candidate
level, the per-token values g . d(level). The table kept is each site's own term, 1/2 mean of
(g . d)^2: the KL with that site alone sparse. The allocation adds these terms: the cross terms
between sites, estimated from a few thousand samples, are noisy enough that an allocation using
them chases the noise (on SmolLM2 it measured worse on other held-out text than the additive one;
docs/allocation.md). Each token's g also carries the effect on later tokens through attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FFN, ATTN_Q, ATTN_OUT = "ffn", "attn_q", "attn_output"


@dataclass(frozen=True)
class Site:
    layer: int
    kind: str  # FFN, ATTN_Q or ATTN_OUT
    params: int  # weights skipped when every input is dropped (FFN: the up row and down column)


def sites_of(model, kinds: tuple[str, ...]) -> list[Site]:
    out = []
    for i, layer in enumerate(model.layers):
        mlp, attn = layer.mlp, layer.self_attn
        sizes = {FFN: mlp.up_proj.weight.numel() + mlp.down_proj.weight.numel(),
                 ATTN_Q: attn.q_proj.weight.numel(), ATTN_OUT: attn.o_proj.weight.numel()}
        out += [Site(i, kind, sizes[kind]) for kind in kinds]
    return out


class _Taps:
    """Hooks that record, per site, the key compared with the threshold, and the product of the
    site projection's input with the gradient through that projection alone."""

    def __init__(self, model, sites: list[Site]):
        self.model, self.sites, self.handles = model, sites, []
        self.keys: dict[int, torch.Tensor] = {}
        self.products: dict[int, list[torch.Tensor]] = {}

    def _projection_input(self, n: int, kind: str):
        def pre_hook(_module, args):
            # a private alias, so the gradient is the one through this projection (q shares its
            # input with k and v)
            x = args[0].clone()
            value = x.detach()[0]
            if kind != FFN:
                self.keys[n] = value.abs()

            def on_grad(grad: torch.Tensor) -> None:
                self.products.setdefault(n, []).append((grad[0] * value).float())

            x.register_hook(on_grad)
            return (x, *args[1:])
        return pre_hook

    def _ffn_key(self, n: int):
        def hook(_module, _inputs, out):
            self.keys[n] = out.detach()[0].abs()
        return hook

    def __enter__(self):
        layers = self.model.layers
        for n, site in enumerate(self.sites):
            layer = layers[site.layer]
            if site.kind == FFN:
                self.handles.append(layer.mlp.act_fn.register_forward_hook(self._ffn_key(n)))
                module = layer.mlp.down_proj
            else:
                module = layer.self_attn.q_proj if site.kind == ATTN_Q else layer.self_attn.o_proj
            self.handles.append(module.register_forward_pre_hook(self._projection_input(n, site.kind)))
        embed = self.model.model.model.embed_tokens
        self.handles.append(embed.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


@dataclass
class Sensitivity:
    """kl[n, j]: predicted KL to dense with only site n sparse, at level grid[j]."""

    sites: list[Site]
    grid: np.ndarray  # the candidate levels (fractions of inputs dropped on calibration text)
    kl: np.ndarray

    def predicted_kl(self, levels: np.ndarray) -> float:
        """Sum of the sites' terms for one grid index per site."""
        return float(self.kl[np.arange(len(self.sites)), levels].sum())


def _dropped(key: torch.Tensor, thresholds: np.ndarray) -> torch.Tensor:
    """[levels, tokens, inputs] bool: key <= threshold of each level (one per input, or one per level)."""
    t = torch.from_numpy(np.asarray(thresholds, dtype=np.float32)).to(key.dtype)
    t = t[:, None, :] if t.ndim == 2 else t[:, None, None]
    return key[None] <= t


def measure(tm, windows: np.ndarray, sites: list[Site], thresholds: list[np.ndarray], grid: np.ndarray,
            draws: int, seed: int = 0, progress=None) -> Sensitivity:
    """thresholds[n]: site n's threshold at each grid level, [levels, n_ff] for FFN sites and
    [levels] for projection inputs. progress: called once per (window, draw)."""
    gen = torch.Generator().manual_seed(seed)
    sums = np.zeros((len(sites), len(grid)))
    samples = 0
    for param in tm.model.parameters():
        param.requires_grad_(False)
    for row in windows:
        ids = torch.from_numpy(row[None, :])
        with _Taps(tm, sites) as taps:
            logits = tm.model(input_ids=ids, use_cache=False).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            for d in range(draws):
                y = torch.multinomial(logp.detach().exp(), 1, generator=gen)
                logp.gather(1, y).sum().backward(retain_graph=d + 1 < draws)
                if progress:
                    progress(1)
        with torch.no_grad():
            for n in range(len(sites)):
                dropped = _dropped(taps.keys[n], thresholds[n]).float()  # levels x T x K
                products = torch.stack(taps.products[n])  # draws x T x K
                dots = torch.einsum("ltk,dtk->ldt", dropped, products).double()
                sums[n] += (dots ** 2).sum(dim=(1, 2)).numpy()
        samples += draws * windows.shape[1]
    return Sensitivity(sites, grid, 0.5 * sums / samples)
