"""Perplexity over non-overlapping windows, scored as llama-perplexity scores them, and the KL
divergence and top-1 agreement of a model against a reference on the same windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.runtime.session import ROWS_AT_ONCE, Piece, Session, log_softmax


def read_text(path: Path, docs: slice | None = None) -> str:
    """A text file as is, or the documents of a .jsonl file ("text" fields, optionally gzip'd)
    joined by blank lines; `docs` picks documents of a .jsonl file (e.g. held-out calibration text:
    the calibration reads documents from the start)."""
    from ggufsparse.calib.text import iter_documents

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    is_jsonl = path.name.removesuffix(".gz").endswith(".jsonl")
    if docs is not None and not is_jsonl:
        raise UserError(f"{path}: --ppl-docs needs a .jsonl file of documents")
    try:
        if is_jsonl:
            chosen = list(iter_documents(path))[docs or slice(None)]
            text = "\n\n".join(chosen)
        else:
            text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise UserError(f"{path}: the text file is empty" if docs is None else
                        f"{path}: no text in documents {docs.start}:{docs.stop}")
    return text


def windows(session: Session, text: str, source: Path, ctx: int, chunks: int) -> list[list[int]]:
    """llama-perplexity's chunks: the whole text tokenized once (BOS first if the model adds one),
    cut into windows of ctx tokens, each starting with BOS if the model adds one; 0 chunks: all."""
    tokens = session.tokenize(text, add_special=True)
    available = len(tokens) // ctx
    if available == 0:
        raise UserError(f"{source}: {len(tokens)} tokens, fewer than one window of --ctx {ctx}")
    n = available if chunks <= 0 else min(chunks, available)
    out = []
    for i in range(n):
        w = tokens[i * ctx:(i + 1) * ctx]
        if session.adds_bos:
            w[0] = session.bos
        out.append(w)
    return out


@dataclass
class Scores:
    """Running sums over scored tokens; `kl` and `top1` only when a reference was given."""

    nll: float = 0.0
    ref_nll: float = 0.0
    count: int = 0
    top1_same: int = 0
    kl: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: np.ndarray, targets: np.ndarray, ref_logits: np.ndarray | None) -> None:
        for r0 in range(0, len(targets), ROWS_AT_ONCE):
            rows = slice(r0, r0 + ROWS_AT_ONCE)
            t = targets[rows]
            lp = log_softmax(logits[rows])
            self.nll -= float(lp[np.arange(len(t)), t].sum())
            if ref_logits is not None:
                ref_lp = log_softmax(ref_logits[rows])
                self.ref_nll -= float(ref_lp[np.arange(len(t)), t].sum())
                self.kl.append((np.exp(ref_lp) * (ref_lp - lp)).sum(axis=-1))
                self.top1_same += int((ref_lp.argmax(-1) == lp.argmax(-1)).sum())
        self.count += len(targets)

    def result(self) -> dict:
        out = {"ppl": math.exp(self.nll / self.count), "tokens_scored": self.count}
        if self.kl:
            kl = np.concatenate(self.kl)
            out |= {"ref_ppl": math.exp(self.ref_nll / self.count), "kl_mean": float(kl.mean()),
                    "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
                    "top1_agreement": self.top1_same / self.count}
        return out


def score(model: Session, ref: Session | None, wins: list[list[int]], progress: bool = True) -> dict:
    """Perplexity of the second half of every window (llama-perplexity's `first = n_ctx/2`), and
    against `ref` the KL divergence KL(ref || model) per scored token and top-1 agreement."""
    from tqdm import tqdm

    ctx = len(wins[0])
    first = ctx // 2
    wants = [first <= k < ctx - 1 for k in range(ctx)]
    scores = Scores()
    for s in (model, ref):
        if s is not None:
            s.open_context(ctx)
    for w in tqdm(wins, desc="perplexity", unit="window", disable=not progress):
        piece = [Piece(w, 0, [0], wants)]
        targets = np.array(w[first + 1:], dtype=np.int64)
        ref_logits = ref.decode(piece) if ref is not None else None
        scores.add(model.decode(piece), targets, ref_logits)
    return scores.result() | {"ctx": ctx, "windows": len(wins)}
