"""What `ggufsparse inspect` reports about a GGUF: its method, recipe, per-layer calibration
sparsity, and the extra tensors with their sizes."""

from __future__ import annotations

import json
from pathlib import Path

from ggufsparse.format import layout
from ggufsparse.format.gguf_io import open_reader


def describe(path: Path) -> dict:
    reader = open_reader(path)
    fields = reader.fields

    def value(key: str):
        f = fields.get(key)
        return None if f is None else f.contents()

    extras, original = [], 0
    for t in reader.tensors:
        if layout.is_sparse_tensor(t.name):
            extras.append({"name": t.name, "type": t.tensor_type.name, "shape": [int(n) for n in t.shape],
                           "bytes": int(t.n_bytes)})
        else:
            original += int(t.n_bytes)
    extra_bytes = sum(e["bytes"] for e in extras)
    recipe = value(layout.Keys.RECIPE)
    return {
        "file": str(path),
        "architecture": value("general.architecture"),
        "name": value("general.name"),
        "sparse": layout.Keys.FORMAT_VERSION in fields,
        "format_version": value(layout.Keys.FORMAT_VERSION),
        "tool_version": value(layout.Keys.TOOL_VERSION),
        "method": value(layout.Keys.METHOD),
        "targets": value(layout.Keys.TARGETS),
        "recipe": json.loads(recipe) if recipe else None,
        "calibration": {"file": value(layout.Keys.CALIB_FILE), "sha256": value(layout.Keys.CALIB_SHA256),
                        "tokens": value(layout.Keys.CALIB_TOKENS)},
        "calibration_sparsity": {
            "ffn": value(layout.Keys.CALIB_FFN_SPARSITY),
            **{site: value(layout.calib_sparsity_key(site)) for site in layout.INPUT_SITES},
        },
        "teal": None if value(layout.Keys.TEAL_ALLOCATION) is None else {
            "allocation": value(layout.Keys.TEAL_ALLOCATION), "sparsity": value(layout.Keys.TEAL_SPARSITY),
            "block_sparsity": value(layout.Keys.TEAL_BLOCK_SPARSITY)},
        "allocation": None if value(layout.Keys.ALLOC_METHOD) is None else {
            "method": value(layout.Keys.ALLOC_METHOD), "used": value(layout.Keys.ALLOC_USED),
            "budget": value(layout.Keys.ALLOC_BUDGET), "file": value(layout.Keys.ALLOC_FILE),
            "sha256": value(layout.Keys.ALLOC_SHA256), "windows": value(layout.Keys.ALLOC_WINDOWS),
            "kl_predicted": value(layout.Keys.ALLOC_KL_PREDICTED), "kl_measured": value(layout.Keys.ALLOC_KL_MEASURED),
            "splits": {"gate_level": value(layout.Keys.ALLOC_SPLIT_LEVEL) or [],
                       "kl_measured": value(layout.Keys.ALLOC_SPLIT_KL) or []},
            "levels": {"ffn": value(layout.Keys.ALLOC_FFN_LEVEL), "attn_q": value(layout.Keys.ALLOC_ATTN_Q_LEVEL),
                       "attn_output": value(layout.Keys.ALLOC_ATTN_OUT_LEVEL)}},
        "activation": None if value(layout.Keys.ACTIVATION) is None else {
            "kind": value(layout.Keys.ACTIVATION), "threshold": value(layout.Keys.ACTIVATION_THRESHOLD)},
        "finetune": None if value(layout.Keys.FINETUNE_STEPS) is None else {
            "steps": value(layout.Keys.FINETUNE_STEPS), "tokens": value(layout.Keys.FINETUNE_TOKENS),
            "file": value(layout.Keys.FINETUNE_FILE), "sha256": value(layout.Keys.FINETUNE_SHA256)},
        "nm": None if value(layout.Keys.NM_PATTERN) is None else {
            "pattern": value(layout.Keys.NM_PATTERN), "storage": value(layout.Keys.NM_STORAGE),
            "tensors": value(layout.Keys.NM_TENSORS), "kept_score": value(layout.Keys.NM_KEPT_SCORE)},
        "predictor": None if value(layout.Keys.PREDICTOR_KIND) is None else {
            "kind": value(layout.Keys.PREDICTOR_KIND), "rank": value(layout.Keys.PREDICTOR_RANK),
            "predicted": value(layout.Keys.PREDICTOR_PREDICTED), "recall": value(layout.Keys.PREDICTOR_RECALL),
            "recall_target": value(layout.Keys.PREDICTOR_RECALL_TARGET), "file": value(layout.Keys.PREDICTOR_FILE)},
        "extra_tensors": extras,
        "original_bytes": original,
        "extra_bytes": extra_bytes,
        "overhead": extra_bytes / original if original else 0.0,
    }


def _sparsity_lines(sp: dict) -> list[str]:
    """One column per sparse site (and TEAL's parameter-weighted block level), one row per layer."""
    cols = {name: v for name, v in sp.items() if v}
    lines = ["  sparsity on calibration text, per layer:",
             "    layer" + "".join(f" {name:>11s}" for name in cols)]
    n_layers = len(next(iter(cols.values())))
    for i in range(n_layers):
        lines.append(f"    {i:5d}" + "".join(f" {v[i]:11.3f}" for v in cols.values()))
    lines.append("     mean" + "".join(f" {sum(v) / len(v):11.3f}" for v in cols.values()))
    return lines


