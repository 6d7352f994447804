#!/usr/bin/env python3
"""Move the CHESS/CATS thresholds of a converted file onto another file with the same layers.

Made for benchmarks away from this machine: the synthetic models of `ggufsparse synth` are the
same random weights whatever their type (each tensor is drawn from its own seed, then quantized),
so the thresholds that `ggufsparse convert` calibrated on one of them reach nearly the same
sparsity on another. `extract` keeps a converted file's thresholds and ggufsparse.* metadata in a
small .npz; `apply` writes MODEL plus those thresholds and the transposed copies they need (as
`ggufsparse convert` writes them) without loading a model or reading text.

  python scripts/graft_thresholds.py extract s7b-chess55.gguf chess55.npz
  python scripts/graft_thresholds.py apply s7b-f16.gguf chess55.npz s7b-f16-chess55.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, check_writable, field_types, open_reader, write_with_extras
from ggufsparse.pipeline.convert import _extras
from ggufsparse.pipeline.results import LayerResult

PREFIX = "ggufsparse."


def extract(donor: Path, out: Path) -> None:

    reader = open_reader(donor)
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors if t.name.endswith("_thr")}
    if not tensors:
        raise UserError(f"{donor}: no threshold tensors; give a file converted with --method chess or cats")
    keys = []
    for name, field in reader.fields.items():
        if name.startswith(PREFIX):
            vtype, sub = field_types(field)
            keys.append([name, field.contents(), int(vtype), None if sub is None else int(sub)])
    np.savez(out, keys=np.array(json.dumps(keys)), **{f"t:{k}": v for k, v in tensors.items()})


def apply(model: Path, npz: Path, out: Path, force: bool) -> None:
    import gguf

    check_writable(out, force)
    saved = np.load(npz)
    thresholds = {k[2:]: saved[k] for k in saved.files if k.startswith("t:")}
    reader = open_reader(model)
    layers = sorted({int(name.split(".")[1]) for name in thresholds})
    results = []
    for i in layers:
        ffn = thresholds.get(layout.FFN_GATE_THR.name(i))
        q = thresholds.get(layout.ATTN_Q_THR.name(i))
        o = thresholds.get(layout.ATTN_OUT_THR.name(i))
        results.append(LayerResult(ffn, None, None if q is None else float(q[0]), None,
                                   None if o is None else float(o[0]), None))
    if layers != list(range(len(layers))):
        raise UserError(f"{npz}: thresholds for layers {layers}; every layer from 0 is needed")
    keys = [ExtraKey(k, v, gguf.GGUFValueType(t), None if s is None else gguf.GGUFValueType(s))
            for k, v, t, s in json.loads(str(saved["keys"]))]
    write_with_extras(model, out, keys, _extras(reader, results, progress=False), force=force, progress=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="thresholds and metadata of a converted file into an .npz")
    e.add_argument("donor", type=Path)
    e.add_argument("npz", type=Path)
    a = sub.add_parser("apply", help="MODEL plus the thresholds of an .npz, with transposed copies")
    a.add_argument("model", type=Path)
    a.add_argument("npz", type=Path)
    a.add_argument("output", type=Path)
    a.add_argument("--force", action="store_true")
    args = p.parse_args()
    try:
        if args.cmd == "extract":
            extract(args.donor, args.npz)
        else:
            apply(args.model, args.npz, args.output, args.force)
    except UserError as err:
        print(f"graft_thresholds: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
