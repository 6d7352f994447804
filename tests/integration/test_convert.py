"""`ggufsparse convert` on the real default model: output contract, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
from ggufsparse import cli
from ggufsparse.calib.text import default_calibration_file
from ggufsparse.format import layout
from packed_layout import unpack

pytestmark = [pytest.mark.runtime, pytest.mark.model]

# small calibration so the suite stays quick; the method is the same at any size
SMALL = ["--calib-tokens", "2048", "--calib-seq-len", "256", "-q"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


def in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """`ggufsparse ARGS` through the CLI's main in this process: the error paths without starting a
    process (and importing torch) for each case; a process's own behaviour is tested by `run`."""
    capsys.readouterr()
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's usage errors exit from parse_args
        code = exc.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["ggufsparse", *args], code, captured.out, captured.err)


def convert(model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run("convert", str(model), "-o", str(out), "--method", "chess", "--sparsity", "0.5",
               "--attn-sparsity", "0.5", *SMALL, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def converted(default_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "chess.gguf"
    convert(default_model, out)
    return out


def test_every_original_tensor_and_key_is_kept_byte_identical(default_model, converted):
    src, dst = gguf.GGUFReader(default_model), gguf.GGUFReader(converted)
    out_tensors = {t.name: t for t in dst.tensors}
    for t in src.tensors:
        o = out_tensors.pop(t.name)
        assert o.tensor_type == t.tensor_type and list(o.shape) == list(t.shape), t.name
        assert np.array_equal(np.asarray(o.data).view(np.uint8), np.asarray(t.data).view(np.uint8)), t.name
    for name, field in src.fields.items():
        if name.startswith("GGUF."):
            continue
        assert dst.fields[name].contents() == field.contents(), name
    # what remains are CHESS's tensors: thresholds and transposed weights for each layer
    n_layers = src.fields["llama.block_count"].contents()
    chess = (layout.FFN_GATE_THR, layout.FFN_DOWN_T, layout.ATTN_Q_THR, layout.ATTN_Q_T, layout.ATTN_OUT_THR,
             layout.ATTN_OUT_T)
    expected = {spec.name(i) for spec in chess for i in range(n_layers)}
    assert set(out_tensors) == expected


def test_extra_tensors_have_the_runtime_shapes(default_model, converted):
    dst = {t.name: t for t in gguf.GGUFReader(converted).tensors}
    down, thr, down_t = dst["blk.3.ffn_down.weight"], dst["blk.3.ffn_gate_thr"], dst["blk.3.ffn_down_t.weight"]
    n_embd, n_ff = down.shape[1], down.shape[0]  # ggml order: down is {n_ff, n_embd}
    assert list(thr.shape) == [n_ff] and thr.tensor_type == gguf.GGMLQuantizationType.F32
    # the default model is Q4_1 with n_embd a multiple of 32: its copy is packed, one column of
    # bytes per 32 FFN channels, and holds the original blocks exactly
    assert down.tensor_type == gguf.GGMLQuantizationType.Q4_1
    assert down_t.tensor_type == gguf.GGMLQuantizationType.I8
    assert list(down_t.shape) == [20 * n_embd, n_ff // 32]
    blocks, qtype = unpack(down_t.data, n_out=n_embd)
    assert qtype == down.tensor_type
    np.testing.assert_array_equal(blocks, np.asarray(down.data).view(np.uint8))


def test_metadata_says_how_the_file_was_made(converted):
    fields = gguf.GGUFReader(converted).fields
    assert fields[layout.Keys.METHOD].contents() == "chess"
    assert fields[layout.Keys.FORMAT_VERSION].contents() == layout.FORMAT_VERSION
    assert fields[layout.Keys.TARGETS].contents() == ["ffn", "attn_q", "attn_output"]
    recipe = json.loads(fields[layout.Keys.RECIPE].contents())
    assert recipe["sparsity"] == 0.5 and recipe["attn_sparsity"] == 0.5 and recipe["calib_tokens"] == 2048
    assert fields[layout.Keys.CALIB_TOKENS].contents() == 2048
    assert fields[layout.Keys.CALIB_SHA256].contents() == sha256(default_calibration_file())
    ffn = fields[layout.Keys.CALIB_FFN_SPARSITY].contents()
    assert len(ffn) == fields["llama.block_count"].contents()
    assert all(abs(s - 0.5) < 0.01 for s in ffn)


def test_same_command_gives_a_byte_identical_file(default_model, converted, tmp_path):
    again = tmp_path / "again.gguf"
    convert(default_model, again)
    assert sha256(again) == sha256(converted)


def test_input_is_not_touched_and_output_needs_force(default_model, converted, tmp_path):
    before = sha256(default_model)
    out = tmp_path / "x.gguf"
    shutil.copy(converted, out)
    proc = run("convert", str(default_model), "-o", str(out), *SMALL)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert sha256(out) == sha256(converted)
    assert sha256(default_model) == before


def test_converted_file_runs_in_the_patched_runtime(default_model, converted, tmp_path):
    # with its sparsity switched off the file computes exactly what the original does; with it on,
    # the thresholds change the logits
    dense = logits_of.in_subprocess(default_model, tmp_path / "dense.npy")
    switched_off = logits_of.in_subprocess(converted, tmp_path / "off.npy", env={"GGUFSPARSE_DENSE": "1"})
    np.testing.assert_array_equal(dense, switched_off)
    sparse = logits_of.in_subprocess(converted, tmp_path / "sparse.npy")
    assert np.abs(sparse - dense).max() > 0.1


def test_inspect_lists_method_layers_tensors_and_overhead(converted):
    proc = run("inspect", str(converted))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "method: chess" in text and "ffn_down_t.weight" in text and "attn_q_thr" in text
    assert "extra tensors: 180" in text
    report = json.loads(run("inspect", str(converted), "--json").stdout)
    assert len(report["calibration_sparsity"]["ffn"]) == 30
    assert len(report["extra_tensors"]) == 180
    assert report["extra_bytes"] == sum(e["bytes"] for e in report["extra_tensors"])
    assert report["original_bytes"] + report["extra_bytes"] < converted.stat().st_size
    assert 0.05 < report["overhead"] < 0.6


def test_recipe_file_and_flags(default_model, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('method = "cats"\nsparsity = 0.3\ncalib_tokens = 512\ncalib_seq_len = 256\n')
    out = tmp_path / "r.gguf"
    proc = run("convert", str(default_model), "-o", str(out), "--recipe", str(recipe), "--sparsity", "0.4", "-q")
    assert proc.returncode == 0, proc.stderr
    fields = gguf.GGUFReader(out).fields
    made = json.loads(fields[layout.Keys.RECIPE].contents())
    assert made["method"] == "cats" and made["sparsity"] == 0.4 and made["attn_sparsity"] is None
    assert fields[layout.Keys.TARGETS].contents() == ["ffn"]
    thr = {t.name: t for t in gguf.GGUFReader(out).tensors}["blk.0.ffn_gate_thr"]
    assert len(set(np.asarray(thr.data).tolist())) == 1  # CATS: one threshold per layer


# ---- bad input: one line on stderr, exit code 2, nothing left behind ----

def _fails_cleanly(proc: subprocess.CompletedProcess, folder: Path, before: set, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ggufsparse: error:"), proc.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert set(folder.iterdir()) == before, "partial output left behind"


@pytest.mark.parametrize("value", ["-0.1", "1.0", "1.5", "abc"])
def test_sparsity_outside_range(capsys, default_model, tmp_path, value):
    for flag in ("--sparsity", "--attn-sparsity"):
        proc = in_process(capsys, "convert", str(default_model), "-o", str(tmp_path / "o.gguf"), flag, value, *SMALL)
        _fails_cleanly(proc, tmp_path, set(), flag)


def test_missing_calibration_file(default_model, tmp_path):
    proc = run("convert", str(default_model), "-o", str(tmp_path / "o.gguf"), "--calib",
               str(tmp_path / "nope.txt"), *SMALL)
    _fails_cleanly(proc, tmp_path, set(), "nope.txt")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_calibration_file(capsys, default_model, tmp_path, content):
    calib = tmp_path / "empty.txt"
    calib.write_text(content)
    proc = in_process(capsys, "convert", str(default_model), "-o", str(tmp_path / "o.gguf"), "--calib", str(calib), *SMALL)
    _fails_cleanly(proc, tmp_path, {calib}, "no text")


def test_calibration_shorter_than_one_sequence(capsys, default_model, tmp_path):
    calib = tmp_path / "short.jsonl"
    calib.write_text(json.dumps({"text": "Only a few words of calibration text."}) + "\n")
    proc = in_process(capsys, "convert", str(default_model), "-o", str(tmp_path / "o.gguf"), "--calib", str(calib), *SMALL)
    _fails_cleanly(proc, tmp_path, {calib}, "shorter than one sequence")


def test_malformed_jsonl_calibration(capsys, default_model, tmp_path):
    calib = tmp_path / "bad.jsonl"
    calib.write_text('{"text": "fine"}\nnot json\n')
    proc = in_process(capsys, "convert", str(default_model), "-o", str(tmp_path / "o.gguf"), "--calib", str(calib), *SMALL)
    _fails_cleanly(proc, tmp_path, {calib}, "bad.jsonl:2")


def test_unknown_architecture(capsys, tmp_path):
    model = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(model, arch="mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    proc = in_process(capsys, "convert", str(model), "-o", str(tmp_path / "o.gguf"), *SMALL)
    _fails_cleanly(proc, tmp_path, {model}, "architecture 'mamba' is not supported; supported: llama, qwen2")


@pytest.mark.parametrize("where", ["missing-folder", "read-only", "is-a-folder"])
def test_unwritable_output(capsys, default_model, tmp_path, where):
    out = {"missing-folder": tmp_path / "no" / "such" / "o.gguf",
           "read-only": Path("/proc/ggufsparse-o.gguf"),
           "is-a-folder": tmp_path}[where]
    proc = in_process(capsys, "convert", str(default_model), "-o", str(out), *SMALL)
    _fails_cleanly(proc, tmp_path, set(), str(out))


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_corrupt_gguf(capsys, default_model, tmp_path, damage):
    bad = tmp_path / "bad.gguf"
    data = default_model.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2],
                     "random": np.random.default_rng(1).bytes(4096),
                     "empty": b""}[damage])
    proc = in_process(capsys, "convert", str(bad), "-o", str(tmp_path / "o.gguf"), *SMALL)
    _fails_cleanly(proc, tmp_path, {bad}, str(bad))


def test_already_converted_input_is_refused(converted, tmp_path):
    proc = run("convert", str(converted), "-o", str(tmp_path / "o.gguf"), *SMALL)
    _fails_cleanly(proc, tmp_path, set(), "already converted")


# ---- a Hugging Face folder as input ----

@pytest.fixture(scope="module")
def hf_folder(default_model, tmp_path_factory):
    """A safetensors checkpoint written by transformers from the default model's weights."""
    import torch
    from ggufsparse.models import torch_model
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("hf") / "smollm2"
    model = torch_model.load(default_model).model.to(torch.float16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model.parent, gguf_file=default_model.name).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quantize", [None, "q4_0"])
def test_hugging_face_folder_converts(hf_folder, tmp_path, quantize):
    out = tmp_path / "hf.gguf"
    extra = ["--quantize", quantize] if quantize else []
    proc = run("convert", str(hf_folder), "-o", str(out), "--outtype", "f16", *extra, "--calib-tokens", "512",
               "--calib-seq-len", "256", "-q")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf.gguf"]  # no intermediate left
    tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
    want = gguf.GGMLQuantizationType.Q4_0 if quantize else gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.ffn_down.weight"].tensor_type == want
    down, down_t = tensors["blk.5.ffn_down.weight"], tensors["blk.5.ffn_down_t.weight"]
    if quantize:  # Q4_0 is packed: the original blocks, rearranged
        assert down_t.tensor_type == gguf.GGMLQuantizationType.I8
        blocks, qtype = unpack(down_t.data, n_out=down.shape[1])
        assert qtype == want and np.array_equal(blocks, np.asarray(down.data).view(np.uint8))
    else:  # a float copy is an exact transpose
        assert down_t.tensor_type == want
        assert np.array_equal(np.asarray(down_t.data), np.asarray(down.data).T)
    proc = run("generate", str(out), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    assert proc.returncode == 0 and len(proc.stdout) > len("The capital of France is"), proc.stderr


def test_folder_without_config_is_refused(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    proc = run("convert", str(folder), "-o", str(tmp_path / "o.gguf"), *SMALL)
    _fails_cleanly(proc, tmp_path, {folder}, "config.json")


def test_gemma3_geglu_model_converts(tmp_path):
    """The second architecture: tanh-GELU gated FFN, K-quant down weights (2048 inputs: whole
    super-blocks) packed as their own blocks, Q5_0 attention weights requantised along their rows
    to Q8_0 and packed."""
    from ggufsparse.models.known import resolve

    out = tmp_path / "gemma.gguf"
    proc = run("convert", "gemma3-270m-q4_k_m", "-o", str(out), "--sparsity", "0.5", "--attn-sparsity", "0.5",
               "--calib-tokens", "512", "--calib-seq-len", "256", "-q")
    assert proc.returncode == 0, proc.stderr
    src = {t.name: t for t in gguf.GGUFReader(resolve("gemma3-270m-q4_k_m")).tensors}
    dst = {t.name: t for t in gguf.GGUFReader(out).tensors}
    T = gguf.GGMLQuantizationType
    for i in range(18):
        down, down_t = src[f"blk.{i}.ffn_down.weight"], dst[f"blk.{i}.ffn_down_t.weight"]
        assert down_t.tensor_type == T.I8
        blocks, qtype = unpack(down_t.data, n_out=down.shape[1])
        assert qtype == down.tensor_type
        np.testing.assert_array_equal(blocks, np.asarray(down.data).view(np.uint8).reshape(blocks.shape))
        q_t = dst[f"blk.{i}.attn_q_t.weight"]
        if src[f"blk.{i}.attn_q.weight"].tensor_type == T.Q5_0:
            assert q_t.tensor_type == T.I8 and unpack(q_t.data, n_out=src[f"blk.{i}.attn_q.weight"].shape[1])[1] == T.Q8_0
    fields = gguf.GGUFReader(out).fields
    assert all(abs(s - 0.5) < 0.01 for s in fields[layout.Keys.CALIB_FFN_SPARSITY].contents())
    proc = run("generate", str(out), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    assert proc.returncode == 0, proc.stderr


def test_down_cut_zeroes_its_level_of_down_inputs_on_the_calibration_text(default_model, tmp_path):
    """--down-sparsity: one threshold per layer on ffn_down's input beside the channel thresholds,
    sharing ffn_down_t; the reference (the runtime's semantics) run on the calibration windows
    zeroes that share of down's inputs."""
    import torch
    from ggufsparse.calib import text as calib_text
    from ggufsparse.models import torch_model
    from ggufsparse.models.tokenizer import gguf_tokenizer
    from ggufsparse.reference import sparse_forward

    out = tmp_path / "cut.gguf"
    proc = run("convert", str(default_model), "-o", str(out), "--sparsity", "0.4", "--down-sparsity", "0.6", *SMALL)
    assert proc.returncode == 0, proc.stderr
    reader = gguf.GGUFReader(out)
    names = [t.name for t in reader.tensors]
    n_layers = sum(1 for n in names if n.endswith(".ffn_gate_thr"))
    assert n_layers == 30
    for i in range(n_layers):
        assert names.count(layout.FFN_DOWN_IN_THR.name(i)) == 1 and names.count(layout.FFN_DOWN_T.name(i)) == 1
    fields = reader.fields
    assert fields[layout.Keys.FORMAT_VERSION].contents() == layout.FORMAT_VERSION >= 8  # 8: ffn_down_in_thr
    assert "ffn_down_in" in fields[layout.Keys.TARGETS].contents()
    down_levels = fields[layout.calib_sparsity_key("ffn_down_in")].contents()
    assert all(abs(x - 0.6) < 0.005 for x in down_levels), down_levels

    tokenize, bos = gguf_tokenizer(default_model)
    windows = calib_text.load(default_calibration_file(), tokenize, bos, 2048, 256).windows
    model = torch_model.load(out)
    config = sparse_forward.BakedThresholds.read(out, model.n_layers)
    counters = sparse_forward.Counters()
    zero0 = []  # layer 0: the share of ffn_down's input that is zero, per window
    with sparse_forward.SparseForward(model.layers, config, counters), torch.inference_mode():
        # registered after the reference's own hooks: sees down's input after the cut
        hook = model.layers[0].mlp.down_proj.register_forward_pre_hook(
            lambda _m, args: zero0.append(float((args[0] == 0).float().mean())))
        for row in windows:
            model.model(input_ids=torch.from_numpy(row[None, :]), use_cache=False)
        hook.remove()
    # layer 0 sees the same (dense) input as in calibration: its level exactly; later layers see
    # the sparse model's hidden states, close to the dense ones the levels were set on
    layer0 = float(np.mean(zero0))
    print(f"down inputs zero: layer 0 {layer0:.4f}, all layers {counters.sparsity('ffn_down_in'):.4f}; "
          f"channels {counters.sparsity('ffn'):.4f}")
    assert abs(layer0 - 0.6) < 0.005
    assert abs(counters.sparsity("ffn_down_in") - 0.6) < 0.03
    assert abs(counters.sparsity("ffn") - 0.4) < 0.03


@pytest.mark.parametrize("flags,needle", [
    (["--sparsity", "0.5", "--down-sparsity", "0.4"], "--down-sparsity"),
    (["--sparsity", "0.5", "--down-sparsity", "1.0"], "--down-sparsity"),
    (["--method", "teal", "--down-sparsity", "0.6"], "--down-sparsity"),
    (["--down-sparsity", "0.6", "--allocate", "kl"], "--allocate"),
])
def test_bad_down_sparsity_is_one_line(capsys, default_model, tmp_path, flags, needle):
    proc = in_process(capsys, "convert", str(default_model), "-o", str(tmp_path / "o.gguf"), *flags, *SMALL)
    _fails_cleanly(proc, tmp_path, set(), needle)
