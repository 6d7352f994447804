"""The model's own tokenizer (llama.cpp's, through llama-cpp-python), so calibration and
evaluation see exactly the tokens the runtime sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def gguf_tokenizer(path: Path) -> tuple[Callable[[str], list[int]], int | None]:
    """(text -> token ids without BOS, the BOS id if the model adds one, else None)."""
    from ggufsparse.runtime import llm

    vocab = llm.load(path, vocab_only=True)
    bos = vocab.token_bos() if vocab._model.add_bos_token() else None
    return (lambda text: vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)), bos
