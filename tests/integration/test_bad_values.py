"""A file with a malformed ggufsparse value is refused, by every entrance, with one line naming the
file and the tensor or key: `ggufsparse inspect --check`, `ggufsparse generate` (the patched
loader through llama-cpp-python) and llama.cpp's own llama-cli (the loader in C). No crash, nothing
written.

The files are real conversions of a small synthetic model, then one value edited in place with
gguf-py, as a user (or an attacker) would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, open_reader, write_with_extras
from ggufsparse.runtime import locate

pytestmark = [pytest.mark.runtime, pytest.mark.model]

SMALL = ["--calib-tokens", "1024", "--calib-seq-len", "256", "-q"]
V = gguf.GGUFValueType


def _ggufsparse(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ggufsparse", *args], capture_output=True, text=True,
                          check=False, timeout=timeout)


def _ok(*args: str) -> None:
    proc = _ggufsparse(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good files of each kind whose values the runtime trusts."""
    d = tmp_path_factory.mktemp("bad-values")
    dense = d / "dense.gguf"
    _ok("synth", "--shape", "smollm2-135m", "--type", "f16", "--layers", "2", "-o", str(dense), "-q")
    out = {"dense": dense}
    out["chess"] = d / "chess.gguf"
    _ok("convert", str(dense), "-o", str(out["chess"]), "--method", "chess", "--sparsity", "0.5",
        "--attn-sparsity", "0.5", *SMALL)
    # 2:6: positions take 4 bits, so an index can point past its group of 6
    out["nm"] = d / "nm.gguf"
    _ok("convert", str(dense), "-o", str(out["nm"]), "--method", "wanda", "--nm", "2:6", "--nm-shuffle", "global",
        "--nm-storage", "masked+packed", *SMALL)
    out["predictor"] = d / "predictor.gguf"
    _ok("predictor", str(out["chess"]), "-o", str(out["predictor"]), "--random", "0.5", "--rank", "16", "--pred-type", "f16", "-q")
    return out


def _edited(src: Path, dst: Path, tensor: str, edit) -> Path:
    """dst: a copy of src with edit(values) applied to one tensor's data in place."""
    shutil.copyfile(src, dst)
    reader = gguf.GGUFReader(dst, "r+")
    t = next(t for t in reader.tensors if t.name == tensor)
    edit(t.data)
    if hasattr(t.data, "flush"):
        t.data.flush()
    del reader
    return dst


def _with_key(src: Path, dst: Path, key: ExtraKey) -> Path:
    write_with_extras(src, dst, [key], [], progress=False)
    return dst


def _set(index, value):
    def edit(data):
        data.reshape(-1)[index] = value
    return edit


def _idx_past_group(data):
    data.reshape(-1).view(np.uint8)[0] = 0xFF  # first two positions: 15 of a group of 6


def _perm_repeated(data):
    flat = data.reshape(-1)
    flat[1] = flat[0]


def _pred_a_nan(data):
    data.reshape(-1).view(np.float16)[7] = np.float16(np.nan)


def _layers(path: Path) -> int:
    return int(open_reader(path).fields["llama.block_count"].contents())


# (case, source file, what is edited, the name the error must carry, how)
TENSOR_CASES = [
    ("nan_threshold", "chess", "blk.1.ffn_gate_thr", _set(3, np.nan)),
    ("negative_threshold", "chess", "blk.0.ffn_gate_thr", _set(0, -1.0)),
    ("inf_threshold", "chess", "blk.1.attn_q_thr", _set(0, np.inf)),
    ("minus_inf_threshold", "chess", "blk.0.attn_output_thr", _set(0, -np.inf)),
    ("nm_index_past_its_group", "nm", "blk.1.ffn_down_nm_idx", _idx_past_group),
    ("nm_permutation_repeats", "nm", "blk.0.attn_q_nm_perm", _perm_repeated),
    ("nan_predictor_weight", "predictor", "blk.1.ffn_pred_a.weight", _pred_a_nan),
    ("inf_predictor_cutoff", "predictor", "blk.0.ffn_pred_thr", _set(2, np.inf)),
]


K = layout.Keys
# (case, source file, the key, its bad value for a model of n layers)
KEY_CASES = [
    ("per_layer_array_too_short", "chess", K.CALIB_FFN_SPARSITY,
     lambda n: ExtraKey(K.CALIB_FFN_SPARSITY, [0.5] * (n - 1), V.ARRAY, V.FLOAT32)),
    ("per_layer_share_out_of_range", "chess", K.CALIB_ATTN_Q_SPARSITY,
     lambda n: ExtraKey(K.CALIB_ATTN_Q_SPARSITY, [0.5] * (n - 1) + [1.5], V.ARRAY, V.FLOAT32)),
    ("per_layer_array_nan", "chess", K.CALIB_FFN_SPARSITY,
     lambda n: ExtraKey(K.CALIB_FFN_SPARSITY, [float("nan")] * n, V.ARRAY, V.FLOAT32)),
    ("unparseable_recipe", "chess", K.RECIPE, lambda n: ExtraKey(K.RECIPE, '{"method": "chess", ', V.STRING)),
    ("nm_record_lengths_differ", "nm", K.NM_KEPT_SCORE,
     lambda n: ExtraKey(K.NM_KEPT_SCORE, [0.9], V.ARRAY, V.FLOAT32)),
]


def _assert_refused(bad: Path, name: str, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())

    # 1. inspect --check: exit 2, one line, file and name
    proc = _ggufsparse("inspect", "--check", str(bad))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert str(bad) in lines[0] and f"'{name}'" in lines[0], lines[0]
    assert proc.stdout == ""

    # 2. the runtime through ggufsparse: the patched loader's own message, one line
    proc = _ggufsparse("generate", str(bad), "-p", "x", "-n", "1")
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert proc.returncode == 2 and len(lines) == 1, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert lines[0].startswith("ggufsparse: error:") and str(bad) in lines[0] and f"'{name}'" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr

    # 3. llama.cpp's own tool: a clean failure (an exit code, not a signal) naming the value
    proc = subprocess.run([str(locate.tool("llama-cli")), "-m", str(bad), "-p", "x", "-n", "1", "--single-turn"],
                          capture_output=True, text=True, check=False, timeout=120, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode}: {out[-2000:]}"
    assert "error loading model:" in out and f"'{name}'" in out, out[-2000:]

    # nothing written beside the file
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_good_files_pass_the_check(files):
    for kind in ("chess", "nm", "predictor"):
        proc = _ggufsparse("inspect", "--check", str(files[kind]))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{files[kind]}: ok") and proc.stderr == ""


@pytest.mark.parametrize("case,kind,name,edit", TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES])
def test_a_bad_tensor_value_is_refused_by_every_entrance(files, tmp_path, case, kind, name, edit):
    bad = _edited(files[kind], tmp_path / f"{case}.gguf", name, edit)
    _assert_refused(bad, name, tmp_path)


@pytest.mark.parametrize("case,kind,name,key", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_a_bad_record_is_refused_by_every_entrance(files, tmp_path, case, kind, name, key):
    bad = _with_key(files[kind], tmp_path / f"{case}.gguf", key(_layers(files[kind])))
    _assert_refused(bad, name, tmp_path)
