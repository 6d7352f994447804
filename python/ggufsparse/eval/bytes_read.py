"""The bytes of weights one decode token reads, dense and sparse: the memory-traffic bound on the
decode speed-up that `ggufsparse bench` prints beside the measured ratio.

Decode of a small model on a CPU is mostly bound by reading the weights, so (bytes a dense token
reads) / (bytes a sparse token reads) is about the most the skipping kernels can gain. The rules
follow the runtime's decode graph (docs/sparse-runtime.md, patches/0005):

- Every `blk.*` tensor is read whole (norms, biases, dense projections, thresholds, predictors),
  and so is every other tensor except the embedding tables, of which a token reads one row
  (counted 0); the output head is `output.weight`, or `token_embd.weight` where the model ties it.
- A CHESS/CATS layer (`ffn_gate_thr`): `ffn_up` is read row-skipped, bytes x (1 - share of FFN
  channels skipped, `ffn`); `ffn_down` through `ffn_down_t`, x (1 - that share), or with
  `ffn_down_in_thr` x (1 - `ffn_down_in`'s share, which counts both cuts); with a predictor the
  gate is read row-skipped, x (1 - `ffn_gate`'s share), plus the predictor's tensors.
- A projection with a threshold on its input (CHESS q and output, TEAL's seven sites): its
  transposed copy x (1 - the site's share); the dense copy is not read.
- Otherwise a projection with an N:M packed copy: the copy (kept values, positions, permutation);
  else the dense weight.

With `GGUFSPARSE_DENSE=1` (`dense_bytes_per_token`) the ggufsparse tensors are ignored and the
dense weights read, or, for a weight stored only packed, its packed copy (which prompts and the
dense path expand). Mixture-of-experts weights are counted whole (a token reads only its experts').
Shares are per site: one fraction for every layer, or a list per layer (the runtime's report).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ggufsparse.format import layout

Shares = Mapping[str, "float | Sequence[float | None]"]

HEAD = "output.weight"
TOKEN_EMBD = "token_embd.weight"

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


def _stem(t: layout.SparseTensor) -> str:
    """A per-layer tensor's name without its block prefix: "ffn_down_t.weight"."""
    return t.name(0).split(".", 2)[2]


_EXTRA = frozenset(_stem(t) for t in layout.SPARSE_TENSORS)
_WEIGHTS = {p: f"{p}.weight" for p in layout.PROJECTIONS}
# projection -> (input site, its threshold, the transposed copy)
_INPUT = {thr.source.removesuffix(".weight"): (site, _stem(thr), _stem(t))
          for site, (thr, t) in layout.INPUT_SITES.items()}
# read whole wherever present: thresholds and the predictor
_WHOLE = frozenset(_stem(t) for t in layout.SPARSE_TENSORS
                   if t.stem.endswith("_thr")) | {_stem(layout.FFN_PRED_A), _stem(layout.FFN_PRED_B)}
_GATE_THR, _DOWN_IN_THR = _stem(layout.FFN_GATE_THR), _stem(layout.FFN_DOWN_IN_THR)
_DOWN_T, _PRED_A = _stem(layout.FFN_DOWN_T), _stem(layout.FFN_PRED_A)
_PRED_SITE = "ffn_gate"  # the runtime's count of the gate rows a predictor left out
assert _PRED_SITE in layout.STAT_NAMES


def _is_embedding(name: str) -> bool:
    """A lookup table a token reads one row of: token_embd, pos_embd, token_types, per-layer ones."""
    base = name.removesuffix(".weight")
    return base.endswith("embd") or base == "token_types"


def _split(tensors: Mapping[str, int]) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """(tensors outside the blocks, per block: name without "blk.N." -> bytes)."""
    top: dict[str, int] = {}
    blocks: dict[int, dict[str, int]] = {}
    for name, n in tensors.items():
        m = _BLOCK.fullmatch(name)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = int(n)
        else:
            top[name] = int(n)
    return top, blocks


