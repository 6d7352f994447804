"""ProSparse: the schedule, the training loop on a tiny random model (L1 falls, resume is exact),
the export, and the runtime's ReLU / FATReLU against the PyTorch reference."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
import torch
from ggufsparse.errors import UserError
from ggufsparse.eval import perplexity
from ggufsparse.format import layout
from ggufsparse.methods.prosparse import anneal, export, schedule
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
from ggufsparse.methods.prosparse.train import distilled_loss, evaluate, train, trainable
from ggufsparse.models import activation, torch_model
from ggufsparse.reference import sparse_forward


def ggufsparse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


# --- schedule ---------------------------------------------------------------------------------

STAGES = [schedule.Stage(0.0, 8), schedule.Stage(0.1, 16), schedule.Stage(0.1, 24), schedule.Stage(0.5, 32)]


def paper(lam_prev: float, lam: float, progress: float) -> float:
    # the same curve written as a cosine: (sin(-pi/2 + pi p) + 1) / 2 = (1 - cos(pi p)) / 2
    return lam_prev + (1 - math.cos(math.pi * progress)) / 2 * (lam - lam_prev)


def test_warm_up_holds_the_first_factor():
    assert [schedule.factor(STAGES, s) for s in range(8)] == [0.0] * 8


@pytest.mark.parametrize("step, prev, lam, progress", [
    (8, 0.0, 0.1, 0.0), (10, 0.0, 0.1, 0.25), (12, 0.0, 0.1, 0.5), (14, 0.0, 0.1, 0.75),
    (16, 0.1, 0.1, 0.0), (20, 0.1, 0.1, 0.5),
    (24, 0.1, 0.5, 0.0), (26, 0.1, 0.5, 0.25), (28, 0.1, 0.5, 0.5), (31, 0.1, 0.5, 7 / 8),
])
def test_stages_follow_the_sine_curve(step, prev, lam, progress):
    assert schedule.factor(STAGES, step) == pytest.approx(paper(prev, lam, progress), abs=1e-12)


def test_factor_reaches_each_stage_value_at_its_end_and_stays_after_the_last():
    assert schedule.factor(STAGES, 16) == pytest.approx(0.1)  # end of stage 2 = start of stage 3
    assert schedule.factor(STAGES, 32) == 0.5 and schedule.factor(STAGES, 10_000) == 0.5
    # monotone where the factors rise
    values = [schedule.factor(STAGES, s) for s in range(40)]
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_recipe_stages_scale_the_papers_7b_schedule():
    ends = [s.end for s in FinetuneRecipe().schedule()]
    assert FinetuneRecipe(steps=16500).schedule()[0].end == pytest.approx(5000, abs=10)
    assert [s.end for s in FinetuneRecipe(steps=16500).schedule()] == pytest.approx(
        [5000, 6000, 10000, 12000, 16000, 16500], abs=20)
    assert ends[-1] == FinetuneRecipe().steps


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lr": 0.0}, {"fatrelu": -0.1}, {"stages": ((0.1, 0.5), (0.2, 0.4))},
                                 {"stages": ((0.1, 0.5),)}, {"stages": ((-1.0, 1.0),)}, {"method": "cats"},
                                 {"distill": 1.5}, {"distill": -0.1}, {"relu_anneal": 1.5},
                                 {"relu_anneal": float("nan")}])
def test_bad_recipes_are_user_errors(bad):
    with pytest.raises(UserError):
        FinetuneRecipe(**bad).validate()


# --- training on a tiny random model --------------------------------------------------------

def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    return model, list(model.model.layers)


def tiny_windows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 96, size=(n, 16))


LAM = 50.0  # a random init's |x1| is about 0.01 per layer: the factor must outweigh the loss's pull


def tiny_recipe(**kw) -> FinetuneRecipe:
    base = {"steps": 6, "batch": 2, "seq_len": 16, "lr": 1e-2, "warmup_steps": 0, "save_every": 2, "eval_windows": 2,
                "stages": ((LAM, 1.0),)}
    return FinetuneRecipe(**{**base, **kw}).validate()


def held_out_l1(model, layers, windows) -> float:
    from ggufsparse.methods.prosparse.train import Tape, recording

    tape = Tape()
    with torch.no_grad(), recording(layers, tape):
        for w in windows:
            model(input_ids=torch.from_numpy(w[None, :]))
    return float(torch.stack(tape.l1).sum()) / len(windows)


def test_a_few_steps_reduce_the_l1_term(tmp_path):
    model, layers = tiny_model()
    activation.install(layers, activation.Activation("relu"))
    held = tiny_windows(4, seed=2)
    before = held_out_l1(model, layers, held)
    train(model, layers, tiny_windows(12), held, tiny_recipe(), tmp_path / "c.ckpt", progress=False, log=lambda m: None)
    after = held_out_l1(model, layers, held)
    print(f"held-out sum of mean |x1|: {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before


def test_without_the_regulariser_relu_alone_does_not_reduce_it_as_much(tmp_path):
    """The L1 term is what lowers |x1|: the same steps at lambda 0 leave it higher."""
    held = tiny_windows(4, seed=2)
    results = {}
    for lam in (0.0, LAM):
        model, layers = tiny_model()
        train(model, layers, tiny_windows(12), held, tiny_recipe(stages=((lam, 1.0),)), tmp_path / f"{lam}.ckpt",
              progress=False, log=lambda m: None)
        results[lam] = held_out_l1(model, layers, held)
    print(f"held-out sum of mean |x1| after training: lambda 0 {results[0.0]:.4f}, lambda {LAM} {results[LAM]:.4f}")
    assert results[LAM] < 0.8 * results[0.0]


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path):
    recipe = tiny_recipe(stages=((0.0, 0.34), (0.5, 1.0)))
    data, held = tiny_windows(12), tiny_windows(2, seed=2)
    whole, whole_layers = tiny_model()
    r_whole = train(whole, whole_layers, data, held, recipe, tmp_path / "whole.ckpt", progress=False, log=lambda m: None)

    part, part_layers = tiny_model()
    r1 = train(part, part_layers, data, held, recipe, tmp_path / "part.ckpt", stop_after=3, progress=False,
               log=lambda m: None)
    assert r1.steps == 3
    # a fresh process would start from a fresh model: so do we
    resumed, resumed_layers = tiny_model()
    r2 = train(resumed, resumed_layers, data, held, recipe, tmp_path / "part.ckpt", progress=False, log=lambda m: None)
    assert r2.resumed_from == 3 and r2.steps == 6
    for (n, a), (_, b) in zip(trainable(whole), trainable(resumed)):
        assert torch.equal(a, b), n
    assert [h.loss for h in r2.history] == [h.loss for h in r_whole.history]


def test_relu_anneal_moves_linearly_from_the_own_activation_to_relu():
    assert [anneal.alpha_at(s, 0.5, 8) for s in (0, 1, 2, 4, 5, 8)] == [0.0, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert anneal.alpha_at(0, 0.0, 8) == 1.0  # no anneal: ReLU from the start
    x = torch.linspace(-4, 4, 101)
    (blend,) = anneal.install(tiny_model()[1][:1])
    silu = torch.nn.functional.silu(x)
    for alpha, want in ((0.0, silu), (0.25, 0.75 * silu + 0.25 * torch.relu(x)), (1.0, torch.relu(x))):
        blend.alpha = alpha
        assert torch.allclose(blend(x), want, atol=1e-6), alpha
    blend.alpha = 1.0
    assert torch.equal(blend(x), torch.relu(x))  # exactly ReLU once the anneal is over


def test_an_annealed_run_starts_at_the_original_ends_at_relu_and_resumes_exactly(tmp_path):
    recipe = tiny_recipe(stages=((0.0, 0.34), (0.5, 1.0)), relu_anneal=0.5)
    data, held = tiny_windows(12), tiny_windows(2, seed=2)
    original, original_layers = tiny_model()
    silu_loss = evaluate(original, original_layers, held, 0.0)[0]
    whole, whole_layers = tiny_model()
    r_whole = train(whole, whole_layers, data, held, recipe, tmp_path / "whole.ckpt", progress=False, log=lambda m: None)
    # step 0 is the original (SiLU) model; at the end every FFN computes ReLU
    assert r_whole.history[0].loss == silu_loss and r_whole.history[0].sparsity == 0.0
    x = torch.randn(64)
    assert all(torch.equal(layer.mlp.act_fn(x), torch.relu(x)) for layer in whole_layers)
    assert r_whole.history[-1].sparsity > 0.2

    part, part_layers = tiny_model()
    train(part, part_layers, data, held, recipe, tmp_path / "part.ckpt", stop_after=2, progress=False,
          log=lambda m: None)  # stops inside the anneal (3 steps)
    resumed, resumed_layers = tiny_model()
    r2 = train(resumed, resumed_layers, data, held, recipe, tmp_path / "part.ckpt", progress=False, log=lambda m: None)
    assert r2.resumed_from == 2
    for (n, a), (_, b) in zip(trainable(whole), trainable(resumed)):
        assert torch.equal(a, b), n
    assert [h.loss for h in r2.history] == [h.loss for h in r_whole.history]


def kl_to(teacher, model, windows) -> float:
    """Mean KL(teacher || model) of the next-token distributions at every position of the windows."""
    with torch.no_grad():
        ids = torch.from_numpy(windows)
        t, m = (x(input_ids=ids).logits.double().numpy() for x in (teacher, model))
    scores = perplexity.Scores()
    for w in range(len(windows)):
        scores.add(m[w], windows[w], t[w])  # the targets only feed the perplexity, unused here
    return scores.result()["kl_mean"]


def test_distilled_loss_is_cross_entropy_plus_the_kl_to_the_teacher():
    model, _ = tiny_model()
    teacher, _ = tiny_model()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids = torch.from_numpy(tiny_windows(3))
    with torch.no_grad():
        logits, t_logits = model(input_ids=ids).logits, teacher(input_ids=ids).logits
        ce = float(model(input_ids=ids, labels=ids).loss)  # transformers' own next-token loss
        kl = kl_to(teacher, model, tiny_windows(3)[:, :-1])  # the positions that predict a next token
    assert float(distilled_loss(logits, ids, t_logits, 0.0)) == pytest.approx(ce, rel=1e-5)
    assert float(distilled_loss(logits, ids, t_logits, 1.0)) == pytest.approx(kl, rel=1e-4) and kl > 1e-3
    assert float(distilled_loss(logits, ids, logits, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distilled_loss(logits, ids, t_logits, 0.25)) == pytest.approx(0.75 * ce + 0.25 * kl, rel=1e-4)


def test_distillation_pulls_the_relu_model_towards_the_original(tmp_path):
    """Trained on the same random tokens, distillation ends nearer the original SiLU model than
    cross-entropy does: the loss follows the teacher, not the text."""
    data, held = tiny_windows(12), tiny_windows(4, seed=2)
    # a teacher whose decoder (what training may change) is far from the student's start
    teacher, _ = tiny_model()
    with torch.no_grad():
        for p in teacher.model.layers.parameters():
            p.add_(0.3 * torch.randn_like(p))
    teacher.eval()
    after = {}
    for distill in (0.0, 1.0):
        model, layers = tiny_model()
        train(model, layers, data, held, tiny_recipe(stages=((0.0, 1.0),), distill=distill, steps=24),
              tmp_path / f"{distill}.ckpt", progress=False, log=lambda m: None, teacher=teacher)
        after[distill] = kl_to(teacher, model, held)
    model, layers = tiny_model()
    activation.install(layers, activation.Activation("relu"))
    before = kl_to(teacher, model, held)
    print(f"held-out KL(SiLU original || ReLU model): untrained {before:.4f}, after cross-entropy {after[0.0]:.4f}, "
          f"after distillation {after[1.0]:.4f}")
    assert after[1.0] < 0.6 * before and after[1.0] < 0.6 * after[0.0]


def test_a_checkpoint_from_other_settings_is_refused(tmp_path):
    model, layers = tiny_model()
    data, held = tiny_windows(12), tiny_windows(2)
    train(model, layers, data, held, tiny_recipe(), tmp_path / "c.ckpt", stop_after=2, progress=False, log=lambda m: None)
    with pytest.raises(UserError, match="other settings"):
        train(model, layers, data, held, tiny_recipe(lr=1e-3), tmp_path / "c.ckpt", progress=False, log=lambda m: None)


def test_evaluate_counts_relu_zeros_and_fatrelu_threshold(tmp_path):
    model, layers = tiny_model()
    activation.install(layers, activation.Activation("relu"))
    _, at_zero, at_t, per_layer = evaluate(model, layers, tiny_windows(2), threshold=0.05)
    assert 0.2 < at_zero < 0.8  # ReLU on a random init: about half
    assert at_t > at_zero and len(per_layer) == 2


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
    for name, t in before.items():
        assert {t.name: t for t in gguf.GGUFReader(same).tensors}[name].tensor_type == t.tensor_type, name
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
