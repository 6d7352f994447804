"""Interactive chat and one-shot generation through llama-cpp-python on the patched runtime."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import TextIO

DEFAULT_SYSTEM = "You are a helpful assistant."


def generate(llm, prompt: str, *, max_tokens: int, temperature: float, seed: int, out: TextIO) -> str:
    """Stream a plain completion of `prompt` to `out`; return the text."""
    pieces = []
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=temperature,
                                       seed=seed, stream=True):
        piece = chunk["choices"][0]["text"]
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces)


@contextlib.contextmanager
def _ctrl_c_flag() -> Iterator[list[bool]]:
    """Ctrl-C sets a flag instead of raising. A KeyboardInterrupt raised while llama.cpp calls
    back into Python (its log callback) is swallowed by ctypes, so a raised one can get lost."""
    flag = [False]

    def handler(_signum, _frame) -> None:
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _answer(llm, messages: list[dict], max_tokens: int, temperature: float, out: TextIO) -> str | None:
    """The streamed answer, or None if Ctrl-C stopped it."""
    pieces = []
    with _ctrl_c_flag() as interrupted:
        # create_chat_completion formats with the chat template stored in the GGUF
        for chunk in llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=temperature,
                                                stream=True):
            if interrupted[0]:
                return None
            piece = chunk["choices"][0]["delta"].get("content") or ""
            pieces.append(piece)
            out.write(piece)
            out.flush()
        if interrupted[0]:
            return None
    return "".join(pieces)


def chat(llm, *, system: str, max_tokens: int, temperature: float,
         inp: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    """Read a line, stream the answer; Ctrl-C stops an answer, Ctrl-C or EOF at the prompt quits."""
    messages = [{"role": "system", "content": system}] if system else []
    interactive = inp.isatty()
    while True:
        try:
            if interactive:
                out.write("> ")
                out.flush()
            line = inp.readline()
        except KeyboardInterrupt:
            out.write("\n")
            return
        if not line:
            return
        prompt = line.strip()
        if not prompt:
            continue
        if prompt in ("/exit", "/quit"):
            return
        messages.append({"role": "user", "content": prompt})
        reply = _answer(llm, messages, max_tokens, temperature, out)
        if reply is None:
            out.write(" [interrupted]")
        out.write("\n")
        out.flush()
        if reply:
            messages.append({"role": "assistant", "content": reply})
        else:
            messages.pop()
