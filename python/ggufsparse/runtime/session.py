"""A model and a context of the patched llama.cpp, for scoring many token sequences at once.

llama-cpp-python's `Llama` decodes one sequence at a time; evaluation packs several sequences
into one batch (one KV cache shared by all, each sequence seeing only its own tokens), and asks
for logits only where a score needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ggufsparse.runtime.llm import ModelLoadError, _captured_log, _reason

# llama_flash_attn_type. "auto" is what llama.cpp's tools do (on for the CPU backend); ggml's CPU
# flash attention rounds Q and the running sums to f16, which moves SmolLM2's logits by up to 1.0
# and with the cache's layout; "off" is the exact f32 softmax.
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


@dataclass
class Piece:
    """Tokens of one batch entry: consecutive positions, each token in every sequence of seq_ids
    (a prompt shared by several continuations is decoded once), logits wanted where `wants` is set."""

    tokens: list[int]
    pos0: int
    seq_ids: list[int]
    wants: list[bool] = field(default_factory=list)


class Session:
    """llama.cpp model + context; `decode` returns logits rows in the order they were asked for."""

    def __init__(self, path: Path, n_threads: int | None = None, verbose: bool = False,
                 flash_attn: str = "auto"):
        import llama_cpp

        self._lib = llama_cpp
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such file")
        llama_cpp.llama_backend_init()
        self.verbose = verbose
        self.flash_attn = FLASH_ATTN[flash_attn]
        with _captured_log(verbose) as errors:
            self.model = llama_cpp.llama_model_load_from_file(str(path).encode(),
                                                              llama_cpp.llama_model_default_params())
        if not self.model:
            raise ModelLoadError(f"{path}: {_reason(errors)}")
        self.path = path
        self.n_threads = n_threads or os.cpu_count() or 1
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.adds_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(self.model)
        self.ctx = None
        self.n_ctx = 0

    def open_context(self, n_ctx: int, n_seq: int = 1) -> None:
        """(Re)create the context: a KV cache of n_ctx cells shared by up to n_seq sequences, and
        batches of up to n_ctx tokens."""
        lib = self._lib
        self._free_context()
        params = lib.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.flash_attn_type = self.flash_attn
        params.n_threads = params.n_threads_batch = self.n_threads
        with _captured_log(self.verbose) as errors:
            self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise ModelLoadError(f"{self.path}: no context of {n_ctx} tokens ({_reason(errors)})")
        self.n_ctx = n_ctx
        self._batch = lib.llama_batch_init(n_ctx, 0, n_seq)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """llama.cpp's tokenizer, as its tools call it (add_special: BOS if the model wants one)."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, False)
        if n < 0:  # never for cap > bytes + specials, but llama.cpp reports the size it needs
            buf = (self._lib.llama_token * -n)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, -n, add_special, False)
        return list(buf[:n])

    def decode(self, pieces: list[Piece], clear: bool = True) -> np.ndarray:
        """Decode the pieces as one batch after clearing the cache (clear=False: on top of what it
        holds); logits [outputs, n_vocab] (a copy)."""
        b = self._batch
        i = 0
        for p in pieces:
            wants = p.wants or [False] * len(p.tokens)
            for k, tok in enumerate(p.tokens):
                b.token[i] = tok
                b.pos[i] = p.pos0 + k
                b.n_seq_id[i] = len(p.seq_ids)
                for j, s in enumerate(p.seq_ids):
                    b.seq_id[i][j] = s
                b.logits[i] = wants[k]
                i += 1
        if i > self.n_ctx:
            raise ValueError(f"batch of {i} tokens exceeds the context of {self.n_ctx}")
        b.n_tokens = i
        if clear:
            self._lib.llama_memory_clear(self._lib.llama_get_memory(self.ctx), True)
        rc = self._lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc}) on {self.path}")
        n_out = sum(sum(p.wants) for p in pieces)
        ptr = self._lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).copy()

    def truncate(self, n_tokens: int, seq: int = 0) -> None:
        """Forget the cache of seq from position n_tokens on."""
        self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self.ctx), seq, n_tokens, -1)

    def _free_context(self) -> None:
        """The runtime writes its GGUFSPARSE_STATS report when a context is freed."""
        if self.ctx:
            self._lib.llama_batch_free(self._batch)
            with _captured_log(self.verbose):
                self._lib.llama_free(self.ctx)
            self.ctx = None

    def close(self) -> None:
        self._free_context()
        if self.model:
            self._lib.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> Session:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


ROWS_AT_ONCE = 64  # log-softmax rows per step: bounds memory for 256k vocabularies


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64 (sums over a 50k vocabulary lose digits in float32)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def token_logprobs(logits: np.ndarray, tokens) -> np.ndarray:
    """log p(tokens[i]) under logits row i, ROWS_AT_ONCE rows at a time."""
    out = np.empty(len(tokens))
    for r0 in range(0, len(tokens), ROWS_AT_ONCE):
        lp = log_softmax(logits[r0:r0 + ROWS_AT_ONCE])
        out[r0:r0 + len(lp)] = lp[np.arange(len(lp)), tokens[r0:r0 + len(lp)]]
    return out
