"""ProSparse's training loop on a tiny random model, no model file or runtime: L1 falls, resume is
exact (also inside the activation anneal), distillation follows the teacher, a checkpoint of other
settings is refused. Here rather than in tests/unit because each trains for seconds."""

from __future__ import annotations

import pytest
import torch
from ggufsparse.errors import UserError
from ggufsparse.methods.prosparse.train import evaluate, train, trainable
from ggufsparse.models import activation
from tiny_prosparse import LAM, held_out_l1, kl_to, tiny_model, tiny_recipe, tiny_windows


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
