"""ProSparse on real models: the export, the CLI, and the runtime's ReLU / FATReLU against the PyTorch
reference (the schedule and the training loop on a tiny random model:
tests/unit/test_prosparse_training.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
import torch
from ggufsparse.format import layout
from ggufsparse.methods.prosparse import export
from ggufsparse.models import activation, torch_model
from ggufsparse.reference import sparse_forward


def ggufsparse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


# --- schedule ---------------------------------------------------------------------------------


# --- training on a tiny random model --------------------------------------------------------


# --- export and runtime -----------------------------------------------------------------------

@pytest.mark.model
def test_gguf_layout_round_trips_through_the_module_layout(default_model):
    tm = torch_model.GGUFTorchModel(default_model)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.3.ffn_down.weight", "output_norm.weight"):
        t = tm.tensor(name)
        original = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        module = tm.to_module_layout(name, original)
        if name.endswith("attn_q.weight"):
            assert not np.array_equal(module, original)  # llama's q rows really move
        assert np.array_equal(tm.to_gguf_layout(name, module), original)


@pytest.fixture(scope="module")
def float_smollm2_hf(default_model, tmp_path_factory) -> Path:
    """SmolLM2 (real weights) as an F32 Hugging Face folder."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("f32") / "hf"
    torch_model.load(default_model).model.to(torch.float32).save_pretrained(root)
    AutoTokenizer.from_pretrained(default_model.parent, gguf_file=default_model.name).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def float_smollm2(float_smollm2_hf) -> Path:
    """The same in an F32 GGUF: the reference and the runtime see the same weights."""
    from ggufsparse.models.hf_import import hf_to_gguf

    return hf_to_gguf(float_smollm2_hf, float_smollm2_hf.parent / "f32.gguf", "f32")


def fatrelu_checkpoint(hf: Path, dst: Path, threshold: float) -> Path:
    """hf with a config that declares FATReLU, as the released ProSparse checkpoints do."""
    dst.mkdir()
    for f in hf.iterdir():
        (dst / f.name).symlink_to(f)
    config = json.loads((hf / "config.json").read_text())
    (dst / "config.json").unlink()
    (dst / "config.json").write_text(json.dumps({**config, "hidden_act": "fatrelu", "hidden_act_param": threshold}))
    return dst


def exported(src: Path, out: Path, act: activation.Activation) -> Path:
    """src with the activation and the sparse FFN's tensors, its weights unchanged (no training)."""
    tm = torch_model.GGUFTorchModel(src)
    keys = export.activation_keys(act, "prosparse", None)
    export.write(tm, out, act, set(), keys, force=False, progress=False)
    return out


@pytest.fixture(scope="module")
def wiki_windows(default_model, tmp_path_factory):
    from ggufsparse.models.tokenizer import gguf_tokenizer
    from ggufsparse.paths import shared_data_dir

    tokenize, bos = gguf_tokenizer(default_model)
    windows = sparse_forward.text_windows(shared_data_dir() / "wikitext2" / "wiki.test.raw", tokenize, bos, 512, 4)
    path = tmp_path_factory.mktemp("wiki") / "windows.npy"
    np.save(path, windows)
    return windows, path


@pytest.mark.model
@pytest.mark.runtime
@pytest.mark.parametrize("act", [activation.Activation("relu"), activation.Activation("fatrelu", 0.01)],
                         ids=["relu", "fatrelu"])
def test_runtime_runs_relu_and_fatrelu_as_the_reference(float_smollm2, float_smollm2_hf, wiki_windows, act, tmp_path):
    windows, path = wiki_windows
    if act.kind == "relu":
        f = exported(float_smollm2, tmp_path / "relu.gguf", act)
    else:  # imported: a Hugging Face checkpoint whose config says fatrelu
        f = tmp_path / "fatrelu.gguf"
        hf = fatrelu_checkpoint(float_smollm2_hf, tmp_path / "hf", act.threshold)
        proc = ggufsparse("convert", str(hf), "--method", "prosparse", "--outtype", "f32", "-o", str(f), "-q")
        assert proc.returncode == 0, proc.stderr
    fields = gguf.GGUFReader(f).fields
    assert fields[layout.Keys.ACTIVATION].contents() == act.kind
    model = torch_model.load(f)
    assert model.activation.kind == act.kind and model.activation.threshold == pytest.approx(act.threshold)
    ref = sparse_forward.window_logits(model, sparse_forward.BakedThresholds.read(f, model.n_layers), windows)
    stats = tmp_path / "stats.json"
    for n_batch in (1, 512):  # the skipping kernels, and the dense products on the thresholded input
        # f32 KV cache: the reference keeps keys and values in f32 too
        rt = logits_of.in_subprocess(f, tmp_path / "rt.npy", windows=path, n_batch=n_batch,
                                     env={"GGUFSPARSE_STATS": str(stats), "LOGITS_KV_F32": "1"})
        top1 = float((rt.argmax(-1) == ref.argmax(-1)).mean())
        print(f"{act.kind} n_batch {n_batch}: top-1 {top1:.4f}, max abs diff {np.abs(rt - ref).max():.3g}")
        assert top1 >= 0.99
    # GGUFSPARSE_DENSE: no sparse kernels, but the model's activation still applies
    dense = logits_of.in_subprocess(f, tmp_path / "d.npy", windows=path, n_batch=512,
                                    env={"GGUFSPARSE_DENSE": "1", "LOGITS_KV_F32": "1"})
    assert float((dense.argmax(-1) == ref.argmax(-1)).mean()) >= 0.99
    silu = logits_of.in_subprocess(float_smollm2, tmp_path / "s.npy", windows=path, n_batch=512)
    assert float((silu.argmax(-1) == ref.argmax(-1)).mean()) < 0.9  # the activation really changed
    report = json.loads(stats.read_text())
    sp = report["ffn"]["fraction"]
    assert 0.3 < sp < 1.0


