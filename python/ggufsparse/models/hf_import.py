"""A Hugging Face checkpoint folder -> GGUF, with llama.cpp's own converter and quantizer.

convert_hf_to_gguf.py comes from the runtime's vendored llama.cpp tree and runs with that
tree's gguf-py, so the file matches what the runtime expects; llama-quantize is the built tool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ggufsparse.errors import UserError

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _run(cmd: list[str], env: dict | None, what: str) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        raise UserError(f"{what} failed: {tail[-1] if tail else f'exit code {proc.returncode}'}")


def hf_to_gguf(hf_dir: Path, out: Path, outtype: str = "f16", quantize: str | None = None) -> Path:
    """Convert hf_dir to the GGUF `out` (quantized to `quantize` with llama-quantize if given)."""
    from ggufsparse.runtime.locate import tool, vendored_llama_cpp

    if outtype not in OUTTYPES:
        raise UserError(f"--outtype {outtype}: choose one of {', '.join(OUTTYPES)}")
    tree = vendored_llama_cpp()
    env = {**os.environ, "PYTHONPATH": str(tree / "gguf-py")}
    converted = out if quantize is None else out.with_name(out.name + ".unquantized")
    _run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(converted),
          "--outtype", outtype], env, f"{hf_dir}: convert_hf_to_gguf.py")
    if quantize is not None:
        try:
            _run([str(tool("llama-quantize")), str(converted), str(out), quantize.upper()], None,
                 f"llama-quantize to {quantize}")
        finally:
            converted.unlink(missing_ok=True)
    return out


def hf_activation(hf_dir: Path):
    """The ReLU-family FFN activation hf_dir's config declares (ProSparse checkpoints: `hidden_act`
    relu, or fatrelu with its threshold in `hidden_act_param`), or None for any other."""
    import json

    from ggufsparse.models.activation import Activation

    try:
        config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{hf_dir}/config.json: cannot read ({exc})") from None
    act = config.get("hidden_act")
    if act == "relu":
        return Activation("relu")
    if act == "fatrelu":
        t = config.get("hidden_act_param")
        if not isinstance(t, (int, float)):
            raise UserError(f"{hf_dir}/config.json: hidden_act fatrelu without a numeric hidden_act_param (its threshold)")
        return Activation("fatrelu", float(t))
    return None
