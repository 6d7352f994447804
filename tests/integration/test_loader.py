"""The patched loader: ggufsparse tensors load, malformed files fail with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor
from ggufsparse.runtime import llm, locate
from sparse_files import layer0_extras, version_key, write

pytestmark = [pytest.mark.runtime, pytest.mark.model]

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def extras(default_model):
    return layer0_extras(default_model)


@pytest.fixture(scope="module")
def sparse_file(default_model, extras, tmp_path_factory):
    return write(default_model, tmp_path_factory.mktemp("sparse") / "sparse.gguf", extras)


def _logits(model: Path, tmp_path: Path, lib_dir: Path | None = None) -> np.ndarray:
    out = tmp_path / f"logits-{model.stem}-{'stock' if lib_dir else 'patched'}.npy"
    return logits_of.in_subprocess(model, out, lib_dir)


def _cli_load_error(path: Path) -> str:
    """Load through the CLI in a child process: a crash would show as a signal, not exit 2."""
    proc = subprocess.run([sys.executable, "-m", "ggufsparse", "generate", str(path), "-p", "x", "-n", "1"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("ggufsparse: error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_file_with_sparse_tensors_loads(sparse_file, default_model, tmp_path):
    model = llm.load(sparse_file, n_ctx=128)
    assert model.n_vocab() > 0
    # the tensors are read but not used by the graph yet, so logits equal the original file's
    np.testing.assert_array_equal(_logits(sparse_file, tmp_path), _logits(default_model, tmp_path))


def test_stock_layout_gives_the_same_logits_as_unpatched_llama_cpp(default_model, tmp_path, runtime):
    patched = _logits(default_model, tmp_path)
    stock = _logits(default_model, tmp_path, lib_dir=locate.stock_bin_dir())
    assert patched.shape == stock.shape and patched.shape[0] > 20
    np.testing.assert_allclose(patched, stock, rtol=0, atol=1e-5)
    # a real comparison: the logits vary between positions
    assert np.abs(np.diff(patched, axis=0)).max() > 1.0


def _bad_threshold_shape(extras):
    thr = extras[0]
    return [ExtraTensor(thr.name, np.zeros(thr.data.shape[0] + 1, dtype=np.float32), thr.ggml_type), extras[1]]


def _bad_threshold_type(extras):
    thr = extras[0]
    return [ExtraTensor(thr.name, thr.data.astype(np.float16), gguf.GGMLQuantizationType.F16), extras[1]]


def _bad_transposed_shape(extras):
    w = extras[1]
    return [extras[0], ExtraTensor(w.name, np.ascontiguousarray(w.data.T), w.ggml_type)]


def _packed(extras, trim: int = 0):
    """Layer 0's ffn_down packed (a Q4_1 weight: 20 bytes per output), `trim` bytes short a column."""
    from ggufsparse.format import ggml_quant
    from ggufsparse.models.known import resolve

    reader = gguf.GGUFReader(resolve("default"))
    down = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    n_ff, n_embd = int(down.shape[0]), int(down.shape[1])
    data = ggml_quant.pack_transposed(down.data, down.tensor_type, n_ff, n_embd)
    data = np.ascontiguousarray(data[:, : data.shape[1] - trim])
    return [extras[0], ExtraTensor(extras[1].name, data, gguf.GGMLQuantizationType.I8)]


def _with_up_input_threshold(extras):
    """Layer 0's CHESS extras plus TEAL's threshold on ffn_up's input and its transposed copy."""
    from ggufsparse.format.transpose import transposed
    from ggufsparse.models.known import resolve

    up = next(t for t in gguf.GGUFReader(resolve("default")).tensors if t.name == "blk.0.ffn_up.weight")
    data, qtype = transposed(up.data, up.tensor_type)
    return [*extras, ExtraTensor(layout.FFN_UP_IN_THR.name(0), np.zeros(1, np.float32), gguf.GGMLQuantizationType.F32),
            ExtraTensor(layout.FFN_UP_T.name(0), data, qtype)]


def _down_cut(extras):
    return [*extras, ExtraTensor(layout.FFN_DOWN_IN_THR.name(0), np.zeros(1, np.float32), gguf.GGMLQuantizationType.F32)]


def _act_key(kind: str) -> ExtraKey:
    return ExtraKey(layout.Keys.ACTIVATION, kind, gguf.GGUFValueType.STRING)


def _act_thr(value: float) -> ExtraKey:
    return ExtraKey(layout.Keys.ACTIVATION_THRESHOLD, value, gguf.GGUFValueType.FLOAT32)


def _nm_copy(extras, vals_dtype=np.float16, idx_dtype=np.int8, rows: int = 576):
    """Layer 0's attn_q (576 x 576) with a 2:4 packed copy of zeros beside the valid extras."""
    T = gguf.GGMLQuantizationType
    names = layout.NM_TENSORS["attn_q"]
    vals_type = T.F16 if vals_dtype == np.float16 else T.F32
    idx_type = T.I8 if idx_dtype == np.int8 else T.F32
    return [*extras, ExtraTensor(names.vals.name(0), np.zeros((rows, 288), vals_dtype), vals_type),
            ExtraTensor(names.idx.name(0), np.zeros((576, 72), idx_dtype), idx_type)]


def _nm_key(pattern: str) -> list[ExtraKey]:
    return [version_key(), ExtraKey(layout.Keys.NM_PATTERN, pattern, gguf.GGUFValueType.STRING)]