@pytest.mark.model
def test_finetune_cli_distils_records_it_and_refuses_to_resume_without_it(default_model, tmp_path):
    out = tmp_path / "kd.gguf"
    args = ["finetune", str(default_model), "-o", str(out), "--steps", "6", "--batch", "1", "--seq-len", "32",
            "--eval-windows", "1", "-q", "--json"]
    proc = ggufsparse(*args, "--distill", "0.5")
    assert proc.returncode == 0, proc.stderr
    recipe = json.loads(gguf.GGUFReader(out).fields[layout.Keys.RECIPE].contents())
    assert recipe["distill"] == 0.5
    # its checkpoint was trained with distillation: another loss must not continue it
    again = ggufsparse(*args[:3], str(tmp_path / "ce.gguf"), *args[4:], "--checkpoint", str(out) + ".ckpt")
    assert again.returncode == 2 and "distill" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.model
@pytest.mark.runtime
def test_finetune_cli_trains_resumes_and_exports_in_the_source_types(default_model, tmp_path):
    out = tmp_path / "p.gguf"
    args = ["finetune", str(default_model), "-o", str(out), "--steps", "6", "--batch", "1", "--seq-len", "32",
            "--eval-windows", "1", "--save-every", "1", "-q", "--json"]
    first = ggufsparse(*args, "--stop-after", "3")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["output"] is None and not out.exists()
    second = ggufsparse(*args)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6 and summary["activation"]["kind"] == "fatrelu"
    src, dst = gguf.GGUFReader(default_model), gguf.GGUFReader(out)
    before, after = {t.name: t for t in src.tensors}, {t.name: t for t in dst.tensors}
    Q = gguf.GGMLQuantizationType
    assert after["blk.0.ffn_up.weight"].tensor_type == Q.Q8_0  # auto: a 4-bit source's trained weights in Q8_0
    assert after["blk.0.attn_norm.weight"].tensor_type == before["blk.0.attn_norm.weight"].tensor_type
    # the same checkpoint exported in the source's own types: no training, every type kept
    same = tmp_path / "q41.gguf"
    third = ggufsparse(*args[:3], str(same), *args[4:], "--outtype", "source", "--checkpoint", str(out) + ".ckpt",
                       "--fatrelu", "0.2")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["resumed_from"] == 6
    # a higher threshold at export: more of the held-out activations at or below it, and the file says so
    assert json.loads(third.stdout)["held_out_ffn_sparsity"] > summary["held_out_ffn_sparsity"] > 0.3
    assert float(gguf.GGUFReader(same).fields[layout.Keys.ACTIVATION_THRESHOLD].contents()) == pytest.approx(0.2)
    calib = [np.mean(gguf.GGUFReader(f).fields[layout.Keys.CALIB_FFN_SPARSITY].contents()) for f in (out, same)]
    assert calib[1] == pytest.approx(json.loads(third.stdout)["held_out_ffn_sparsity"], abs=1e-6) and calib[1] > calib[0]
    same_tensors = {t.name: t for t in gguf.GGUFReader(same).tensors}  # parsed once: a read takes seconds
    for name, t in before.items():
        assert same_tensors[name].tensor_type == t.tensor_type, name
    assert np.array_equal(after["token_embd.weight"].data, before["token_embd.weight"].data)  # frozen
    assert not np.array_equal(after["blk.0.attn_norm.weight"].data, before["blk.0.attn_norm.weight"].data)  # trained
    assert "blk.29.ffn_gate_thr" in after and "blk.29.ffn_down_t.weight" in after
    assert float(dst.fields[layout.Keys.ACTIVATION_THRESHOLD].contents()) == pytest.approx(0.01)
    assert dst.fields[layout.Keys.FINETUNE_STEPS].contents() == 6
    shown = ggufsparse("inspect", str(out))
    assert shown.returncode == 0 and "FFN activation: fatrelu, threshold 0.01" in shown.stdout, shown.stderr
    assert "fine-tuned: 6 steps, 192 tokens" in shown.stdout
    gen = ggufsparse("generate", str(out), "-p", "The capital of France is", "-n", "8", "--temp", "0")
    assert gen.returncode == 0, gen.stderr
    # bad input: one line, no traceback
    bad = ggufsparse("finetune", str(default_model), "-o", str(tmp_path / "x.gguf"), "--steps", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.model
def test_a_silu_checkpoint_is_refused_by_method_prosparse_and_a_fatrelu_one_by_chess(float_smollm2_hf, tmp_path):
    proc = ggufsparse("convert", str(float_smollm2_hf), "--method", "prosparse", "-o", str(tmp_path / "x.gguf"))
    assert proc.returncode == 2 and "finetune" in proc.stderr and "Traceback" not in proc.stderr
    hf = fatrelu_checkpoint(float_smollm2_hf, tmp_path / "hf", 0.01)
    proc = ggufsparse("convert", str(hf), "--method", "chess", "-o", str(tmp_path / "y.gguf"))
    assert proc.returncode == 2 and "--method prosparse" in proc.stderr
