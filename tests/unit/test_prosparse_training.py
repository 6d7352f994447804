"""ProSparse without a model file or the runtime: the schedule, the recipe, and the training loop on a tiny
random model (L1 falls, resume is exact, distillation)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from ggufsparse.errors import UserError
from ggufsparse.eval import perplexity
from ggufsparse.methods.prosparse import anneal, schedule
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
from ggufsparse.methods.prosparse.train import distilled_loss, evaluate, train, trainable
from ggufsparse.models import activation

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
