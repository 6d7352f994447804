"""FFN activation predictors: training (tens of seconds), the file they go into, and the runtime that
computes only the predicted gate rows (the cut-off rule: tests/unit/test_predictor_cutoff.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, ExtraTensor, open_reader, write_with_extras
from ggufsparse.methods.predictor import PredictorRecipe, logits, train_layer
from test_loader import _cli_load_error

SMALL = ["--calib-tokens", "2048", "--calib-seq-len", "256", "-q"]


def test_training_learns_a_low_rank_rule_and_keeps_the_recall_held_out():
    # active where a rank-8 function of x is positive: a rank-16 predictor can learn it
    rng = np.random.default_rng(1)
    n, n_embd, n_ff = 6000, 48, 96
    x = rng.standard_normal((n, n_embd)).astype(np.float32)
    u, v = rng.standard_normal((n_embd, 8)), rng.standard_normal((8, n_ff))
    active = (np.maximum(x @ u, 0) @ v) > 1.5
    recipe = PredictorRecipe(rank=16, recall=0.95, epochs=20, weight_type="f16")
    p = train_layer(x, active, 5000, recipe, seed=0)
    assert p.recall >= 0.95
    assert p.predicted < 1.5 * p.active  # it skips rows, not only keeps them all on
    # the stored thresholds reproduce the decision the training measured
    on = logits(p.pred_a.astype(np.float16).astype(np.float32), p.pred_b.astype(np.float16).astype(np.float32),
                x[5000:]) > p.pred_thr
    assert abs(on.mean() - p.predicted) < 1e-3


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ggufsparse", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def chess_ffn(default_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chess-ffn") / "chess.gguf"
    proc = run("convert", str(default_model), "-o", str(out), "--sparsity", "0.5", *SMALL)
    assert proc.returncode == 0, proc.stderr
    return out


def _with_predictors(src: Path, out: Path, cutoff: float, layers: list[int] | None = None) -> Path:
    """src plus random rank-32 predictors whose cut-offs are all `cutoff` (-1e30: every gate row on)."""
    reader = open_reader(src)
    n_layers = int(reader.fields["llama.block_count"].contents())
    gate = next(t for t in reader.tensors if t.name == "blk.0.ffn_gate.weight")
    n_embd, n_ff = int(gate.shape[0]), int(gate.shape[1])
    rng = np.random.default_rng(0)
    tensors = []
    for i in layers if layers is not None else range(n_layers):
        tensors += [
            ExtraTensor(layout.FFN_PRED_A.name(i), rng.standard_normal((32, n_embd)).astype(np.float16),
                        gguf.GGMLQuantizationType.F16),
            ExtraTensor(layout.FFN_PRED_B.name(i), rng.standard_normal((n_ff, 32)).astype(np.float16),
                        gguf.GGMLQuantizationType.F16),
            ExtraTensor(layout.FFN_PRED_THR.name(i), np.full(n_ff, cutoff, np.float32), gguf.GGMLQuantizationType.F32),
        ]
    key = ExtraKey(layout.Keys.FORMAT_VERSION, layout.FORMAT_VERSION, gguf.GGUFValueType.UINT32)
    write_with_extras(src, out, [key], tensors, progress=False)
    return out


@pytest.mark.runtime
@pytest.mark.model
def test_a_predictor_that_turns_every_row_on_changes_nothing(chess_ffn, tmp_path):
    on = _with_predictors(chess_ffn, tmp_path / "on.gguf", -1e30)
    stats = tmp_path / "stats.json"
    plain = logits_of.in_subprocess(chess_ffn, tmp_path / "plain.npy", n_batch=1)
    predicted = logits_of.in_subprocess(on, tmp_path / "pred.npy", n_batch=1, env={"GGUFSPARSE_STATS": str(stats)})
    # the gate's rows through the row-skipping product: the same dot products as the dense one
    diff = float(np.abs(predicted - plain).max())
    print(f"every row on vs no predictor: max abs diff {diff:.3g}")
    assert diff <= 1e-4 * float(np.abs(plain).max())
    assert np.array_equal(predicted.argmax(-1), plain.argmax(-1))
    report = json.loads(stats.read_text())
    assert report["ffn_gate"]["skipped"] == 0 and report["ffn_gate"]["total"] > 0
    assert 0.3 < report["ffn"]["fraction"] < 0.7  # the thresholds still act


@pytest.mark.runtime
@pytest.mark.model
def test_a_predictor_that_turns_every_row_off_skips_the_whole_ffn_in_decode_only(chess_ffn, tmp_path):
    off = _with_predictors(chess_ffn, tmp_path / "off.gguf", 1e30)
    stats = tmp_path / "stats.json"
    decode = logits_of.in_subprocess(off, tmp_path / "decode.npy", n_batch=1, env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    assert report["ffn_gate"]["fraction"] == 1.0
    assert report["ffn"]["fraction"] == 1.0  # a gate row left out is a channel skipped
    plain = logits_of.in_subprocess(chess_ffn, tmp_path / "plain.npy", n_batch=1)
    assert np.abs(decode - plain).max() > 1.0  # no FFN at all: another model
    # prompts take the dense gate; the predictor is not used there
    prompt = logits_of.in_subprocess(off, tmp_path / "prompt.npy", n_batch=512)
    plain_prompt = logits_of.in_subprocess(chess_ffn, tmp_path / "plain-prompt.npy", n_batch=512)
    assert np.array_equal(prompt, plain_prompt)


@pytest.mark.runtime
@pytest.mark.model
def test_trained_predictors_skip_gate_rows_and_the_file_records_them(chess_ffn, tmp_path):
    out = tmp_path / "pred.gguf"
    # SiLU channels above a CHESS threshold are hard to predict (a ReLU fine-tune's are the use);
    # at recall 0.9 a small predictor still leaves out a good share of the gate rows
    proc = run("predictor", str(chess_ffn), "-o", str(out), "--rank", "64", "--calib-tokens", "4096",
               "--epochs", "4", "--recall", "0.9", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kind"] == "trained" and summary["recall"] >= 0.9
    assert summary["predicted"] < 0.85
    reader = open_reader(out)
    assert reader.fields[layout.Keys.PREDICTOR_RANK].contents() == 64
    predicted = reader.fields[layout.Keys.PREDICTOR_PREDICTED].contents()
    assert len(predicted) == int(reader.fields["llama.block_count"].contents())
    original = {t.name for t in open_reader(chess_ffn).tensors}
    assert original <= {t.name for t in reader.tensors}
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(out, tmp_path / "l.npy", n_batch=1, env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    # on other text than the held-out windows: near the calibration's share, not equal to it
    gate = report["ffn_gate"]["fraction"]
    print(f"gate rows skipped {gate:.3f} (held-out calibration: {1 - float(np.mean(predicted)):.3f}), "
          f"FFN channels skipped {report['ffn']['fraction']:.3f}")
    assert abs(gate - (1 - float(np.mean(predicted)))) < 0.15
    assert report["ffn"]["fraction"] >= gate


def test_predictor_needs_a_sparse_ffn_file(default_model, tmp_path):
    proc = run("predictor", str(default_model), "-o", str(tmp_path / "x.gguf"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("ggufsparse: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.runtime
@pytest.mark.model
def test_loader_refuses_an_incomplete_predictor_with_one_line(chess_ffn, tmp_path):
    good = _with_predictors(chess_ffn, tmp_path / "good.gguf", 0.0, layers=[0])
    reader = open_reader(good)
    drop = {layout.FFN_PRED_B.name(0)}
    out = tmp_path / "partial.gguf"
    write_with_extras(good, out, [], [], drop=drop, progress=False)
    del reader
    assert "needs all three" in _cli_load_error(out)


@pytest.mark.runtime
@pytest.mark.model
def test_random_predictors_of_a_synthetic_model_turn_on_the_share_asked(tmp_path):
    synth, zero, out = tmp_path / "s.gguf", tmp_path / "z.gguf", tmp_path / "p.gguf"
    for args in (("synth", "--shape", "smollm2-135m", "--type", "q8_0", "--layers", "2", "-o", str(synth), "-q"),
                 ("convert", str(synth), "-o", str(zero), "--sparsity", "0", *SMALL),
                 ("predictor", str(zero), "-o", str(out), "--random", "0.3", "--rank", "64", "--pred-type", "q8_0",
                  "-q")):
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr
    assert open_reader(out).fields[layout.Keys.PREDICTOR_KIND].contents() == "random"
    stats = tmp_path / "stats.json"
    logits_of.in_subprocess(out, tmp_path / "l.npy", n_batch=1, env={"GGUFSPARSE_STATS": str(stats)})
    report = json.loads(stats.read_text())
    print(f"random predictors at 0.3: gate rows skipped {report['ffn_gate']['fraction']:.3f}")
    assert abs(report["ffn_gate"]["fraction"] - 0.7) < 0.1
    # thresholds 0: every computed gate row is an active channel, so the FFN skips exactly those rows
    assert report["ffn"]["skipped"] == report["ffn_gate"]["skipped"]


def test_parameter_sparsity_counts_the_gate_rows_a_predictor_leaves_out(default_model):
    from ggufsparse.format.param_sparsity import parameter_sparsity

    n_layers = int(open_reader(default_model).fields["llama.block_count"].contents())
    ffn_only = parameter_sparsity(default_model, {"ffn": {"layers": [1.0] * n_layers}})
    with_gate = parameter_sparsity(default_model, {"ffn": {"layers": [1.0] * n_layers},
                                                   "ffn_gate": {"layers": [1.0] * n_layers}})
    # SmolLM2: gate, up and down are the same size, so the gate adds half of what up and down give
    assert with_gate == pytest.approx(1.5 * ffn_only)
