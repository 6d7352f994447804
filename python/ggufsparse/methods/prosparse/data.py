"""Training and held-out windows for a fine-tune, from one text file: the last windows of the
token stream are held out (never trained on) to follow perplexity and sparsity across stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufsparse.calib import text as calib_text
from ggufsparse.errors import UserError


@dataclass(frozen=True)
class TrainingText:
    train: np.ndarray  # (n, seq_len) token ids, each window starting with BOS when the model adds one
    held_out: np.ndarray
    source: str
    sha256: str


def load(path: Path, tokenize, bos: int | None, seq_len: int, n_train: int, n_held_out: int) -> TrainingText:
    """Up to n_train training windows (fewer if the text is shorter: batches then cycle through
    them) and n_held_out windows after them."""
    text = calib_text.load(path, tokenize, bos, (n_train + n_held_out) * seq_len, seq_len)
    n = len(text.windows)
    if n < n_held_out + 1:
        raise UserError(f"{path}: {n} windows of {seq_len} tokens; need at least {n_held_out + 1} "
                        "(more text, a smaller --seq-len or fewer --eval-windows)")
    return TrainingText(text.windows[: n - n_held_out], text.windows[n - n_held_out:], text.source, text.sha256)
