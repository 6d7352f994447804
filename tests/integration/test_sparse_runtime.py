"""The patched runtime with sparsity tensors: against the dense model, against the PyTorch
reference of the converter, its sparsity report and llama.cpp's own tools on a sparse file."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import logits_of
import numpy as np
import pytest
from ggufsparse.eval import perplexity
from ggufsparse.models import torch_model
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.paths import shared_data_dir
from ggufsparse.reference import sparse_forward

pytestmark = [pytest.mark.runtime, pytest.mark.model]

SMALL = ["--calib-tokens", "2048", "--calib-seq-len", "256", "-q"]


def ggufsparse(*args: str) -> None:
    proc = subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    """SmolLM2's shapes in F32 with random weights, four layers: its transposed copies are exact."""
    out = tmp_path_factory.mktemp("f32") / "f32.gguf"
    ggufsparse("synth", "--shape", "smollm2-135m", "--type", "f32", "--layers", "4", "-o", str(out), "-q")
    return out


@pytest.fixture(scope="module")
def zero_thresholds(float_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zero") / "zero.gguf"
    ggufsparse("convert", str(float_model), "-o", str(out), "--sparsity", "0", "--attn-sparsity", "0", *SMALL)
    return out


@pytest.fixture(scope="module")
def chess_file(default_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chess") / "chess.gguf"
    ggufsparse("convert", str(default_model), "-o", str(out), "--sparsity", "0.5", "--attn-sparsity", "0.5", *SMALL)
    return out


@pytest.fixture(scope="module")
def wiki_windows(default_model, tmp_path_factory) -> tuple[np.ndarray, Path]:
    """2048 WikiText-2 test tokens: four windows of 512, cut as llama-perplexity cuts them."""
    tokenize, bos = gguf_tokenizer(default_model)
    windows = sparse_forward.text_windows(shared_data_dir() / "wikitext2" / "wiki.test.raw", tokenize, bos, 512, 4)
    path = tmp_path_factory.mktemp("wiki") / "windows.npy"
    np.save(path, windows)
    return windows, path


@pytest.mark.parametrize("n_batch", [1, 512])
def test_zero_thresholds_give_the_dense_logits(float_model, zero_thresholds, n_batch, tmp_path):
    # n_batch 1: every token through the skipping kernels; 512: dense products on thresholded inputs.
    # llama.cpp itself differs between those two paths by float rounding: that is the tolerance.
    dense = logits_of.in_subprocess(float_model, tmp_path / "dense.npy", n_batch=n_batch)
    other = logits_of.in_subprocess(float_model, tmp_path / "other.npy", n_batch=513 - n_batch)
    sparse = logits_of.in_subprocess(zero_thresholds, tmp_path / "sparse.npy", n_batch=n_batch)
    noise = float(np.abs(other - dense).max())
    diff = float(np.abs(sparse - dense).max())
    scale = float(np.abs(dense).max())
    print(f"n_batch {n_batch}: max abs diff {diff:.3g}; dense n_batch 1 vs 512: {noise:.3g}; largest |logit| {scale:.3g}")
    assert diff <= 2 * noise + 1e-5 * scale


@pytest.fixture(scope="module", params=[("q4_0", "smollm2-135m", "2"), ("q4_k_m", "llama2-7b", "1")],
                ids=["q4_0", "q4_k_m"])
def quant_pair(request, tmp_path_factory) -> tuple[Path, Path]:
    """A file in Q4_0 (a type the CPU repacks for its fast GEMM) with SmolLM2's shapes, or in
    llama-quantize's Q4_K_M mix with one Llama-2-7B layer (every row whole super-blocks: Q4_K and
    Q6_K weights, packed in their own K types, as in Qwen2.5-1.5B's Q4_K_M), and that file with
    zero thresholds."""
    weights, shape, layers = request.param
    folder = tmp_path_factory.mktemp(weights)
    dense, zero = folder / "dense.gguf", folder / "zero.gguf"
    ggufsparse("synth", "--shape", shape, "--type", weights, "--layers", layers, "-o", str(dense), "-q")
    ggufsparse("convert", str(dense), "-o", str(zero), "--sparsity", "0", "--attn-sparsity", "0", *SMALL)
    return dense, zero


def repack_mib(model: Path, runtime) -> float:
    """The CPU_REPACK buffer llama.cpp reports when it loads `model` (0 where nothing is repacked)."""
    proc = subprocess.run([str(runtime.tools["llama-cli"]), "-m", str(model), "-p", "a", "-n", "1", "-st", "-t", "2",
                           "--temp", "0", "-v"], check=False, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sizes = re.findall(r"CPU_REPACK model buffer size\s*=\s*([0-9.]+) MiB", proc.stdout + proc.stderr)
    return max((float(s) for s in sizes), default=0.0)  # the last load allocates; a fitting pass reports 0


def test_sparse_layers_keep_their_weights_in_the_repack_buffers(quant_pair, runtime, request):
    # prompts use the dense products, so every weight the dense file repacks must be repacked in the
    # sparse file too; ffn_up's row-skipping product reads a plain copy of its own
    dense, zero = quant_pair
    weights = request.node.callspec.params["quant_pair"][0]
    dense_mib = repack_mib(dense, runtime)
    if dense_mib == 0:
        pytest.skip(f"this CPU has no repacked kernels for {weights}'s types "
                    "(ggml repacks with AVX2, NEON or SVE)")
    assert repack_mib(zero, runtime) == dense_mib


def test_zero_thresholds_of_a_repacked_model_give_the_dense_logits(quant_pair, tmp_path, request):
    dense_file, zero = quant_pair
    weights = request.node.callspec.params["quant_pair"][0]
    # prompts: the same repacked products on inputs that zero thresholds leave as they are
    dense = logits_of.in_subprocess(dense_file, tmp_path / "dense.npy", n_batch=512)
    sparse = logits_of.in_subprocess(zero, tmp_path / "sparse.npy", n_batch=512)
    scale = float(np.abs(dense).max())
    assert float(np.abs(sparse - dense).max()) <= 1e-6 * scale
    # decode: other kernels, whose float sums round differently; every product re-quantizes its
    # input to Q8_0 (Q8_K for the K-quants), where such a difference can move a value by one step, so
    # the bound is looser
    decode = logits_of.in_subprocess(zero, tmp_path / "decode.npy", n_batch=1)
    diff = float(np.abs(decode - dense).max())
    print(f"{weights}, zero thresholds, decode vs dense: max abs diff {diff:.3g} (largest |logit| {scale:.3g})")
    assert diff <= 0.05 * scale
    assert np.array_equal(decode.argmax(-1), dense.argmax(-1))


def test_dense_switch_computes_the_original_model(default_model, chess_file, tmp_path):
    dense = logits_of.in_subprocess(default_model, tmp_path / "dense.npy", n_batch=1)
    sparse = logits_of.in_subprocess(chess_file, tmp_path / "sparse.npy", n_batch=1)
    switched = logits_of.in_subprocess(chess_file, tmp_path / "switched.npy", n_batch=1,
                                       env={"GGUFSPARSE_DENSE": "1"})
    assert np.abs(sparse - dense).max() > 0.1  # the thresholds act
    assert np.array_equal(switched, dense)


@pytest.fixture(scope="module")
def float_smollm2_hf(default_model, tmp_path_factory) -> Path:
    """SmolLM2 (real weights) as an F32 Hugging Face folder: converted with --outtype f32, its
    transposed copies are exact."""
    import torch
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("f32hf") / "hf"
    torch_model.load(default_model).model.to(torch.float32).save_pretrained(root)
    AutoTokenizer.from_pretrained(default_model.parent, gguf_file=default_model.name).save_pretrained(root)
    return root


def _fixed_mask(float_smollm2_hf, out: Path, args: list[str], rows) -> Path:
    """A converted file whose thresholds are replaced by a fixed mask (0: always active, f32 max:
    never; `rows(rng, shape)` draws which): no value sits near its threshold, so float rounding
    cannot flip one."""
    import gguf

    ggufsparse("convert", str(float_smollm2_hf), "--outtype", "f32", "-o", str(out), *args, *SMALL)
    reader = gguf.GGUFReader(out, "r+")
    rng = np.random.default_rng(0)
    for t in reader.tensors:
        if t.name.endswith("_thr"):
            t.data[:] = np.where(rows(rng, t.data.shape), np.finfo(np.float32).max, 0.0)
    del reader
    return out


@pytest.fixture(scope="module")
def float_smollm2_masked(float_smollm2_hf, tmp_path_factory) -> Path:
    """CHESS's FFN tensors, half of each layer's channels never active."""
    return _fixed_mask(float_smollm2_hf, tmp_path_factory.mktemp("f32chess") / "masked.gguf", ["--sparsity", "0.5"],
                       lambda rng, shape: rng.random(shape) < 0.5 if shape[0] > 1 else np.zeros(shape, bool))


@pytest.fixture(scope="module")
def float_smollm2_teal_masked(float_smollm2_hf, tmp_path_factory) -> Path:
    """TEAL's tensors on all seven projection inputs, each site of each layer either fully active or
    fully dropped at random (a third dropped): every projection's sparse path runs."""
    return _fixed_mask(float_smollm2_hf, tmp_path_factory.mktemp("f32teal") / "masked.gguf",
                       ["--method", "teal", "--sparsity", "0.3", "--teal-alloc", "uniform"],
                       lambda rng, shape: rng.random(shape) < 1 / 3)


@pytest.mark.parametrize("n_batch", [1, 512])
@pytest.mark.parametrize("masked", ["float_smollm2_masked", "float_smollm2_teal_masked"])
def test_runtime_computes_the_reference_with_a_fixed_mask(masked, wiki_windows, n_batch, tmp_path, request):
    masked = request.getfixturevalue(masked)
    windows, path = wiki_windows
    runtime = logits_of.in_subprocess(masked, tmp_path / "rt.npy", windows=path, n_batch=n_batch)
    model = torch_model.load(masked)
    ref = sparse_forward.window_logits(model, sparse_forward.BakedThresholds.read(masked, model.n_layers), windows)
    top1 = float((runtime.argmax(-1) == ref.argmax(-1)).mean())
    print(f"{masked.name} n_batch {n_batch}, {windows.size} tokens: top-1 agreement {top1:.4f}, "
          f"max abs diff {np.abs(runtime - ref).max():.3g}")
    assert top1 >= 0.99


@pytest.fixture(scope="module")
def float_smollm2_chess(float_smollm2_hf, tmp_path_factory) -> Path:
    """SmolLM2 (real weights, F32) with calibrated CHESS thresholds at 0.5 / 0.5."""
    out = tmp_path_factory.mktemp("f32calib") / "chess.gguf"
    ggufsparse("convert", str(float_smollm2_hf), "--outtype", "f32", "-o", str(out), "--sparsity", "0.5",
               "--attn-sparsity", "0.5", *SMALL)
    return out


@pytest.fixture(scope="module")
def float_smollm2_cut(float_smollm2_hf, tmp_path_factory) -> Path:
    """As float_smollm2_chess with the FFN split: channels at 0.4, ffn_down's input cut to 0.6."""
    out = tmp_path_factory.mktemp("f32cut") / "cut.gguf"
    ggufsparse("convert", str(float_smollm2_hf), "--outtype", "f32", "-o", str(out), "--sparsity", "0.4",
               "--down-sparsity", "0.6", "--attn-sparsity", "0.5", *SMALL)
    return out


def _quality(logits: np.ndarray, dense: np.ndarray, windows: np.ndarray) -> tuple[float, float, float]:
    """Perplexity of the next tokens, mean KL from `dense`, top-1 agreement with `dense`."""
    scores = perplexity.Scores()
    for w in range(len(windows)):
        scores.add(logits[w, :-1], windows[w, 1:], dense[w, :-1])
    r = scores.result()
    return r["ppl"], r["kl_mean"], r["top1_agreement"]


def test_runtime_computes_the_references_sparse_model_with_calibrated_thresholds(float_smollm2_chess, wiki_windows,
                                                                                 tmp_path):
    # Calibrated thresholds put many values next to their threshold, and a value that crosses it
    # changes everything after it: the reference against itself with its embeddings scaled by
    # 1 + 1e-7 noise agrees on only ~89% of top-1 (docs/sparse-runtime.md). Token-level agreement
    # is therefore not the check; the sparse model's quality is: the same perplexity and distance
    # from dense as the reference's, and the same logits at each window's first position, which
    # has no earlier position whose crossing could reach it. KV in f32: no rounding of keys.
    windows, path = wiki_windows
    env = {"LOGITS_KV_F32": "1"}
    runtime = logits_of.in_subprocess(float_smollm2_chess, tmp_path / "rt.npy", windows=path, env=env)
    dense = logits_of.in_subprocess(float_smollm2_chess, tmp_path / "dense.npy", windows=path,
                                    env={**env, "GGUFSPARSE_DENSE": "1"})
    model = torch_model.load(float_smollm2_chess)
    ref = sparse_forward.window_logits(model, sparse_forward.BakedThresholds.read(float_smollm2_chess, model.n_layers), windows)
    ppl_rt, kl_rt, top1_rt = _quality(runtime, dense, windows)
    ppl_ref, kl_ref, top1_ref = _quality(ref, dense, windows)
    first = float(np.abs(runtime[:, 0] - ref[:, 0]).max())
    print(f"{windows.size} tokens: runtime PPL {ppl_rt:.3f} KL {kl_rt:.4f} top-1 vs dense {top1_rt:.4f}; "
          f"reference PPL {ppl_ref:.3f} KL {kl_ref:.4f} top-1 vs dense {top1_ref:.4f}; first positions {first:.3g}")
    assert kl_ref > 0.1  # the thresholds matter: a runtime that ignored them would fail below
    assert abs(ppl_rt / ppl_ref - 1) < 0.03
    assert abs(kl_rt / kl_ref - 1) < 0.1
    assert abs(top1_rt - top1_ref) < 0.02
    assert first < 1e-3 * float(np.abs(ref[:, 0]).max())


@pytest.mark.parametrize("n_batch", [1, 512])
@pytest.mark.parametrize("file", ["float_smollm2_chess", "float_smollm2_cut"])
def test_runtime_computes_the_references_sparse_model_given_its_channel_decisions(file, wiki_windows, n_batch,
                                                                                 tmp_path, request):
    # The runtime's channel decisions (the entries each sparse_act node kept, read through
    # llama.cpp's eval callback) applied in the reference instead of its own comparisons: what
    # is left to differ is float arithmetic, so the logits must agree token by token. And the
    # decisions must be the thresholds': where the reference's own comparison differs, the value
    # sits within rounding of its threshold.
    # The cut on ffn_down's input (--down-sparsity) is one more decided site of every layer.
    gguf_file = request.getfixturevalue(file)
    windows, path = wiki_windows
    decisions = tmp_path / "decisions.npz"
    runtime = logits_of.in_subprocess(gguf_file, tmp_path / "rt.npy", windows=path, n_batch=n_batch,
                                      env={"LOGITS_KV_F32": "1", "LOGITS_DECISIONS": str(decisions)})
    model = torch_model.load(gguf_file)
    config = sparse_forward.BakedThresholds.read(gguf_file, model.n_layers)
    hidden = model.model.config.hidden_size
    widths = {"ffn": len(config.ffn[0]), "attn_q": hidden, "attn_output": hidden}
    if "ffn_down_in" in config.more:
        widths["ffn_down_in"] = len(config.ffn[0])
    check = sparse_forward.DecisionCheck()
    ref = sparse_forward.window_logits(model, config, windows, check=check,
                                  decisions=lambda w: logits_of.read_decisions(decisions, w, widths))
    top1 = float((runtime.argmax(-1) == ref.argmax(-1)).mean())
    diff = float(np.abs(runtime - ref).max())
    print(f"{file} n_batch {n_batch}, {windows.size} tokens, runtime vs reference given the runtime's decisions: top-1 "
          f"{top1:.4f}, max abs diff {diff:.3g}; decisions unlike the reference's own comparison "
          f"{check.differ}/{check.entries}, worst relative distance from the threshold {check.worst_gap:.3g}")
    assert check.entries == windows.size * model.n_layers * sum(widths.values())  # every site, every token
    assert top1 >= 0.99
    assert diff < 1e-2 * float(np.abs(ref).max())
    assert check.differ <= 1e-5 * check.entries
    assert check.worst_gap < 1e-3


def test_stats_report_the_sparsity_the_reference_measures(chess_file, wiki_windows, tmp_path):
    windows, path = wiki_windows
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(chess_file, tmp_path / "rt.npy", windows=path, n_batch=512,
                            env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    model = torch_model.load(chess_file)
    [q] = sparse_forward.evaluate(model, [sparse_forward.BakedThresholds.read(chess_file, model.n_layers)], windows,
                             progress=False)
    config = model.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # channels each token decides on at each site, from the model's shapes: the FFN's intermediate
    # channels, q's input (the hidden state) and output's input (the heads' concatenation)
    width = {"ffn": config.intermediate_size, "attn_q": config.hidden_size,
             "attn_output": config.num_attention_heads * head_dim}
    for site in ("ffn", "attn_q", "attn_output"):
        assert len(report[site]["layers"]) == model.n_layers
        assert report[site]["total"] == windows.size * width[site] * model.n_layers, site
        assert abs(report[site]["fraction"] - q.counters.sparsity(site)) < 0.02, site


def test_stats_of_a_dense_model_report_nothing_skipped(default_model, tmp_path):
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(default_model, tmp_path / "d.npy", env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    # no counter, and nothing timed: a dense model has no sparse site (docs/never-slower.md)
    assert set(report) == {"format", "kernels"}
    assert "sites" not in report["kernels"]


def test_llama_perplexity_and_llama_cli_run_the_sparse_file(chess_file, runtime):
    wiki = shared_data_dir() / "wikitext2" / "wiki.test.raw"
    ppl = subprocess.run([str(runtime.tools["llama-perplexity"]), "-m", str(chess_file), "-f", str(wiki),
                          "-c", "128", "--chunks", "4", "-t", "2"], check=False, capture_output=True, text=True, timeout=600)
    assert ppl.returncode == 0, ppl.stderr[-2000:]
    assert "Final estimate: PPL" in ppl.stdout + ppl.stderr
    cli = subprocess.run([str(runtime.tools["llama-cli"]), "-m", str(chess_file), "-p", "What is the capital of France?",
                          "-n", "16", "-st", "-t", "2", "--temp", "0"],
                         check=False, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "Paris" in cli.stdout.split("What is the capital of France?")[-1]


def test_bench_alternates_both_models_and_reports_the_ratio_of_medians(default_model, chess_file):
    proc = subprocess.run(["ggufsparse", "bench", str(default_model), str(chess_file), "-r", "3", "--tg", "8",
                           "--pp", "16", "--json", "-q"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert set(rep["tests"]) == {"tg8", "pp16"}
    for r in rep["tests"].values():
        assert len(r["dense_runs"]) == len(r["sparse_runs"]) == 3
        assert r["dense_tps"] == float(np.median(r["dense_runs"])) > 0
        assert r["ratio"] == pytest.approx(float(np.median(r["sparse_runs"])) / r["dense_tps"])
    # the runtime's own counters over the runs: nothing skipped in the dense file, about half in the sparse one
    assert rep["sparsity"]["dense"] is None
    assert set(rep["sparsity"]["sparse"]) == {"ffn", "attn_q", "attn_output"}
    assert all(0.3 < v < 0.7 for v in rep["sparsity"]["sparse"].values())


def test_bench_of_one_file_runs_its_dense_path_against_its_sparse_path(chess_file):
    proc = subprocess.run(["ggufsparse", "bench", str(chess_file), "-r", "2", "--tg", "8", "--pp", "0",
                           "--json", "-q"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["dense"] == f"{chess_file} (GGUFSPARSE_DENSE=1)" and rep["sparse"] == str(chess_file)
    assert set(rep["tests"]) == {"tg8"}
    # same file on both sides; only the sparse side skips anything
    assert rep["sparsity"]["dense"] is None
    assert 0.3 < rep["sparsity"]["sparse"]["ffn"] < 0.7


def test_bench_bad_input_is_one_line_and_exit_2(default_model, tmp_path):
    proc = subprocess.run(["ggufsparse", "bench", str(default_model), str(tmp_path / "missing.gguf")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing.gguf" in proc.stderr


def test_eval_of_a_sparse_file_reports_its_distance_and_the_sparsity_reached(chess_file, default_model, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run(["ggufsparse", "eval", str(chess_file), "--ref", str(default_model), "--ctx", "256",
                           "--chunks", "2", "-t", "2", "-q", "--json", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    p = r["perplexity"]
    assert p["kl_mean"] > 0.01 and p["top1_agreement"] < 0.99 and p["ppl"] > p["ref_ppl"]
    assert 0.3 < r["sparsity"]["ffn"]["fraction"] < 0.7  # converted at 0.5
    assert 0.3 < r["sparsity"]["attn_q"]["fraction"] < 0.7
    assert len(r["sparsity"]["ffn"]["layers"]) == 30  # SmolLM2's layers
