"""`ggufsparse synth --type q4_k_m`: the runtime's llama-quantize makes the per-tensor mix, with its
fallbacks where 256 does not divide the rows, and llama.cpp loads the file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import gguf
import pytest
from tiny_vocab import tiny_vocab

pytestmark = [pytest.mark.runtime]

K_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


def synth(*args: str) -> None:
    proc = subprocess.run(["ggufsparse", "synth", "-q", "-t", "2", *args], capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr


def types_of(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.mark.model
def test_q4_k_m_of_smollm2_falls_back_where_its_576_inputs_allow_no_k_quant(tmp_path, runtime):
    out = tmp_path / "q4_k_m.gguf"
    synth("--shape", "smollm2-135m", "--layers", "2", "--type", "q4_k_m", "-o", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q4_k_m.gguf"]  # no temporary file left
    types = types_of(out)
    assert types["blk.0.ffn_down.weight"] in {"Q4_K", "Q6_K"}  # 1536 inputs
    for i in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):  # 576 inputs
            assert types[f"blk.{i}.{name}.weight"] not in K_TYPES, (name, types[f"blk.{i}.{name}.weight"])
    proc = subprocess.run([str(runtime.tools["llama-cli"]), "-m", str(out), "-p", "a", "-n", "2", "-st", "-t", "2",
                           "--temp", "0"], check=False, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_q4_k_m_of_llama2_7b_quantizes_the_ffn_in_k_types(tmp_path):
    # a vocabulary of 256 keeps the embedding and output matrices small: one layer of 7B's shapes
    vocab = tiny_vocab(tmp_path / "vocab.gguf")
    out = tmp_path / "q4_k_m.gguf"
    synth("--shape", "llama2-7b", "--layers", "1", "--type", "q4_k_m", "--tokenizer-from", str(vocab), "-o", str(out))
    types = types_of(out)
    assert types["blk.0.ffn_gate.weight"] == "Q4_K"
    assert types["blk.0.ffn_down.weight"] in {"Q4_K", "Q6_K"}
    assert types["blk.0.attn_q.weight"] == "Q4_K"
