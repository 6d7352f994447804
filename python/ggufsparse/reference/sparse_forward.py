"""The PyTorch reference of the sparse forward: the oracle the C++ runtime is checked against.

It applies exactly the thresholds baked into a GGUF to the dequantized model, with the runtime's
semantics: FFN channel i is active iff |act(gate)_i| > theta_i (inactive channels contribute
nothing to up * act and down); an input entry of a projection with a threshold (CHESS: q and
output; TEAL: any of the seven) is kept iff |x| > t.
Quality is measured against the same model without thresholds, on the same token windows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from typing_extensions import Self

from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import open_reader
from ggufsparse.methods import teal


@dataclass
class BakedThresholds:
    """The thresholds a GGUF carries, per layer; None where the layer is dense."""

    name: str
    method: str | None
    ffn: list[np.ndarray | None]
    attn_q: list[float | None]
    attn_out: list[float | None]
    # the other input sites (layout.INPUT_SITES: attn_k, attn_v, ffn_gate_in, ...), per layer
    more: dict[str, list[float | None]] = field(default_factory=dict)

    def inputs(self) -> dict[str, list[float | None]]:
        """Every input site's per-layer thresholds, by the runtime's site names."""
        return {layout.ATTN_Q_SITE: self.attn_q, layout.ATTN_OUTPUT_SITE: self.attn_out, **self.more}

    @classmethod
    def read(cls, path: Path, n_layers: int) -> BakedThresholds:
        reader = open_reader(path)
        tensors = {t.name: t for t in reader.tensors}

        def get(spec: layout.SparseTensor, i: int):
            t = tensors.get(spec.name(i))
            return None if t is None else np.array(t.data, dtype=np.float32).reshape(-1)

        def scalars(spec: layout.SparseTensor) -> list[float | None]:
            return [None if (v := get(spec, i)) is None else float(v[0]) for i in range(n_layers)]

        method = reader.fields.get(layout.Keys.METHOD)
        ffn = [get(layout.FFN_GATE_THR, i) for i in range(n_layers)]
        sites = {site: scalars(thr) for site, (thr, _) in layout.INPUT_SITES.items()}
        q, o = sites.pop(layout.ATTN_Q_SITE), sites.pop(layout.ATTN_OUTPUT_SITE)
        more = {site: v for site, v in sites.items() if any(t is not None for t in v)}
        return cls(Path(path).name, method.contents() if method else None, ffn, q, o, more)

    @classmethod
    def dense(cls, n_layers: int) -> BakedThresholds:
        return cls("dense", None, [None] * n_layers, [None] * n_layers, [None] * n_layers)


def original_tensors_digest(path: Path) -> str:
    """sha256 over the names, types and bytes of a file's non-ggufsparse tensors."""
    h = hashlib.sha256()
    for t in open_reader(path).tensors:
        if layout.is_sparse_tensor(t.name):
            continue
        h.update(t.name.encode())
        h.update(int(t.tensor_type).to_bytes(4, "little"))
        h.update(np.ascontiguousarray(t.data).view(np.uint8).tobytes())
    return h.hexdigest()


@dataclass
class Counters:
    """Zeroed and total activations at each sparse site, over a run."""

    zero: Counter = field(default_factory=Counter)
    total: Counter = field(default_factory=Counter)

    def add(self, site: str, keep: torch.Tensor) -> None:
        self.zero[site] += int((~keep).sum())
        self.total[site] += keep.numel()

    def sparsity(self, site: str) -> float | None:
        return self.zero[site] / self.total[site] if self.total[site] else None


@dataclass
class DecisionCheck:
    """How given decisions compare with the thresholds' own on the reference's values."""

    entries: int = 0
    differ: int = 0
    worst_gap: float = 0.0  # largest | |x| - t | / t over the entries that differ

    def add(self, x: torch.Tensor, t, keep: torch.Tensor) -> None:
        own = x.abs() > t
        differ = own != keep
        self.entries += keep.numel()
        self.differ += int(differ.sum())
        if differ.any():
            t = torch.as_tensor(t, dtype=x.dtype).expand_as(x)
            gap = (x.abs() - t).abs() / t.clamp_min(torch.finfo(x.dtype).tiny)
            self.worst_gap = max(self.worst_gap, float(gap[differ].max()))


