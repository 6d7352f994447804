"""Log-likelihoods of multiple-choice continuations, each example's context decoded once.

Tokenization follows lm-evaluation-harness (lm_eval/api/model.py, `_encode_pair` and
`loglikelihood`): trailing spaces of the context move to the continuation; context+continuation
is tokenized whole and split at the context's own token count; the model's own BOS rule applies
(llama.cpp's add_special, as lm-eval's HF tokenizers do by default); an empty context becomes
BOS; inputs longer than the context window lose tokens on the left (`[-(max_length+1):]`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.eval.mc_tasks import Example
from ggufsparse.runtime.session import Piece, Session, log_softmax, token_logprobs


@dataclass
class Group:
    """Continuations scored after one context; `slots[i]` is (example, option) of conts[i]."""

    context: list[int]
    conts: list[list[int]]
    slots: list[tuple[int, int]]

    @property
    def cells(self) -> int:
        return len(self.context) + sum(len(c) - 1 for c in self.conts)


def encode_pair(session: Session, context: str, continuation: str) -> tuple[list[int], list[int]]:
    if not context:
        return [session.bos], session.tokenize(continuation, add_special=False)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = session.tokenize(context + continuation, add_special=True)
    ctx = session.tokenize(context, add_special=True)
    return ctx, whole[len(ctx):]


def _groups(session: Session, examples: list[Example], max_len: int) -> list[Group]:
    out = []
    for e, ex in enumerate(examples):
        pairs = ([(c, ex.choices[0]) for c in ex.contexts] if ex.per_context
                 else [(ex.contexts[0], ch) for ch in ex.choices])
        encoded = [encode_pair(session, c, ch) for c, ch in pairs]
        for i, (ctx, cont) in enumerate(encoded):
            if not cont:
                raise UserError(f"example {ex.id}: option {i} has no tokens of its own after the context")
            if len(cont) > max_len:
                raise UserError(f"example {ex.id}: a continuation of {len(cont)} tokens does not fit "
                                f"the context window of {max_len} (--task-ctx)")
        fits = all(len(ctx) + len(cont) - 1 <= max_len for ctx, cont in encoded)
        if not ex.per_context and fits:  # one context, decoded once for all choices
            out.append(Group(encoded[0][0], [c for _, c in encoded], [(e, i) for i in range(len(encoded))]))
            continue
        for i, (ctx, cont) in enumerate(encoded):
            whole = (ctx + cont)[-(max_len + 1):]  # lm-eval's left truncation
            out.append(Group(whole[:len(whole) - len(cont)], [cont], [(e, i)]))
    return out


def _score_group(session: Session, g: Group) -> list[float]:
    """The context is decoded once; each continuation is decoded on top of its cache, which is cut
    back to the context before the next. One sequence at a time: with several sequences in one
    batch of a shared cache the pinned llama.cpp gave logits up to 1.1 away from decoding each
    sequence alone (SmolLM2 Q4_1, PIQA), while this gives the same sums as decoding context and
    continuation in one piece (to 1e-12; a one-token decode takes llama.cpp's single-token path,
    whose rounding differs)."""
    L = len(g.context)
    last = session.decode([Piece(g.context, 0, [0], [False] * (L - 1) + [True])])
    first_lp = log_softmax(last)[0]
    sums = []
    for cont in g.conts:
        total = first_lp[cont[0]]
        if len(cont) > 1:
            session.truncate(L)
            logits = session.decode([Piece(cont[:-1], L, [0], [True] * (len(cont) - 1))], clear=False)
            total += token_logprobs(logits, cont[1:]).sum()
        sums.append(float(total))
    return sums


def loglikelihoods(session: Session, examples: list[Example], max_len: int = 2048,
                   progress: bool = True, desc: str = "task") -> list[np.ndarray]:
    """Per example, the summed log-likelihood of each option (choice, or context for per-context
    examples); inputs are cut to max_len tokens (lm-eval's max_length, at most the training context)."""
    from tqdm import tqdm

    max_len = min(max_len, session.n_ctx_train or max_len)
    groups = _groups(session, examples, max_len)
    session.open_context(max(g.cells for g in groups))
    out = [np.zeros(ex.n_options) for ex in examples]
    with tqdm(total=sum(g.cells for g in groups), desc=desc, unit="tok", disable=not progress) as bar:
        for g in groups:
            for (e, i), ll in zip(g.slots, _score_group(session, g)):
                out[e][i] = ll
            bar.update(g.cells)
    return out
