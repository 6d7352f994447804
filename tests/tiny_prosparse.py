"""A tiny random Llama and its data, for ProSparse's training-loop tests (unit and integration)."""

from __future__ import annotations

import numpy as np
import torch
from ggufsparse.eval import perplexity
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe


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


def kl_to(teacher, model, windows) -> float:
    """Mean KL(teacher || model) of the next-token distributions at every position of the windows."""
    with torch.no_grad():
        ids = torch.from_numpy(windows)
        t, m = (x(input_ids=ids).logits.double().numpy() for x in (teacher, model))
    scores = perplexity.Scores()
    for w in range(len(windows)):
        scores.add(m[w], windows[w], t[w])  # the targets only feed the perplexity, unused here
    return scores.result()["kl_mean"]