def _allocation_lines(a: dict) -> list[str]:
    first, count = a["windows"]
    pred, meas = a["kl_predicted"], a["kl_measured"]
    kept = {"allocated": "as allocated", "split": "uniform, the FFN split between channels and down's input"}.get(
        a["used"], "uniform (neither the allocation nor a split won)")
    splits = a["splits"]
    tried = ", ".join(f"channels {g:.3f} {kl:.4f}" for g, kl in zip(splits["gate_level"], splits["kl_measured"]))
    return [f"  allocation: {a['method']}, {100 * a['budget']:.1f}% of the sparse weights skipped; levels {kept}",
            f"    sensitivity text: {a['file']} windows {first}..{first + count - 1} (held out from calibration)",
            (f"    KL to dense there: uniform {meas[0]:.4f}, allocated {meas[1]:.4f} "
             f"(predicted {pred[0]:.4f}, {pred[1]:.4f})")] + ([f"    FFN splits: {tried}"] if tried else [])


def _nm_lines(nm: dict) -> list[str]:
    """Per pruned tensor kind, how many tensors and the mean fraction of their score kept."""
    kinds: dict[str, list[float]] = {}
    for name, kept in zip(nm["tensors"], nm["kept_score"]):
        kinds.setdefault(name.split(".", 2)[2], []).append(kept)
    lines = [(f"  N:M {nm['pattern']}, storage {nm['storage']}: {len(nm['tensors'])} tensors pruned; "
             "score kept, mean per kind:")]
    lines += [f"    blk.*.{kind:24s} {len(v):3d}  {sum(v) / len(v):.3f}" for kind, v in kinds.items()]
    if nm["storage"] == "packed":
        lines.append("    stored packed only: the pruned weights have no dense tensor (original tensors below exclude them)")
    return lines


def _predictor_line(p: dict) -> str:
    on = sum(p["predicted"]) / len(p["predicted"])
    if p["kind"] == "random":
        return f"  predictors: random (synthetic), rank {p['rank']}, {on:.3f} of gate rows on"
    recall = sum(p["recall"]) / len(p["recall"])
    return (f"  predictors: rank {p['rank']}, trained on {p['file']}; held out: {on:.3f} of gate rows computed, "
            f"recall {recall:.4f} (target {p['recall_target']:.3f})")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_report(d: dict) -> str:
    lines = [f"{d['file']}: {d['architecture']} ({d['name']})"]
    if not d["sparse"]:
        lines.append("  no ggufsparse data: a dense model")
        return "\n".join(lines)
    lines.append(f"  method: {d['method']}   targets: {', '.join(d['targets']) or '-'}   "
                 f"format {d['format_version']}, written by ggufsparse {d['tool_version']}")
    lines.append(f"  recipe: {json.dumps(d['recipe'], sort_keys=True)}")
    c = d["calibration"]
    if c["file"] is not None:
        lines.append(f"  calibration: {c['file']}, {c['tokens']} tokens, sha256 {c['sha256'][:16]}...")
    if d["activation"]:
        a = d["activation"]
        lines.append(f"  FFN activation: {a['kind']}" + (f", threshold {a['threshold']:g}" if a["kind"] == "fatrelu" else ""))
    if d["finetune"]:
        f = d["finetune"]
        lines.append(f"  fine-tuned: {f['steps']} steps, {f['tokens']} tokens of {f['file']} (sha256 {f['sha256'][:16]}...); "
                     "sparsity below: held-out windows of that text")
    if d["nm"]:
        lines += _nm_lines(d["nm"])
    if d["allocation"]:
        lines += _allocation_lines(d["allocation"])
    if d["predictor"]:
        lines.append(_predictor_line(d["predictor"]))
    sp = dict(d["calibration_sparsity"])
    if d["teal"]:
        t = d["teal"]
        lines.append(f"  TEAL: {t['allocation']} allocation within each block, target {t['sparsity']:.3f} "
                     "(the parameter-weighted level of its sparse projections)")
        sp["block"] = t["block_sparsity"]
    if any(sp.values()):
        lines += _sparsity_lines(sp)
    by_kind: dict[str, list] = {}
    for e in d["extra_tensors"]:
        by_kind.setdefault(e["name"].split(".", 2)[2], []).append(e)
    lines.append(f"  extra tensors: {len(d['extra_tensors'])}")
    for kind, items in by_kind.items():
        types = sorted({e["type"] for e in items})
        shape = "x".join(str(n) for n in items[0]["shape"])
        lines.append(f"    blk.*.{kind:24s} {len(items):3d} x {{{shape}}} {'/'.join(types):6s} "
                     f"{_mib(sum(e['bytes'] for e in items))}")
    lines.append(f"  size: original tensors {_mib(d['original_bytes'])}, extra {_mib(d['extra_bytes'])} "
                 f"(+{100 * d['overhead']:.1f}%)")
    return "\n".join(lines)
