"""`ggufsparse chat default` answers, from a terminal and from a pipe."""

from __future__ import annotations

import subprocess
import sys

import pexpect
import pytest
from ggufsparse.runtime import llm

pytestmark = [pytest.mark.runtime, pytest.mark.model]

CHAT = [sys.executable, "-m", "ggufsparse", "chat", "default", "--temp", "0", "-n", "48"]


def test_chat_answers_lines_from_a_pipe(default_model):
    questions = ["Hello! Who are you?", "Name one colour of the sky."]
    proc = subprocess.run(CHAT, input="".join(q + "\n" for q in questions),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    # the same conversation through llama-cpp-python's chat template at temperature 0: by
    # construction the answers `chat` streams, each with the history before it
    model = llm.load(default_model, n_ctx=2048)
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    expected = []
    for q in questions:
        messages.append({"role": "user", "content": q})
        reply = model.create_chat_completion(messages, max_tokens=48, temperature=0)
        expected.append(reply["choices"][0]["message"]["content"] or "")
        messages.append({"role": "assistant", "content": expected[-1]})
    assert all(a.strip() for a in expected) and expected[0] != expected[1]
    assert proc.stdout == "".join(a + "\n" for a in expected)
    assert "<|im_" not in proc.stdout  # the chat template's markers are not part of the answer


def test_chat_in_a_terminal_survives_ctrl_c_and_quits_on_ctrl_d():
    child = pexpect.spawn(CHAT[0], CHAT[1:], encoding="utf-8", timeout=120)
    child.expect_exact("> ")
    child.sendline("Name one colour of the sky.")
    child.expect_exact("> ")
    echoed, _, answer = child.before.partition("\n")  # the terminal echoes the typed line first
    assert "colour of the sky" in echoed and len(answer.split()) >= 3, child.before
    child.sendline("Write a very long story about a llama who travels the world.")
    child.expect_exact("travels the world.")  # the terminal's echo of the typed line
    child.expect(r"\w+ \w+")  # the answer has started streaming
    child.sendintr()
    child.expect_exact("> ")
    assert "[interrupted]" in child.before
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
