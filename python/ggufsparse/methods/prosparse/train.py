"""The ProSparse training loop: ReLU in every gated FFN, loss = cross-entropy + lambda(t) * sum over
layers of mean |act(gate) * up|, AdamW; checkpoints that resume bit for bit.

Embeddings (and a head tied to them) stay frozen: the regulariser acts on the FFNs, and on a CPU
budget the vocabulary's gradient is a large share of a step. Batches are a fixed function of the
seed and the step, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.methods.prosparse import anneal, schedule
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe

CHECKPOINT_FORMAT = 1


@dataclass
class Tape:
    """What the FFNs computed in one forward: the L1 terms (with their graph) and zero counts."""

    threshold: float = 0.0  # also count activations at or below this (the export's FATReLU)
    l1: list = field(default_factory=list)
    zeros: list = field(default_factory=list)  # per layer, activations exactly 0
    below: list = field(default_factory=list)  # per layer, activations <= threshold
    total: int = 0  # activations per layer

    def record(self, h, a) -> None:
        self.l1.append(h.abs().mean())
        self.zeros.append(int((a == 0).sum()))
        self.below.append(int((a <= self.threshold).sum()))
        self.total = a.numel()


@contextlib.contextmanager
def recording(layers, tape: Tape) -> Iterator[Tape]:
    """Each gated FFN computes down(act(gate(x)) * up(x)) and records into `tape` (transformers'
    Llama, Qwen and Gemma MLPs compute the same)."""

    def forward_of(mlp):
        def forward(x):
            a = mlp.act_fn(mlp.gate_proj(x))
            h = a * mlp.up_proj(x)
            tape.record(h, a)
            return mlp.down_proj(h)
        return forward

    for layer in layers:
        layer.mlp.forward = forward_of(layer.mlp)
    try:
        yield tape
    finally:
        for layer in layers:
            del layer.mlp.forward


@dataclass
class StagePoint:
    """Held-out figures at the end of a stage (or at step 0)."""

    step: int
    lam: float
    loss: float  # mean cross-entropy per token
    sparsity: float  # fraction of act(gate) exactly 0 (ReLU)
    sparsity_at_threshold: float  # fraction <= the export's FATReLU threshold
    layer_sparsity: list[float]  # per layer, at the threshold

    @property
    def ppl(self) -> float:
        return float(np.exp(self.loss))


@dataclass
class TrainResult:
    steps: int
    tokens: int
    history: list[StagePoint]
    resumed_from: int


def trainable(model) -> list[tuple[str, object]]:
    """The decoder's parameters: everything but the embeddings and the head."""
    return [(n, p) for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n]


def batch_at(windows: np.ndarray, recipe: FinetuneRecipe, step: int) -> np.ndarray:
    order = np.random.default_rng(recipe.seed).permutation(len(windows))
    idx = (step * recipe.batch + np.arange(recipe.batch)) % len(windows)
    return windows[order[idx]]


def evaluate(model, layers, windows: np.ndarray, threshold: float) -> tuple[float, float, float, list[float]]:
    """(mean cross-entropy, sparsity at 0, sparsity at threshold, per-layer sparsity at threshold)."""
    import torch

    losses, zeros, below, total = [], np.zeros(len(layers)), np.zeros(len(layers)), 0
    tape = Tape(threshold)
    with torch.no_grad(), recording(layers, tape):
        for w in windows:
            tape.l1.clear(), tape.zeros.clear(), tape.below.clear()
            ids = torch.from_numpy(np.asarray(w[None, :], dtype=np.int64)).to(_device(model))
            losses.append(float(model(input_ids=ids, labels=ids).loss))
            zeros += tape.zeros
            below += tape.below
            total += tape.total
    return (float(np.mean(losses)), float(zeros.sum() / (total * len(layers))),
            float(below.sum() / (total * len(layers))), [float(b / total) for b in below])


def _device(model):
    return next(model.parameters()).device


def opt_state_to(opt, device) -> None:
    for st in opt.state.values():
        for k, v in st.items():
            if hasattr(v, "to") and k != "step":
                st[k] = v.to(device)


def _save(path: Path, state: dict) -> None:
    """Whole or not at all: a run killed while saving leaves the previous checkpoint."""
    import torch

    from ggufsparse.format.gguf_io import replacing

    with replacing(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, recipe: FinetuneRecipe) -> dict:
    import torch

    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"{path}: not a readable checkpoint ({exc}); delete it or pass --restart") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: checkpoint format {state.get('format')}; delete it or pass --restart")
    mine = recipe.training_fields()
    # a field added since the checkpoint was written trained at its default (e.g. distill 0)
    theirs = {**FinetuneRecipe().training_fields(), **state["recipe"]}
    differ = sorted(k for k in mine if theirs.get(k) != mine[k])
    if differ:
        raise UserError(f"{path}: checkpoint made with other settings ({differ[0]} = {theirs.get(differ[0])!r}, "
                        f"now {mine[differ[0]]!r}); pass --restart to start over")
    return state


