"""The runtime's choice between the skipping kernels and the dense products (llama-sparse-tune.cpp in
patches/0005; docs/never-slower.md): timed per site when a context is made, reported with its
timings, and forced with GGUFSPARSE_KERNELS. The dense products run on the same thresholded inputs,
so either choice computes the same model.

GGML_SPARSE_SCALAR=1 stands for a CPU where the skipping kernels are slow: they then take their plain-C
paths (ten times slower or more), and the timing must give every site to the dense products."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ggufsparse.paths import shared_data_dir
from ggufsparse.runtime import sparse_api
from ggufsparse.runtime.session import Piece, Session
from sparse_files import converted_chess

pytestmark = [pytest.mark.runtime, pytest.mark.model]

SITES = {"ffn", "attn_q", "attn_output"}   # what CHESS 0.5/0.5 skips


@pytest.fixture(scope="module")
def chess(default_model, tmp_path_factory) -> Path:
    return converted_chess(default_model, tmp_path_factory.mktemp("kernels") / "chess.gguf")


def kernels_of(model: Path, **env: str) -> dict:
    """What `ggufsparse doctor --model` reports the runtime chose for the file on 2 threads."""
    proc = subprocess.run([sys.executable, "-m", "ggufsparse", "doctor", "--model", str(model), "--json"],
                          capture_output=True, text=True, check=False, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)["kernels"]


def test_slow_skipping_kernels_lose_to_the_dense_products(chess):
    k = kernels_of(chess, GGUFSPARSE_KERNELS="auto", GGML_SPARSE_SCALAR="1")
    assert k["mode"] == "auto" and set(k["sites"]) == SITES, k
    for site, v in k["sites"].items():
        assert v["sparse_ms"] > v["dense_ms"] > 0, (site, v)
        assert v["kernels"] == "dense", (site, v)
        # six layers spread over the model, inputs at the file's calibrated sparsity (about 0.5)
        assert v["layers"] == 6 and 0.4 < v["sparsity"] < 0.6, (site, v)


def test_the_choice_follows_the_timings_and_is_reported(chess):
    k = kernels_of(chess, GGUFSPARSE_KERNELS="auto")
    assert k["mode"] == "auto" and set(k["sites"]) == SITES, k
    for site, v in k["sites"].items():
        assert v["kernels"] == ("sparse" if v["sparse_ms"] < v["dense_ms"] else "dense"), (site, v)
    # batch sizes: timed upward on the costliest site the skipping kernels won, while they win
    tokens = k["tokens"]
    won = [t["tokens"] for t in tokens if t["sparse_ms"] < t["dense_ms"]]
    assert [t["tokens"] for t in tokens] == [2, 4, 8][:len(tokens)]
    assert won == [2, 4, 8][:len(won)] and len(tokens) - len(won) <= 1
    if any(v["kernels"] == "sparse" for v in k["sites"].values()):
        assert k["max_sparse_tokens"] == max(won, default=1)
    assert 0 < k["tune_ms"] < 2000, k   # the cost at load: a 135M model on 2 threads
    assert k["threads"] == 2

    # forced: nothing timed, the mode reported
    assert kernels_of(chess, GGUFSPARSE_KERNELS="sparse") == {"mode": "sparse", "dense_model": False}
    assert kernels_of(chess, GGUFSPARSE_KERNELS="dense") == {"mode": "dense", "dense_model": False}


def _decode_one_at_a_time(model: Path, env: dict[str, str], tokens: list[int]) -> tuple[np.ndarray, dict]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # read when the context is made
    try:
        with Session(model, n_threads=2) as s:
            s.open_context(len(tokens) + 8)
            sparse_api.count(s)
            rows = [s.decode([Piece([t], i, [0], [True])], clear=i == 0)[0] for i, t in enumerate(tokens)]
            rep = sparse_api.report(s)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return np.stack(rows), rep


def _nll(logits: np.ndarray, tokens: list[int]) -> float:
    lp = logits[:-1] - logits[:-1].max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    return float(-lp[np.arange(len(tokens) - 1), tokens[1:]].mean())


def _wiki_tokens(model: Path, start: int, n: int) -> list[int]:
    text = (shared_data_dir() / "wikitext2" / "wiki.test.raw").read_text()[start:start + 4000]
    with Session(model, n_threads=2) as s:
        return s.tokenize(text, add_special=True)[:n]


def test_the_dense_products_compute_the_same_model(chess):
    tokens = _wiki_tokens(chess, 5000, 96)
    sparse, sparse_rep = _decode_one_at_a_time(chess, {"GGUFSPARSE_KERNELS": "sparse"}, tokens)
    dense, dense_rep = _decode_one_at_a_time(chess, {"GGUFSPARSE_KERNELS": "dense"}, tokens)
    original, _ = _decode_one_at_a_time(chess, {"GGUFSPARSE_DENSE": "1"}, tokens)
    assert sparse_rep["kernels"]["mode"] == "sparse" and dense_rep["kernels"]["mode"] == "dense"
    # the thresholds apply either way: the same share of channels is zero (up to what rounding
    # moves across a threshold)
    for site in SITES:
        assert sparse_rep[site]["total"] == dense_rep[site]["total"]
        assert abs(sparse_rep[site]["fraction"] - dense_rep[site]["fraction"]) < 0.02, site
    # The thresholds turn the kernels' different rounding into other channels kept downstream, so
    # the logits differ by more than rounding (docs/never-slower.md); but the model is the
    # thresholded one: its loss on the text is the sparse kernels' loss, far from the original's.
    nll_sparse, nll_dense, nll_original = _nll(sparse, tokens), _nll(dense, tokens), _nll(original, tokens)
    assert abs(nll_sparse - nll_dense) < 0.5 * abs(nll_sparse - nll_original), (nll_sparse, nll_dense, nll_original)


def test_the_stock_ops_compute_what_the_sparse_ops_do(chess):
    """GGUFSPARSE_KERNELS=stock: the graph of a layer on a device without the sparse ops (Vulkan,
    Metal; CUDA by default), run on the CPU. Its thresholds are ggml_abs, ggml_sub, ggml_step and
    ggml_mul instead of ggml_sparse_act, with the same dense products as GGUFSPARSE_KERNELS=dense:
    the same values, so the same logits, bit for bit."""
    tokens = _wiki_tokens(chess, 9000, 48)
    dense, dense_rep = _decode_one_at_a_time(chess, {"GGUFSPARSE_KERNELS": "dense"}, tokens)
    stock, stock_rep = _decode_one_at_a_time(chess, {"GGUFSPARSE_KERNELS": "stock"}, tokens)
    original, _ = _decode_one_at_a_time(chess, {"GGUFSPARSE_DENSE": "1"}, tokens)
    assert stock_rep["kernels"]["mode"] == "stock" and dense_rep["kernels"]["mode"] == "dense"
    assert np.array_equal(stock, dense)
    assert not np.allclose(stock, original, atol=1e-2)   # the thresholds did apply
    # stock ops count nothing: the report has no skipped channels to show
    assert all(stock_rep[site]["total"] == 0 for site in SITES if site in stock_rep), stock_rep
