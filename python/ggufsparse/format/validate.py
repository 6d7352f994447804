"""`ggufsparse inspect --check`: every ggufsparse value of a file, checked the way the patched
loader checks it (patches/0003, llama-sparse-model.cpp), and the file's tensors against its own
metadata. The ranges are those of docs/format.md ("Values").

This is a second, independent reading of the same rules: the runtime refuses a bad file at load
time whatever reads it; this one names the problem without loading a model, and also checks what
only the converter's record says (targets, N:M tensor list).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.format import layout, nm_pack
from ggufsparse.format.gguf_io import dequantize_rows, open_reader

K = layout.Keys

# thresholds compare with magnitudes: finite and >= 0 (a predictor's cut-off is on a logit: any sign)
MAGNITUDE_THRESHOLDS = (layout.FFN_GATE_THR, *(thr for thr, _ in layout.INPUT_SITES.values()))
PREDICTOR_VALUES = (layout.FFN_PRED_A, layout.FFN_PRED_B, layout.FFN_PRED_THR)

# the converter's record: per-layer shares in [0, 1]
PER_LAYER_SHARES = (K.ALLOC_FFN_LEVEL, K.ALLOC_ATTN_Q_LEVEL, K.ALLOC_ATTN_OUT_LEVEL, K.TEAL_BLOCK_SPARSITY,
                    K.PREDICTOR_RECALL, K.PREDICTOR_PREDICTED)
_CALIB_SHARE = re.compile(r"^ggufsparse\.calibration\..+_sparsity$")
# arrays that go together, one value each
PAIRED_ARRAYS = ((K.ALLOC_SPLIT_LEVEL, K.ALLOC_SPLIT_KL), (K.NM_TENSORS, K.NM_KEPT_SCORE))

_BLOCK = re.compile(r"^blk\.(\d+)\.")


class BadFile(UserError):
    """A file whose ggufsparse values or record are malformed (one line, naming file and tensor or key)."""


@dataclass
class CheckReport:
    file: str
    format_version: int | None
    sparse_tensors: int
    values_checked: int  # threshold, predictor and index values read
    sites: list[str] = field(default_factory=list)  # sites with tensors, by ggufsparse.targets' names

    def as_dict(self) -> dict:
        return {"file": self.file, "ok": True, "format_version": self.format_version,
                "sparse_tensors": self.sparse_tensors, "values_checked": self.values_checked, "sites": self.sites}


def is_per_layer_share(key: str) -> bool:
    return key in PER_LAYER_SHARES or bool(_CALIB_SHARE.match(key))


def check(path: Path) -> CheckReport:
    """The report of a good file; BadFile naming the first problem otherwise."""
    path = Path(path)
    reader = open_reader(path)

    def bad(msg: str) -> BadFile:
        return BadFile(f"{path}: {msg}")

    fields = reader.fields
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
    n_layer = fields[f"{arch}.block_count"].contents() if f"{arch}.block_count" in fields else None
    tensors = {t.name: t for t in reader.tensors}
    sparse = [t for t in reader.tensors if layout.is_sparse_tensor(t.name)]

    version = fields[K.FORMAT_VERSION].contents() if K.FORMAT_VERSION in fields else None
    if sparse and version is None:
        raise bad(f"has ggufsparse tensors ('{sparse[0].name}') but no '{K.FORMAT_VERSION}' key")
    if version is not None and not 1 <= version <= layout.FORMAT_VERSION:
        raise bad(f"key '{K.FORMAT_VERSION}' is {version}; this version of ggufsparse reads 1 to {layout.FORMAT_VERSION}")

    _check_record(fields, n_layer, bad)
    checked = 0
    for t in sparse:
        stem = _BLOCK.sub("", t.name)
        if any(stem == _stem(s) for s in MAGNITUDE_THRESHOLDS):
            checked += _check_values(t, magnitude=True, bad=bad)
        elif any(stem == _stem(s) for s in PREDICTOR_VALUES):
            checked += _check_values(t, magnitude=False, bad=bad)
    checked += _check_nm(fields, tensors, bad)
    sites = _check_against_record(fields, tensors, bad)
    return CheckReport(str(path), version, len(sparse), checked, sites)


def _stem(t: layout.SparseTensor) -> str:
    return f"{t.stem}.{t.suffix}" if t.suffix else t.stem


def _check_values(t, *, magnitude: bool, bad) -> int:
    values = np.asarray(t.data if t.tensor_type.name == "F32" else dequantize_rows(t.data, t.tensor_type),
                        dtype=np.float32).reshape(-1)
    wrong = ~np.isfinite(values) | (values < 0) if magnitude else ~np.isfinite(values)
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        rule = "finite and >= 0 (thresholds on magnitudes)" if magnitude else "finite"
        raise bad(f"tensor '{t.name}' has {values[i]:g} at [{i}]; its values must be {rule}")
    return values.size


def _check_nm(fields, tensors, bad) -> int:
    """N:M positions inside their groups, permutations permutations."""
    checked = 0
    pattern = fields[K.NM_PATTERN].contents() if K.NM_PATTERN in fields else None
    for name, t in tensors.items():
        stem = _BLOCK.sub("", name)
        if stem.endswith("_nm_perm"):
            perm = np.asarray(t.data, dtype=np.int64).reshape(-1)
            seen = np.zeros(perm.size, dtype=bool)
            for c in perm.tolist():
                if not 0 <= c < perm.size or seen[c]:
                    raise bad(f"tensor '{name}' is not a permutation of 0..{perm.size - 1} (value {c})")
                seen[c] = True
            checked += perm.size
        elif stem.endswith("_nm_idx"):
            if pattern is None:
                raise bad(f"tensor '{name}' needs the '{K.NM_PATTERN}' key")
            m = int(str(pattern).split(":")[1])
            vals = tensors.get(name.replace("_nm_idx", "_nm.weight"))
            if vals is None:
                raise bad(f"tensor '{name}' has no kept values '{name.replace('_nm_idx', '_nm.weight')}'")
            kept = int(vals.shape[0])
            pos = nm_pack.positions(np.asarray(t.data, dtype=np.uint8).view(np.uint8), kept, m)
            if (pos >= m).any():
                row, j = (int(v) for v in np.argwhere(pos >= m)[0])
                raise bad(f"tensor '{name}' places kept value {j} of row {row} at position {int(pos[row, j])} "
                          f"of a group of {m}")
            checked += pos.size
    return checked


def _check_record(fields, n_layer, bad) -> None:
    for key, f in fields.items():
        if not key.startswith("ggufsparse."):
            continue
        vtype = f.types[0].name
        is_f32_array = vtype == "ARRAY" and f.types[-1].name == "FLOAT32"
        if is_per_layer_share(key) and (not is_f32_array or len(f.contents()) != n_layer):
            has = len(f.contents()) if is_f32_array else vtype.lower()
            raise bad(f"key '{key}' must hold one f32 per layer ({n_layer}); it has {has}")
        values = f.contents() if is_f32_array else [f.contents()] if vtype == "FLOAT32" else []
        for i, v in enumerate(values):
            if not math.isfinite(v) or (is_per_layer_share(key) and not 0.0 <= v <= 1.0):
                rule = "shares in [0, 1]" if is_per_layer_share(key) else "finite"
                raise bad(f"key '{key}' has {v:g} at [{i}]; its values must be {rule}")
    for a, b in PAIRED_ARRAYS:
        la = len(fields[a].contents()) if a in fields else -1
        lb = len(fields[b].contents()) if b in fields else -1
        if la != lb:
            raise bad(f"keys '{a}' ({la} values) and '{b}' ({lb}) go together, one value each")
    if K.RECIPE in fields:
        try:
            json.loads(fields[K.RECIPE].contents())
        except (ValueError, TypeError):
            raise bad(f"key '{K.RECIPE}' is not a JSON string") from None
    if K.ACTIVATION in fields:
        act = fields[K.ACTIVATION].contents()
        thr = fields[K.ACTIVATION_THRESHOLD].contents() if K.ACTIVATION_THRESHOLD in fields else 0.0
        if act not in layout.ACTIVATIONS:
            raise bad(f"key '{K.ACTIVATION}' is '{act}'; known: {', '.join(layout.ACTIVATIONS)}")
        if not (math.isfinite(thr) and thr >= 0) or (act == "relu" and thr != 0):
            raise bad(f"key '{K.ACTIVATION_THRESHOLD}' is {thr:g}; fatrelu takes a finite threshold >= 0, relu 0")


def _check_against_record(fields, tensors, bad) -> list[str]:
    """ggufsparse.targets and ggufsparse.nm.tensors against the tensors the file has."""
    have: set[str] = set()
    for name in tensors:
        stem = _BLOCK.sub("", name)
        if stem == layout.FFN_GATE_THR.stem:
            have.add(layout.TARGET_FFN)
        for site, (thr, _) in layout.INPUT_SITES.items():
            if stem == thr.stem:
                have.add(site)
    if K.TARGETS in fields:
        targets = set(fields[K.TARGETS].contents())
        # ffn_down_in is recorded under "ffn" when it rides on CHESS's channel thresholds
        # N:M pruning's targets are projections, whose pruned weights may be stored masked only
        pruned = K.NM_PATTERN in fields
        missing = sorted(t for t in targets if t not in have and not pruned)
        if missing:
            raise bad(f"key '{K.TARGETS}' lists '{missing[0]}', but the file has no threshold for it")
    if K.NM_TENSORS in fields:
        for name in fields[K.NM_TENSORS].contents():
            stem = _BLOCK.sub("", name).removesuffix(".weight")
            packed = name.replace(f"{stem}.weight", f"{stem}_nm.weight")
            if name not in tensors and packed not in tensors:
                raise bad(f"key '{K.NM_TENSORS}' lists '{name}', which the file has neither dense nor packed")
    return sorted(have)
