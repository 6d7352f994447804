"""A sparse file behind a server, driven as OpenAI clients drive it: llama.cpp's llama-server and
llama-cpp-python's `python -m llama_cpp.server`; and spread over ggml-rpc workers. Every process
listens on loopback only and is started and stopped here.

At temperature 0 a request's text does not depend on how it is asked (streamed or not) nor on the
other streams decoding beside it: four concurrent streams each give the text they give alone. The
sparse file's row-skipping kernels then read the union of the streams' active rows; where
llama.cpp's own batched arithmetic changes a stream's text, the dense file shows the same change
(both are checked).

Over ggml-rpc, two ggml-rpc-server workers hold every layer and the logits equal the same file run
locally; workers and clients without the patch are refused at the handshake (the protocol's major
version, patches/0007), never computing a different model."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import logits_of
import numpy as np
import pytest
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.paths import shared_data_dir
from ggufsparse.reference import sparse_forward
from ggufsparse.runtime import locate
from sparse_files import converted_chess

pytestmark = [pytest.mark.runtime, pytest.mark.model]

# no two prompts share their first token (see _fresh)
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "Red, yellow and blue are"]
SEPARATOR = "Zebras"
N_TOKENS = 16


@pytest.fixture(scope="module")
def chess(default_model, tmp_path_factory) -> Path:
    return converted_chess(default_model, tmp_path_factory.mktemp("serve") / "chess.gguf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], port: int, log: Path, health: str = "/health", timeout: float = 180):
    """Runs cmd until the block ends; yields the base URL once `health` answers 200."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, NO_PROXY="127.0.0.1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url + health, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server not ready in {timeout} s: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def llama_server(model: Path, port: int, parallel: int = 4) -> list[str]:
    # batches of at most 4 tokens: decode tokens of several streams and prompt tokens all take the
    # decode kernels, whatever the server puts together (see test_llama_server_serves_a_sparse_file)
    return [str(locate.tool("llama-server")), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-np", str(parallel), "-c", str(512 * parallel), "-b", "4", "-ub", "4", "-t", "2", "--no-warmup"]


def python_server(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), "--n_ctx", "1024", "--n_threads", "2",
            # queue concurrent requests instead of cutting the running stream short (its default)
            "--interrupt_requests", "False"]


def client(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=300, max_retries=0)


# llama-server: every request evaluates its prompt afresh. With its prompt cache, a repeated prompt's
# last token is evaluated again alone, through the decode kernels instead of the prompt's products:
# a different rounding, so (greedy) a different text later on, for the dense file as for the sparse.
FRESH = {"cache_prompt": False}


def complete(c, prompt: str, stream: bool) -> str:
    kw = {"model": "m", "prompt": prompt, "max_tokens": N_TOKENS, "temperature": 0, "seed": 1, "extra_body": FRESH}
    if not stream:
        return c.completions.create(**kw).choices[0].text
    return "".join(chunk.choices[0].text for chunk in c.completions.create(stream=True, **kw) if chunk.choices)


def chat(c, prompt: str, stream: bool) -> str:
    kw = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": N_TOKENS,
          "temperature": 0, "seed": 1, "extra_body": FRESH}
    if not stream:
        return c.chat.completions.create(**kw).choices[0].message.content
    return "".join(chunk.choices[0].delta.content or "" for chunk in c.chat.completions.create(stream=True, **kw)
                   if chunk.choices)


def _fresh(c) -> None:
    """llama-cpp-python reuses the longest prefix of the previous request's tokens (there is no
    switch) and evaluates only the rest: a different batch, so a different rounding, and the
    thresholds can turn that into a different text. A one-token request on a prompt that shares no
    first token with any in PROMPTS (nor with a chat template) makes the next request evaluate its
    whole prompt as one batch, whatever came before; in the concurrent part, the prompts' distinct
    first tokens do the same in whichever order the server takes them."""
    c.completions.create(model="m", prompt=SEPARATOR, max_tokens=1, temperature=0, extra_body=FRESH)


def alone_and_together(url: str) -> tuple[list[str], list[str]]:
    c = client(url)
    alone = []
    for p in PROMPTS:
        _fresh(c)
        alone.append(complete(c, p, stream=False))
    _fresh(c)
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: complete(client(url), p, stream=True), PROMPTS))
    return alone, together


def _streamed_equals_whole(url: str) -> None:
    c = client(url)
    for ask in (complete, chat):
        whole, streamed = [], []
        for p in PROMPTS[:2]:
            _fresh(c)
            whole.append(ask(c, p, False))
        for p in PROMPTS[:2]:
            _fresh(c)
            streamed.append(ask(c, p, True))
        assert all(len(w.strip()) > 0 for w in whole), ask.__name__
        assert streamed == whole, (ask.__name__, whole, streamed)


def test_llama_server_serves_a_sparse_file(chess, default_model, tmp_path):
    results = {}
    for name, model in (("sparse", chess), ("dense", default_model)):
        port = free_port()
        with serving(llama_server(model, port), port, tmp_path / f"{name}.log") as url:
            _streamed_equals_whole(url)
            results[name] = alone_and_together(url)
    (sparse_alone, sparse_together), (dense_alone, dense_together) = results["sparse"], results["dense"]
    assert sparse_alone != dense_alone  # the sparse file is served, not the dense one
    for i, prompt in enumerate(PROMPTS):
        # a stream's text is its own, unless llama.cpp's batching changes the dense file's too
        assert sparse_together[i] == sparse_alone[i] or dense_together[i] != dense_alone[i], \
            (prompt, sparse_alone[i], sparse_together[i])
    print(f"4 streams equal to alone: sparse {sum(a == b for a, b in zip(sparse_alone, sparse_together))}/4, "
          f"dense {sum(a == b for a, b in zip(dense_alone, dense_together))}/4")