class SparseForward:
    """Hooks that apply BakedThresholds to a loaded model; use as a context manager.

    With `decisions` ((site, layer) -> bool array (tokens, width) for the window being run, e.g.
    the runtime's own), those entries are kept instead of the thresholds' choice, and `check`
    records where the two differ: the same sparse model, computed with another's channel
    decisions, to compare float implementations without a value near its threshold crossing it.
    """

    def __init__(self, layers: list, thresholds: BakedThresholds, counters: Counters,
                 decisions: dict | None = None, check: DecisionCheck | None = None):
        self.layers, self.t, self.counters, self.handles = layers, thresholds, counters, []
        self.decisions, self.check = decisions, check if check is not None else DecisionCheck()

    def _keep(self, site: str, layer: int, x: torch.Tensor, t) -> torch.Tensor:
        if self.decisions is None:
            return x.abs() > t
        keep = torch.from_numpy(self.decisions[(site, layer)]).reshape(x.shape)
        self.check.add(x, t, keep)
        return keep

    def _ffn_hook(self, layer: int, theta: torch.Tensor):
        def hook(_module, _inputs, out):
            keep = self._keep(layout.FFN_SITE, layer, out, theta)
            self.counters.add(layout.FFN_SITE, keep)
            return torch.where(keep, out, torch.zeros_like(out))
        return hook

    def _input_hook(self, site: str, layer: int, t: float):
        def hook(_module, args):
            x = args[0]
            keep = self._keep(site, layer, x, t)
            self.counters.add(site, keep)
            return (torch.where(keep, x, torch.zeros_like(x)), *args[1:])
        return hook

    def __enter__(self) -> Self:
        for i, layer in enumerate(self.layers):
            theta = self.t.ffn[i]
            if theta is not None:
                th = torch.from_numpy(theta).to(layer.mlp.up_proj.weight.dtype)
                self.handles.append(layer.mlp.act_fn.register_forward_hook(self._ffn_hook(i, th)))
            for site, thresholds in self.t.inputs().items():
                if thresholds[i] is not None:
                    self.handles.append(teal.module(layer, site).register_forward_pre_hook(
                        self._input_hook(site, i, thresholds[i])))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def text_windows(path: Path, tokenize, bos: int | None, ctx: int, chunks: int | None) -> np.ndarray:
    """Non-overlapping windows of ctx tokens over the whole text, as llama-perplexity cuts them:
    the file tokenized once (with BOS), window k = tokens[k*ctx:(k+1)*ctx], its first token
    replaced by BOS."""
    if not Path(path).is_file():
        raise UserError(f"{path}: text file not found")
    tokens = tokenize(Path(path).read_text(encoding="utf-8"))
    if bos is not None:
        tokens = [bos, *tokens]
    n = len(tokens) // ctx
    if n == 0:
        raise UserError(f"{path}: {len(tokens)} tokens, fewer than one window of {ctx}")
    n = min(n, chunks) if chunks else n
    windows = np.asarray(tokens[: n * ctx], dtype=np.int64).reshape(n, ctx)
    if bos is not None:
        windows[:, 0] = bos
    return windows


@dataclass
class Quality:
    name: str
    method: str | None
    nll_sum: float = 0.0
    kl_sum: float = 0.0
    kl_values: list[float] = field(default_factory=list)
    top1_same: int = 0
    n: int = 0
    counters: Counters = field(default_factory=Counters)

    def row(self) -> dict:
        kl = np.concatenate(self.kl_values) if self.kl_values else np.zeros(1)
        return {
            "name": self.name, "method": self.method, "tokens": self.n,
            "ppl": float(np.exp(self.nll_sum / self.n)),
            "kl_mean": self.kl_sum / self.n, "kl_p99": float(np.percentile(kl, 99)),
            "top1": self.top1_same / self.n,
            "sparsity": {s: self.counters.sparsity(s) for s in (layout.FFN_SITE, *layout.INPUT_SITES)},
        }


def _scores(logits: torch.Tensor, targets: torch.Tensor, first: int):
    logp = torch.log_softmax(logits[0, first:-1].double(), dim=-1)
    return logp, targets[first + 1:]


def evaluate(model, configs: list[BakedThresholds], windows: np.ndarray, first: int = 0,
             progress: bool = True) -> list[Quality]:
    """Quality of each config against the dense model (configs[0] should be dense).

    Scores the prediction of every token after position `first` in each window (first=0: every
    token; ctx // 2: llama-perplexity's second half).
    """
    from tqdm import tqdm

    results = [Quality(c.name, c.method) for c in configs]
    layers = model.layers
    for row in tqdm(windows, desc="scoring", unit="win", disable=not progress):
        ids = torch.from_numpy(row[None, :])
        targets = ids[0]
        dense_logp = None
        for config, q in zip(configs, results):
            with SparseForward(layers, config, q.counters), torch.inference_mode():
                logits = model.model(input_ids=ids, use_cache=False).logits
            logp, tgt = _scores(logits, targets, first)
            if dense_logp is None:
                dense_logp = logp
            q.nll_sum += float(-logp.gather(1, tgt[:, None]).sum())
            kl = (dense_logp.exp() * (dense_logp - logp)).sum(dim=-1)
            q.kl_sum += float(kl.sum())
            q.kl_values.append(kl.numpy())
            q.top1_same += int((logp.argmax(-1) == dense_logp.argmax(-1)).sum())
            q.n += int(tgt.numel())
    return results


def window_logits(model, config: BakedThresholds, windows: np.ndarray, decisions=None,
                  check: DecisionCheck | None = None) -> np.ndarray:
    """The logits of `config`'s model for every position of each window, [n, ctx, vocab] float32:
    what the runtime should produce for the same file. With `decisions(w)` (the decisions of
    window w, see SparseForward), those are applied, and `check` adds up where they differ from
    the thresholds' own."""
    out = []
    for w, row in enumerate(windows):
        forward = SparseForward(model.layers, config, Counters(), decisions(w) if decisions else None, check)
        with forward, torch.inference_mode():
            logits = model.model(input_ids=torch.from_numpy(row[None, :]), use_cache=False).logits
        out.append(logits[0].float().numpy())
    return np.stack(out)
