"""`ggufsparse chat default` answers, from a terminal and from a pipe."""

from __future__ import annotations

import subprocess
import sys

import pexpect
import pytest

pytestmark = [pytest.mark.runtime, pytest.mark.model]

CHAT = [sys.executable, "-m", "ggufsparse", "chat", "default", "--temp", "0", "-n", "48"]


def test_chat_answers_lines_from_a_pipe():
    proc = subprocess.run(CHAT, input="Hello! Who are you?\nName one colour of the sky.\n",
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    answers = [a for a in proc.stdout.strip().split("\n") if a.strip()]
    assert len(answers) >= 2
    assert "<|im_" not in proc.stdout  # the chat template's markers are not part of the answer
    assert "blue" in proc.stdout.lower()  # the second answer is about the sky


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