MALFORMED = {
    "N:M packed copy without the pattern key": (_nm_copy, None, layout.NM_TENSORS["attn_q"].vals.name(0),
                                                layout.Keys.NM_PATTERN),
    "N:M pattern that is not N:M": (_nm_copy, _nm_key("4:2"), layout.Keys.NM_PATTERN, "1 <= N < M <= 16"),
    "N:M positions not i8": (lambda e: _nm_copy(e, idx_dtype=np.float32), _nm_key("2:4"),
                             layout.NM_TENSORS["attn_q"].idx.name(0), "i8"),
    "N:M kept values of the wrong shape": (lambda e: _nm_copy(e, rows=575), _nm_key("2:4"),
                                           layout.NM_TENSORS["attn_q"].vals.name(0), "wrong shape"),
    "packed weight in a format 1 file": (_packed, [version_key(1)], layout.FFN_DOWN_T.name(0),
                                         "packed transposed weight"),
    "packed weight with a wrong column size": (lambda e: _packed(e, trim=64), None, layout.FFN_DOWN_T.name(0),
                                               "packed transposed weight"),
    "threshold of the wrong shape": (_bad_threshold_shape, None, layout.FFN_GATE_THR.name(0), "wrong shape"),
    "threshold not f32": (_bad_threshold_type, None, layout.FFN_GATE_THR.name(0), "must be f32"),
    "transposed weight not transposed": (_bad_transposed_shape, None, layout.FFN_DOWN_T.name(0), "wrong shape"),
    "threshold without its weight": (lambda e: e[:1], None, layout.FFN_GATE_THR.name(0), "partner"),
    "no format version key": (lambda e: e, [], layout.Keys.FORMAT_VERSION, "no"),
    "format version from the future": (lambda e: e, [version_key(layout.FORMAT_VERSION + 1)],
                                       layout.Keys.FORMAT_VERSION, "rebuild the runtime"),
    "CHESS channel and TEAL up-input thresholds in one FFN": (_with_up_input_threshold, None,
                                                              layout.FFN_GATE_THR.name(0), "one kind or the other"),
    "CHESS channels and a cut on down's input in a format 7 file": (_down_cut, [version_key(7)],
                                                                     layout.FFN_DOWN_IN_THR.name(0), "8 or later"),
    "TEAL input threshold without its transposed weight": (
        lambda e: [*e, ExtraTensor(layout.ATTN_K_THR.name(0), np.zeros(1, np.float32), gguf.GGMLQuantizationType.F32)],
        None, layout.ATTN_K_THR.name(0), "partner"),
    "unknown FFN activation": (lambda e: e, [version_key(), _act_key("gelu")], layout.Keys.ACTIVATION,
                               "knows relu and fatrelu"),
    "FATReLU without its threshold": (lambda e: e, [version_key(), _act_key("fatrelu")], layout.Keys.ACTIVATION_THRESHOLD,
                                      "finite, non-negative"),
    "FATReLU with a negative threshold": (lambda e: e, [version_key(), _act_key("fatrelu"), _act_thr(-0.5)],
                                          layout.Keys.ACTIVATION_THRESHOLD, "finite, non-negative"),
    "ReLU with a threshold": (lambda e: e, [version_key(), _act_key("relu"), _act_thr(0.5)],
                              layout.Keys.ACTIVATION_THRESHOLD, "use fatrelu"),
    "activation in a format 3 file": (lambda e: e, [version_key(3), _act_key("relu")], layout.Keys.ACTIVATION,
                                      "format_version' 4"),
    "activation key of the wrong type": (lambda e: e, [version_key(), ExtraKey(layout.Keys.ACTIVATION, 1,
                                                                               gguf.GGUFValueType.UINT32)],
                                         layout.Keys.ACTIVATION, "expected string"),
    "unknown extra tensor": (lambda e: [*e, ExtraTensor("blk.0.ffn_mystery", np.zeros(4, np.float32),
                                                        gguf.GGMLQuantizationType.F32)],
                             None, "blk.0.ffn_mystery", "not used by this model"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_sparse_file_is_refused_with_the_tensor_named(case, default_model, extras, tmp_path):
    mutate, keys, culprit, phrase = MALFORMED[case]
    path = write(default_model, tmp_path / "bad.gguf", mutate(extras), keys)
    with pytest.raises(llm.ModelLoadError) as err:
        llm.load(path, n_ctx=128)
    message = str(err.value)
    assert str(path) in message and culprit in message and phrase in message, message
    line = _cli_load_error(path)
    assert culprit in line and str(path) in line


def test_truncated_file_is_refused(sparse_file, tmp_path):
    data = sparse_file.read_bytes()
    for cut in (len(data) // 2, 64):
        path = tmp_path / f"truncated-{cut}.gguf"
        path.write_bytes(data[:cut])
        line = _cli_load_error(path)
        assert str(path) in line


def test_non_gguf_file_is_refused(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("this is not a model\n" * 100)
    line = _cli_load_error(path)
    assert str(path) in line


def test_sparse_tensors_are_appended_and_originals_byte_identical(default_model, sparse_file):
    src, out = gguf.GGUFReader(default_model), gguf.GGUFReader(sparse_file)
    out_by_name = {t.name: t for t in out.tensors}
    for t in src.tensors:
        assert t.tensor_type == out_by_name[t.name].tensor_type
        assert bytes(t.data) == bytes(out_by_name[t.name].data), t.name
    assert len(out.tensors) == len(src.tensors) + 2
    assert out.fields[layout.Keys.FORMAT_VERSION].contents() == layout.FORMAT_VERSION