def _outside_blocks(top: Mapping[str, int]) -> int:
    total = sum(n for name, n in top.items() if not _is_embedding(name))
    if HEAD not in top:  # tied embeddings: the table is the output head
        total += top.get(TOKEN_EMBD, 0)
    return total


def _nm_bytes(layer: Mapping[str, int], projection: str) -> int | None:
    nm = layout.NM_TENSORS[projection]
    if _stem(nm.vals) not in layer:
        return None
    return sum(layer.get(_stem(t), 0) for t in (nm.vals, nm.idx, nm.perm))


def _share(shares: Shares, site: str, block: int) -> float:
    v = shares.get(site)
    if v is None:
        return 0.0
    if isinstance(v, (int, float)):
        return float(v)
    return float(v[block]) if block < len(v) and v[block] is not None else 0.0


def dense_bytes_per_token(tensors: Mapping[str, int]) -> int:
    """Bytes of weights a decode token reads on the dense path (`GGUFSPARSE_DENSE=1`, or a file
    without ggufsparse tensors); tensors: name -> bytes of one GGUF file."""
    top, blocks = _split(tensors)
    total = _outside_blocks(top)
    for layer in blocks.values():
        total += sum(n for stem, n in layer.items() if stem not in _EXTRA)
        for p, w in _WEIGHTS.items():
            if w not in layer:
                total += _nm_bytes(layer, p) or 0
    return total


def _projection(layer: Mapping[str, int], p: str, share, chess: bool) -> float:
    w = layer.get(_WEIGHTS[p], 0)
    if chess and p == "ffn_gate" and _PRED_A in layer:
        return w * (1 - share(_PRED_SITE))
    if chess and p == "ffn_up":
        return w * (1 - share(layout.FFN_SITE))
    if chess and p == "ffn_down" and _DOWN_T in layer:
        site = layout.FFN_DOWN_IN_SITE if _DOWN_IN_THR in layer else layout.FFN_SITE
        return layer[_DOWN_T] * (1 - share(site))
    site, thr, t = _INPUT[p]
    if thr in layer and t in layer:
        return layer[t] * (1 - share(site))
    nm = _nm_bytes(layer, p)
    return w if nm is None else nm


def sparse_bytes_per_token(tensors: Mapping[str, int], shares: Shares) -> float:
    """Bytes of weights a decode token reads on the file's sparse path, at the given shares of
    skipped channels per site (format/layout.py's STAT_NAMES; missing: 0)."""
    top, blocks = _split(tensors)
    total: float = _outside_blocks(top)
    for block, layer in blocks.items():
        def share(site: str, block: int = block) -> float:
            return _share(shares, site, block)

        chess = _GATE_THR in layer
        total += sum(n for stem, n in layer.items()
                     if (stem not in _EXTRA and stem not in _WEIGHTS.values()) or stem in _WHOLE)
        total += sum(_projection(layer, p, share, chess) for p in layout.PROJECTIONS)
    return total


@dataclass(frozen=True)
class Bound:
    dense_bytes_per_token: float
    sparse_bytes_per_token: float

    @property
    def bound(self) -> float | None:
        """dense / sparse bytes: the decode speed-up if decode were bound by reading weights."""
        return self.dense_bytes_per_token / self.sparse_bytes_per_token if self.sparse_bytes_per_token > 0 else None

    def as_dict(self) -> dict:
        return {"bound": self.bound, "dense_bytes_per_token": self.dense_bytes_per_token,
                "sparse_bytes_per_token": self.sparse_bytes_per_token}


def tensor_bytes(path: Path) -> dict[str, int]:
    """name -> bytes of every tensor of a GGUF file (gguf-py's n_bytes)."""
    from ggufsparse.format.gguf_io import open_reader

    return {t.name: int(t.n_bytes) for t in open_reader(path).tensors}
