"""Two sparse models in one process count what their own sparse ops skipped (per-context
counters, llama_sparse_stats_* in patches/0004), and one context's options leave the other's alone."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraTensor
from ggufsparse.runtime import llm, sparse_api
from sparse_files import layer0_extras, write

pytestmark = [pytest.mark.runtime, pytest.mark.model]


def _with_threshold(extras: list[ExtraTensor], value: float) -> list[ExtraTensor]:
    thr = extras[0]
    assert thr.name == layout.FFN_GATE_THR.name(0)
    return [ExtraTensor(thr.name, np.full_like(thr.data, value), gguf.GGMLQuantizationType.F32), *extras[1:]]


def test_two_models_in_one_process_report_their_own_counters(default_model, tmp_path):
    extras = layer0_extras(default_model)
    n_ff = extras[0].data.shape[0]
    # layer 0 only: thresholds 0 skip (almost) nothing, thresholds 1e9 skip every channel
    keep_all = llm.load(write(default_model, tmp_path / "keep.gguf", _with_threshold(extras, 0.0)), n_ctx=64)
    skip_all = llm.load(write(default_model, tmp_path / "skip.gguf", _with_threshold(extras, 1e9)), n_ctx=64)
    for model in (keep_all, skip_all):
        sparse_api.count(model)

    tokens = keep_all.tokenize(b"The quick brown fox jumps over the lazy dog")
    assert len(tokens) >= 9
    keep_all.eval(tokens[:5])
    skip_all.eval(tokens[:9])
    keep_all.eval(tokens[5:7])  # decode-sized batches too: the skipping kernels

    keep, skip = sparse_api.report(keep_all), sparse_api.report(skip_all)
    # each context counted exactly its own tokens x channels of layer 0, nothing of the other's
    assert keep["ffn"]["total"] == 7 * n_ff and len(keep["ffn"]["layers"]) == 1
    assert skip["ffn"]["total"] == 9 * n_ff and len(skip["ffn"]["layers"]) == 1
    assert skip["ffn"]["skipped"] == 9 * n_ff and skip["ffn"]["fraction"] == 1.0
    assert keep["ffn"]["fraction"] < 0.01

    # the dense option of one context: its graph stops counting (no sparse layer runs), the other goes on
    sparse_api.set_dense(skip_all, True)
    skip_all.eval(tokens[:3])
    keep_all.eval(tokens[7:9])
    assert sparse_api.report(skip_all)["ffn"]["total"] == 9 * n_ff
    assert sparse_api.report(keep_all)["ffn"]["total"] == 9 * n_ff

    sparse_api.reset(keep_all)
    assert "ffn" not in sparse_api.report(keep_all)
    assert sparse_api.report(skip_all)["ffn"]["total"] == 9 * n_ff
