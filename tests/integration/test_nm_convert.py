"""`ggufsparse convert --method magnitude|wanda|esparse` on the real default model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from ggufsparse.format import layout

pytestmark = [pytest.mark.runtime, pytest.mark.model]

SMALL = ["--calib-tokens", "1024", "--calib-seq-len", "256", "-q"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


def convert(model: Path, out: Path, *args: str) -> Path:
    proc = run("convert", str(model), "-o", str(out), *SMALL, *args)
    assert proc.returncode == 0, proc.stderr
    return out


def kl_of(model: Path, ref: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"{model.stem}.json"
    proc = run("eval", str(model), "--ref", str(ref), "--chunks", "4", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())["perplexity"]


@pytest.fixture(scope="module")
def wanda(default_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("nm") / "wanda.gguf"
    return convert(default_model, out, "--method", "wanda", "--nm", "2:4", "--nm-dense-blocks", "0,-1",
                   "--nm-storage", "masked")


def test_pruned_weights_keep_n_of_every_m_and_everything_else_is_kept(default_model, wanda):
    src, dst = gguf.GGUFReader(default_model), gguf.GGUFReader(wanda)
    n_layers = src.fields["llama.block_count"].contents()
    pruned = dst.fields[layout.Keys.NM_TENSORS].contents()
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert sorted(pruned) == sorted(f"blk.{i}.{k}.weight" for i in range(1, n_layers - 1) for k in kinds)
    out = {t.name: t for t in dst.tensors}
    assert len(out) == len(src.tensors)
    for t in src.tensors:
        o = out[t.name]
        assert list(o.shape) == list(t.shape), t.name
        if t.name not in pruned:
            assert o.tensor_type == t.tensor_type, t.name
            assert np.array_equal(np.asarray(o.data).view(np.uint8), np.asarray(t.data).view(np.uint8)), t.name
            continue
        # quantized weights come back as F16: kept values exactly the dequantized originals
        assert o.tensor_type == gguf.GGMLQuantizationType.F16
        values = np.asarray(o.data, dtype=np.float32)
        original = gguf.dequantize(t.data, t.tensor_type).astype(np.float16).astype(np.float32)
        assert np.all((values == 0) | (values == original)), t.name
        nonzero = (values != 0).reshape(values.shape[0], -1, 4).sum(axis=-1)
        assert nonzero.max() <= 2, t.name
        assert (nonzero == 2).mean() > 0.9, t.name  # pruning zeroed half, not more
    for name, field in src.fields.items():
        if not name.startswith("GGUF."):
            assert dst.fields[name].contents() == field.contents(), name
    assert dst.fields[layout.Keys.NM_PATTERN].contents() == "2:4"


def test_wanda_loses_less_than_magnitude(default_model, wanda, tmp_path):
    """Wanda's input-norm weighting is the point of the method: on the real model it must keep the
    output closer to the dense model's than weight magnitude alone (WikiText-2, 4 windows)."""
    magnitude = convert(default_model, tmp_path / "magnitude.gguf", "--method", "magnitude", "--nm", "2:4",
                        "--nm-dense-blocks", "0,-1", "--nm-storage", "masked")
    w, m = kl_of(wanda, default_model, tmp_path), kl_of(magnitude, default_model, tmp_path)
    assert 0 < w["kl_mean"] < m["kl_mean"]
    assert w["ppl"] > w["ref_ppl"]


def test_esparse_with_shuffles_prunes_every_row_to_n_of_m(default_model, tmp_path):
    out = convert(default_model, tmp_path / "esparse.gguf", "--method", "esparse", "--nm", "4:8",
                  "--nm-block", "16", "--nm-passes", "1", "--nm-storage", "masked")
    r = gguf.GGUFReader(out)
    recipe = json.loads(r.fields[layout.Keys.RECIPE].contents())
    assert recipe["nm_shuffle"] == "global+local" and recipe["method"] == "esparse"
    by_name = {t.name: t for t in r.tensors}
    for name in ("blk.0.attn_q.weight", "blk.5.ffn_down.weight", "blk.29.ffn_up.weight"):
        values = np.asarray(by_name[name].data, dtype=np.float32)
        per_row = (values != 0).sum(axis=1)
        # shuffled groups are not consecutive inputs, but each row keeps half of its inputs
        assert per_row.max() <= values.shape[1] // 2
        assert np.median(per_row) == values.shape[1] // 2
    scored = kl_of(out, default_model, tmp_path)
    assert scored["kl_mean"] > 0 and np.isfinite(scored["ppl"])


@pytest.mark.parametrize("args,expected", [
    (["--method", "wanda", "--attn-sparsity", "0.5"], "--attn-sparsity"),
    (["--method", "esparse", "--nm", "4:2"], "--nm 4:2"),
    (["--method", "magnitude", "--nm-shuffle", "global"], "--nm-shuffle"),
    (["--method", "esparse", "--nm-shuffle", "sideways"], "--nm-shuffle sideways"),
    (["--method", "wanda", "--nm-dense-blocks", "first"], "first"),
])
def test_bad_nm_options_are_one_line_errors(default_model, tmp_path, args, expected):
    proc = run("convert", str(default_model), "-o", str(tmp_path / "x.gguf"), *args)
    assert proc.returncode == 2
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()
