"""ProSparse without a model file or the runtime: the schedule, the recipe, the activation blend,
the distilled loss and the evaluation on a tiny random model. (Training runs on it are in
tests/integration/test_prosparse_tiny_training.py: they take tens of seconds.)"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from ggufsparse.errors import UserError
from ggufsparse.methods.prosparse import anneal, schedule
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
from ggufsparse.methods.prosparse.train import distilled_loss, evaluate
from ggufsparse.models import activation
from tiny_prosparse import kl_to, tiny_model, tiny_windows

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


def test_evaluate_counts_relu_zeros_and_fatrelu_threshold(tmp_path):
    model, layers = tiny_model()
    activation.install(layers, activation.Activation("relu"))
    _, at_zero, at_t, per_layer = evaluate(model, layers, tiny_windows(2), threshold=0.05)
    assert 0.2 < at_zero < 0.8  # ReLU on a random init: about half
    assert at_t > at_zero and len(per_layer) == 2