def distilled_loss(logits, ids, teacher_logits, distill: float):
    """(1 - distill) * next-token cross-entropy + distill * KL(teacher || model), means per token."""
    import torch.nn.functional as F

    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    ce = F.nll_loss(logp.flatten(0, 1), ids[:, 1:].flatten())
    t_logp = F.log_softmax(teacher_logits[:, :-1].float(), dim=-1)
    kl = F.kl_div(logp.flatten(0, 1), t_logp.flatten(0, 1), log_target=True, reduction="batchmean")
    return (1 - distill) * ce + distill * kl


def train(model, layers, train_windows: np.ndarray, eval_windows: np.ndarray, recipe: FinetuneRecipe,
          checkpoint: Path, *, restart: bool = False, stop_after: int | None = None,
          progress: bool = True, log: Callable[[str], None] = print, teacher=None) -> TrainResult:
    """Fine-tune `model` (a transformers causal LM whose `layers` have gated MLPs) in place.

    Resumes from `checkpoint` when it exists (unless restart). `stop_after`: run at most that many
    steps in this call, then checkpoint and return (the rest on a later call). `teacher`: the
    original model, whose next-token distribution the loss follows when recipe.distill > 0."""
    import torch
    from tqdm import tqdm

    if recipe.distill > 0 and teacher is None:
        raise ValueError("recipe.distill > 0 needs the original model as teacher")
    stages = recipe.schedule()
    stage_ends = {s.end for s in stages}
    torch.manual_seed(recipe.seed)
    # ReLU at once (the paper: alpha 1 from step 0), or blended in over the first relu_anneal of the run
    blends = anneal.install(layers)

    def set_step(step: int) -> None:
        anneal.set_alpha(blends, anneal.alpha_at(step, recipe.relu_anneal, recipe.steps))
    params = trainable(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in params:
        p.requires_grad_(True)
    model.train()
    device = _device(model)
    opt = torch.optim.AdamW([p for _, p in params], lr=recipe.lr, weight_decay=recipe.weight_decay)

    start, history = 0, []
    if checkpoint.exists() and not restart:
        state = _load_checkpoint(checkpoint, recipe)
        with torch.no_grad():
            for n, p in params:
                p.copy_(state["model"][n])
        opt.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        opt_state_to(opt, device)
        start, history = state["step"], [StagePoint(**h) for h in state["history"]]
        log(f"resuming from {checkpoint} at step {start} of {recipe.steps}")

    def point(step: int) -> StagePoint:
        set_step(step)
        model.eval()
        loss, sp, sp_t, layer_sp = evaluate(model, layers, eval_windows, recipe.fatrelu)
        model.train()
        return StagePoint(step, schedule.factor(stages, max(step - 1, 0)), loss, sp, sp_t, layer_sp)

    def save(step: int) -> None:
        _save(checkpoint, {"format": CHECKPOINT_FORMAT, "recipe": recipe.training_fields(), "step": step,
                           "model": {n: p.detach().clone() for n, p in params}, "optim": opt.state_dict(),
                           "torch_rng": torch.get_rng_state(),
                           "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                           "history": [vars(h) for h in history]})

    if start == 0 and not history:
        history.append(point(0))
    end = recipe.steps if stop_after is None else min(recipe.steps, start + stop_after)
    tape = Tape()
    bar = tqdm(total=recipe.steps, initial=start, desc="prosparse", unit="step", disable=not progress)
    with bar, recording(layers, tape):
        for step in range(start, end):
            lam = schedule.factor(stages, step)
            set_step(step)
            for g in opt.param_groups:
                g["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup_steps) if recipe.warmup_steps else recipe.lr
            ids = torch.from_numpy(np.asarray(batch_at(train_windows, recipe, step), dtype=np.int64)).to(device)
            tape.l1.clear(), tape.zeros.clear(), tape.below.clear()
            if recipe.distill > 0:
                with torch.no_grad():
                    teacher_logits = teacher(input_ids=ids).logits
                ce = distilled_loss(model(input_ids=ids).logits, ids, teacher_logits, recipe.distill)
            else:
                ce = model(input_ids=ids, labels=ids).loss
            reg = torch.stack(tape.l1).sum()
            loss = ce + lam * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for _, p in params], recipe.grad_clip)
            opt.step()
            sparsity = sum(tape.zeros) / (tape.total * len(layers))
            bar.set_postfix(ce=f"{ce.item():.3f}", reg=f"{reg.item():.3f}", lam=f"{lam:.3g}", sparsity=f"{sparsity:.3f}")
            bar.update(1)
            done = step + 1
            if done in stage_ends:
                with recording_paused(layers, tape):
                    history.append(point(done))
                h = history[-1]
                log(f"step {done}: lambda {h.lam:.3g}, held-out ppl {h.ppl:.2f}, FFN sparsity {h.sparsity:.3f} "
                    f"(<= {recipe.fatrelu}: {h.sparsity_at_threshold:.3f})")
            if done % recipe.save_every == 0 or done == end:
                save(done)
    set_step(end)
    model.eval()
    return TrainResult(end, end * recipe.batch * train_windows.shape[1], history, start)


@contextlib.contextmanager
def recording_paused(layers, tape: Tape):
    """evaluate() installs its own recording; give it the plain MLPs meanwhile."""
    saved = [layer.mlp.__dict__.pop("forward") for layer in layers]
    try:
        yield
    finally:
        for layer, fwd in zip(layers, saved):
            layer.mlp.forward = fwd
