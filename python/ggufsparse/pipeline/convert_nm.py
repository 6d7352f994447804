"""`ggufsparse convert --method magnitude|wanda|esparse`: N:M-prune a GGUF's projections.

Glue only: nm_prune chooses the masks (calibrating layer by layer), nm_pack packs them, this
writes the file. Storage `packed` (the default) writes each pruned weight only as its packed copy,
which decode reads and prompts expand to a dense weight at run time; the original tensor is left
out, so the file shrinks. Its kept values are F16 where the runtime cannot expand their type at the
pattern (nm_pack.runtime_expands). Storage `masked` writes each pruned weight in place of the
original with its pruned weights zeroed, as F16 when the original is quantized (a quantized block
cannot hold exact zeros beside its kept values in every type, and F16 holds the dequantized kept
values), in its own type otherwise. Storage `masked+packed` writes both; then the zeroed weight
holds the packed copy's values (after their requantisation), so prompts and decode multiply by the
same weights, and a Q8_0 or Q4_0 weight without a channel shuffle stays in its type
(nm_pack.expand_blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from ggufsparse import __version__
from ggufsparse.calib import layers as calib_layers
from ggufsparse.calib import text as calib_text
from ggufsparse.errors import UserError
from ggufsparse.format import layout, nm_pack
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor, dequantize_rows, write_with_extras
from ggufsparse.methods import Pattern, parse_pattern
from ggufsparse.methods.nm_prune import NMPlan, PruneResult, dense_blocks, prune, prune_by_magnitude
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.models.torch_model import GGUFTorchModel
from ggufsparse.pipeline.recipe import Recipe
from ggufsparse.pipeline.results import NMConvertResult


@dataclass(frozen=True)
class _NoCalibration:
    """The calibration record of a magnitude conversion, which reads no text."""

    source: str = "none (magnitude scores need no calibration text)"
    sha256: str = ""
    n_tokens: int = 0


NO_CALIBRATION = _NoCalibration()


def block_count(reader) -> int:
    for name, f in reader.fields.items():
        if name.endswith(".block_count"):
            return int(f.contents())
    raise UserError(f"{reader.data.filename}: no block_count in the GGUF metadata")


def plan_of(recipe: Recipe) -> NMPlan:
    nm = recipe.nm
    return NMPlan(parse_pattern(nm.pattern), recipe.method, recipe.shuffle, nm.alpha, nm.bins, nm.block, nm.passes,
                  dense_blocks=tuple(nm.dense_blocks))


def _zeroed_type(source):
    T = gguf.GGMLQuantizationType
    return source if source in (T.F32, T.F16, T.BF16) else T.F16


@dataclass
class _Written:
    zeroed: list[ExtraTensor]  # replacing the originals
    packed: list[ExtraTensor]  # added
    dropped: set[str]  # originals left out (storage packed)


def _tensors(reader, pruned: PruneResult, pattern: Pattern, storage: str) -> _Written:
    T = gguf.GGMLQuantizationType
    by_name = {t.name: t for t in reader.tensors}
    zeroed, packed_copies, dropped = [], [], set()
    for w in pruned.weights:
        # dequantized again rather than kept from pruning: one weight in memory at a time
        src = by_name[w.name]
        values = dequantize_rows(src.data, src.tensor_type).astype(np.float32) * w.mask
        if storage in ("packed", "masked+packed"):
            packed = nm_pack.pack(values, w.mask, w.perm, pattern)
            qtype = nm_pack.packed_type(src.tensor_type, packed.kept.shape[1])
            if storage == "packed" and not nm_pack.runtime_expands(qtype, pattern):
                qtype = T.F16
            data = nm_pack.quantize_kept(packed.kept, qtype)
            k = values.shape[1]
            names = layout.NM_TENSORS[w.name.split(".")[2]]
            block = int(w.name.split(".")[1])
            packed_copies += [ExtraTensor(names.vals.name(block), data, qtype),
                              ExtraTensor(names.idx.name(block), packed.idx.view(np.int8), T.I8)]
            if packed.perm is not None:
                packed_copies.append(ExtraTensor(names.perm.name(block), packed.perm, T.I32))
            if storage == "packed":
                dropped.add(w.name)
                continue
            if nm_pack.expandable(qtype, packed.perm, pattern) and qtype == src.tensor_type:
                # the original type, holding exactly the packed values: prompts keep its fast products
                zeroed.append(ExtraTensor(w.name, nm_pack.expand_blocks(data, packed.idx, k, pattern, qtype), qtype))
                continue
            values = nm_pack.unpack(nm_pack.kept_as_stored(data, qtype), packed.idx, packed.perm, k, pattern)
        qtype = _zeroed_type(src.tensor_type)
        zeroed.append(ExtraTensor(w.name, gguf.quants.quantize(values, qtype), qtype))
    return _Written(zeroed, packed_copies, dropped)


def _keys(recipe: Recipe, pruned: PruneResult, calib) -> list[ExtraKey]:
    V = gguf.GGUFValueType
    return [
        ExtraKey(layout.Keys.FORMAT_VERSION, layout.FORMAT_VERSION, V.UINT32),
        ExtraKey(layout.Keys.TOOL_VERSION, __version__, V.STRING),
        ExtraKey(layout.Keys.METHOD, recipe.method, V.STRING),
        ExtraKey(layout.Keys.TARGETS, list(plan_of(recipe).projections), V.ARRAY, V.STRING),
        ExtraKey(layout.Keys.RECIPE, recipe.to_json(), V.STRING),
        ExtraKey(layout.Keys.CALIB_FILE, calib.source, V.STRING),
        ExtraKey(layout.Keys.CALIB_SHA256, calib.sha256, V.STRING),
        ExtraKey(layout.Keys.CALIB_TOKENS, calib.n_tokens, V.UINT64),
        ExtraKey(layout.Keys.NM_PATTERN, recipe.nm.pattern, V.STRING),
        ExtraKey(layout.Keys.NM_STORAGE, recipe.storage, V.STRING),
        ExtraKey(layout.Keys.NM_TENSORS, [w.name for w in pruned.weights], V.ARRAY, V.STRING),
        ExtraKey(layout.Keys.NM_KEPT_SCORE, [w.kept_score for w in pruned.weights], V.ARRAY, V.FLOAT32),
    ]


def convert_nm(source: Path, reader, out: Path, recipe: Recipe, calib_file: Path, *, force: bool,
               progress: bool, dtype: str) -> NMConvertResult:
    plan = plan_of(recipe)
    if plan.score == "magnitude":
        calib = NO_CALIBRATION
        n_layers = block_count(reader)
        with tqdm(total=n_layers, desc="pruning", unit="layer", disable=not progress) as bar:
            pruned = prune_by_magnitude(reader, plan, n_layers, bar.update)
    else:
        tokenize, bos = gguf_tokenizer(source)
        calib = calib_text.load(calib_file, tokenize, bos, recipe.calib_tokens, recipe.calib_seq_len)
        tm = GGUFTorchModel(source, dtype)
        with_stats = tm.n_layers - len(dense_blocks(plan, tm.n_layers))
        total = (tm.n_layers + with_stats) * len(calib.windows)
        with tqdm(total=total, desc="pruning", unit="win", disable=not progress) as bar:
            pruned = prune(tm, calib.windows, plan, calib_layers.Progress(bar.update))
    written = _tensors(reader, pruned, plan.pattern, recipe.storage)
    write_with_extras(source, out, _keys(recipe, pruned, calib), written.packed, force=force, progress=progress,
                      replace=written.zeroed, drop=written.dropped)
    original = sum(int(t.n_bytes) for t in reader.tensors)
    return NMConvertResult(out, pruned, calib.n_tokens, original, Path(out).stat().st_size)
