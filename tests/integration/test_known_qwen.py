"""The Qwen2.5-Coder-1.5B-Instruct Q4_K_M known model: its 22 packages joined into one GGUF file."""

from __future__ import annotations

import gguf
import pytest
from ggufsparse.models import parts
from ggufsparse.models.known import KNOWN_MODELS

pytestmark = pytest.mark.model

QWEN = next(m for m in KNOWN_MODELS if m.name == "qwen2.5-coder-1.5b-q4_k_m")


def test_the_joined_file_has_the_expected_size_and_checked_hash(qwen_coder_model):
    assert qwen_coder_model.stat().st_size == 1_117_320_768 == QWEN.parts.size
    assert parts.is_cached(qwen_coder_model, QWEN.parts.size, QWEN.parts.sha256)


def test_gguf_py_reads_a_28_block_qwen2_model_in_q4_k_and_q6_k(qwen_coder_model):
    reader = gguf.GGUFReader(qwen_coder_model)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    assert reader.fields["qwen2.block_count"].contents() == 28
    types = {t.tensor_type for t in reader.tensors}
    assert {gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K} <= types
    blocks = {int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")}
    assert blocks == set(range(28))
