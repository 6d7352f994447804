"""Open a GGUF with llama-cpp-python on the patched runtime, with errors that say why."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ggufsparse.errors import UserError

# ggml.h of the pinned llama.cpp (llama_cpp._logger still uses an older numbering)
GGML_LOG_LEVEL_ERROR = 4


class ModelLoadError(UserError):
    """The runtime refused the file; the message names the file and what is wrong with it."""


@contextlib.contextmanager
def _captured_log(echo: bool) -> Iterator[list[str]]:
    """Collect llama.cpp's error lines (they name the tensor at fault) while loading."""
    import llama_cpp
    import llama_cpp._logger as default_logger

    errors: list[str] = []

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        if level == GGML_LOG_LEVEL_ERROR:
            errors.append(line.strip())
        if echo:
            print(line, end="", file=sys.stderr, flush=True)

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        llama_cpp.llama_log_set(default_logger.llama_log_callback, ctypes.c_void_p(0))


def _reason(errors: list[str]) -> str:
    """The most specific error line: llama.cpp logs the cause, then generic follow-ups."""
    causes = [line.split("error loading model:", 1)[-1].strip() for line in errors]
    specific = [c for c in causes if "failed to load model" not in c.lower()]
    return (specific or causes or ["llama.cpp could not load it"])[0]


def load(path: Path, *, n_ctx: int = 2048, verbose: bool = False, **kwargs: Any):
    """A llama_cpp.Llama for the file, or ModelLoadError naming the file and the cause."""
    from llama_cpp import Llama

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    with _captured_log(verbose) as errors:
        try:
            return Llama(model_path=str(path), n_ctx=n_ctx, verbose=verbose, **kwargs)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {_reason(errors) if errors else exc}") from None