def test_llama_cpp_python_server_serves_a_sparse_file(chess, tmp_path):
    port = free_port()
    with serving(python_server(chess, port), port, tmp_path / "py.log", health="/v1/models") as url:
        _streamed_equals_whole(url)
        alone, together = alone_and_together(url)
    # llama_cpp.server answers one request at a time (queued): each stream gets its text whole
    assert together == alone


def test_bench_parallel_times_both_files_at_each_stream_count(chess, default_model):
    import json

    proc = subprocess.run([sys.executable, "-m", "ggufsparse", "bench", str(default_model), str(chess), "-r", "1",
                           "--tg", "4", "--pp", "16", "--parallel", "1,2", "--json", "-q"],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    assert sorted(rep["tests"]) == ["tg4x1", "tg4x2"] and rep["streams"] == [1, 2]
    for r in rep["tests"].values():
        assert r["dense_tps"] > 0 and r["sparse_tps"] > 0
    # the sparse side ran its sparse layers (the runtime's counters), the dense file none
    assert rep["sparsity"]["dense"] is None
    assert 0.3 < rep["sparsity"]["sparse"]["ffn"] < 0.9


@pytest.fixture(scope="module")
def window(default_model, tmp_path_factory) -> Path:
    """512 WikiText-2 test tokens, one window."""
    tokenize, bos = gguf_tokenizer(default_model)
    windows = sparse_forward.text_windows(shared_data_dir() / "wikitext2" / "wiki.test.raw", tokenize, bos, 512, 1)
    path = tmp_path_factory.mktemp("rpc-window") / "window.npy"
    np.save(path, windows)
    return path


@contextlib.contextmanager
def workers(binary: Path, log_dir: Path, n: int = 2):
    """n ggml-rpc-server processes on loopback; yields their endpoints once each accepts connections."""
    procs, endpoints = [], []
    try:
        for i in range(n):
            port = free_port()
            with open(log_dir / f"worker{i}.log", "w") as log:
                # the threads of the local run (logits_of: 2): the sparse kernels' sums depend on how
                # threads split them, and the thresholds turn such rounding into other channels kept
                procs.append(subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port), "-t", "2"],
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            endpoints.append(f"127.0.0.1:{port}")
        for proc, endpoint in zip(procs, endpoints):
            host, port = endpoint.split(":")
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"worker exited with {proc.returncode}"
                with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
                    break
                assert time.monotonic() < deadline, "worker not listening in 60 s"
                time.sleep(0.2)
        yield ",".join(endpoints)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_sparse_file_over_two_workers_gives_the_local_logits(chess, window, tmp_path):
    # n_batch 1: every token through the decode kernels, here on the workers
    local = logits_of.in_subprocess(chess, tmp_path / "local.npy", windows=window, n_batch=1)
    with workers(locate.tool("ggml-rpc-server"), tmp_path) as endpoints:
        remote = logits_of.in_subprocess(chess, tmp_path / "rpc.npy", windows=window, n_batch=1,
                                         env={"LOGITS_RPC": endpoints})
    assert local.shape == remote.shape and local.shape[1] == 512
    diff = float(np.abs(local - remote).max())
    top1 = float((local.argmax(-1) == remote.argmax(-1)).mean())
    print(f"RPC (2 workers, loopback) vs local over 512 tokens: max |logit diff| {diff:.3g}, top-1 agreement {top1:.4f}")
    assert diff < 1e-2 and top1 >= 0.998
    # a real comparison: the logits move from token to token
    assert np.abs(np.diff(local[0], axis=0)).max() > 1.0


def _failure(cmd_env: dict, model: Path, tmp_path: Path, lib_dir: Path | None = None) -> str:
    """stderr of a logits run that must fail. ggml-rpc ends a failed handshake with GGML_ABORT
    (upstream's way for any unreachable worker): the process stops before the model loads."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        logits_of.in_subprocess(model, tmp_path / "x.npy", lib_dir=lib_dir, env=cmd_env, capture=True)
    assert not (tmp_path / "x.npy").exists()
    return failed.value.stderr


def test_a_worker_without_the_patch_is_refused(chess, tmp_path):
    stock_worker = locate.stock_bin_dir() / "ggml-rpc-server"
    with workers(stock_worker, tmp_path, n=1) as endpoint:
        err = _failure({"LOGITS_RPC": endpoint}, chess, tmp_path)
    assert "RPC server version mismatch: 7.0.0, this client speaks 107.0.0" in err, err[-2000:]
    assert "a worker without the ggufsparse ops" in err


def test_a_client_without_the_patch_is_refused(default_model, tmp_path):
    with workers(locate.tool("ggml-rpc-server"), tmp_path, n=1) as endpoint:
        err = _failure({"LOGITS_RPC": endpoint}, default_model, tmp_path, lib_dir=locate.stock_bin_dir())
    assert "RPC server version mismatch: 107.0.0" in err, err[-2000:]
