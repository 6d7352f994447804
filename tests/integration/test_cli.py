"""The command line: help, model names, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ggufsparse", *args], capture_output=True, text=True, check=False, **kw)


def test_help_lists_the_commands():
    out = run("--help").stdout
    for command in ("build-runtime", "doctor", "models", "chat", "generate"):
        assert command in out


@pytest.mark.model
def test_models_lists_the_default_model(default_model):
    rows = json.loads(run("models", "--json").stdout)
    default = [r for r in rows if r["default"]]
    assert len(default) == 1 and default[0]["path"] == str(default_model)


def test_unknown_model_is_a_one_line_error():
    proc = run("generate", "no-such-model", "-p", "hi")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no-such-model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.runtime
@pytest.mark.model
def test_generate_continues_the_prompt_through_the_patched_runtime():
    prompt = "The capital of France is"
    proc = run("generate", "default", "-p", prompt, "--temp", "0", "-n", "12")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(prompt) and len(proc.stdout.strip()) > len(prompt) + 5
