"""N:M packed copies in the patched runtime: what the converter writes and decode through them (the
packing itself: tests/unit/test_nm_packing.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import gguf
import logits_of
import numpy as np
import pytest
from ggufsparse.format import layout, nm_pack
from ggufsparse.methods.nm import Pattern, nm_mask

T = gguf.GGMLQuantizationType
SMALL = ["--calib-tokens", "1024", "--calib-seq-len", "256", "-q"]


@pytest.mark.runtime
@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0])
@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_zeroed_q8_0_and_q4_0_weights_hold_exactly_the_packed_values(qtype, n, m):
    from ggufsparse.format.gguf_io import dequantize_rows

    rng = np.random.default_rng(m)
    rows, k = 5, 256
    w = rng.standard_normal((rows, k)).astype(np.float32)
    mask = nm_mask(np.abs(w), Pattern(n, m))
    packed = nm_pack.pack(w * mask, mask, None, Pattern(n, m))
    data = nm_pack.quantize_kept(packed.kept, qtype)
    want = nm_pack.unpack(nm_pack.kept_as_stored(data, qtype), packed.idx, None, k, Pattern(n, m))
    got = dequantize_rows(nm_pack.expand_blocks(data, packed.idx, k, Pattern(n, m), qtype), qtype)
    np.testing.assert_array_equal(got, want)
    assert (want != 0).sum(axis=1).max() <= k // m * n
    assert np.abs(want - w * mask).max() < 0.15 * np.abs(w).max()  # a rounding of the kept values, no more


def _ggufsparse(*args: str) -> None:
    proc = subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _converted(folder: Path, qtype: str, *method: str, storage: str = "masked+packed") -> Path:
    dense, out = folder / f"{qtype}.gguf", folder / f"{qtype}-nm-{storage}.gguf"
    if not dense.exists():
        _ggufsparse("synth", "--shape", "smollm2-135m", "--type", qtype, "--layers", "2", "-o", str(dense), "-q")
    _ggufsparse("convert", str(dense), "-o", str(out), *method, "--nm", "2:4", "--nm-storage", storage, *SMALL)
    return out


WANDA_SHUFFLED = ("--method", "wanda", "--nm-shuffle", "global+local")


@pytest.fixture(scope="module")
def f16_shuffled(tmp_path_factory) -> Path:
    return _converted(tmp_path_factory.mktemp("nm-f16"), "f16", *WANDA_SHUFFLED)


@pytest.fixture(scope="module")
def q8_0_plain(tmp_path_factory) -> Path:
    return _converted(tmp_path_factory.mktemp("nm-q8_0"), "q8_0", "--method", "magnitude")


@pytest.fixture(scope="module", params=[("f16", WANDA_SHUFFLED), ("q8_0", ("--method", "magnitude")),
                                        ("q4_0", WANDA_SHUFFLED)], ids=["f16-shuffled", "q8_0", "q4_0-shuffled"])
def packed_pair(request, tmp_path_factory) -> tuple[Path, Path]:
    """(masked+packed file, packed-only file) pruned the same way from one synthetic model."""
    qtype, method = request.param
    folder = tmp_path_factory.mktemp(f"nm-pair-{qtype}")
    return _converted(folder, qtype, *method), _converted(folder, qtype, *method, storage="packed")


@pytest.mark.runtime
def test_packed_copies_hold_exactly_the_zeroed_weights(f16_shuffled):
    r = gguf.GGUFReader(f16_shuffled)
    assert r.fields[layout.Keys.NM_STORAGE].contents() == "masked+packed"
    assert r.fields[layout.Keys.FORMAT_VERSION].contents() == layout.FORMAT_VERSION
    by_name = {t.name: t for t in r.tensors}
    pruned = r.fields[layout.Keys.NM_TENSORS].contents()
    assert len(pruned) == 14
    for name in pruned:
        block, projection = int(name.split(".")[1]), name.split(".")[2]
        names = layout.NM_TENSORS[projection]
        zeroed = np.asarray(by_name[name].data, dtype=np.float32)
        vals = by_name[names.vals.name(block)]
        assert vals.tensor_type == T.F16
        perm = np.asarray(by_name[names.perm.name(block)].data)
        assert sorted(perm.tolist()) == list(range(zeroed.shape[1])) and not np.array_equal(perm, np.sort(perm))
        idx = np.asarray(by_name[names.idx.name(block)].data).view(np.uint8)
        unpacked = nm_pack.unpack(np.asarray(vals.data, dtype=np.float32), idx, perm, zeroed.shape[1], Pattern(2, 4))
        np.testing.assert_array_equal(unpacked, zeroed, err_msg=name)


@pytest.mark.runtime
def test_a_q8_0_file_keeps_its_zeroed_weights_in_q8_0(q8_0_plain):
    from ggufsparse.format.gguf_io import dequantize_rows

    r = gguf.GGUFReader(q8_0_plain)
    by_name = {t.name: t for t in r.tensors}
    for name in r.fields[layout.Keys.NM_TENSORS].contents():
        block, projection = int(name.split(".")[1]), name.split(".")[2]
        names = layout.NM_TENSORS[projection]
        zeroed, vals = by_name[name], by_name[names.vals.name(block)]
        assert zeroed.tensor_type == T.Q8_0 and vals.tensor_type == T.Q8_0
        assert names.perm.name(block) not in by_name
        idx = np.asarray(by_name[names.idx.name(block)].data).view(np.uint8)
        k = int(zeroed.shape[0])
        unpacked = nm_pack.unpack(dequantize_rows(vals.data, T.Q8_0), idx, None, k, Pattern(2, 4))
        np.testing.assert_array_equal(dequantize_rows(zeroed.data, T.Q8_0), unpacked, err_msg=name)


def _decode_logits(model: Path, tmp_path: Path, tag: str, dense: bool = False) -> np.ndarray:
    # one token per decode call: the path that reads the packed copies; GGUFSPARSE_DENSE=1 reads
    # the zeroed weights instead
    env = {"GGUFSPARSE_DENSE": "1"} if dense else {}
    return logits_of.in_subprocess(model, tmp_path / f"{tag}.npy", n_batch=1, env=env)


@pytest.mark.runtime
@pytest.mark.parametrize("which,tol,top1", [("f16_shuffled", 0.005, 0.99), ("q8_0_plain", 0.05, 0.9)])
def test_decode_through_the_packed_copies_gives_the_zeroed_weights_logits(which, tol, top1, request, tmp_path):
    # F16 kept values are the zeroed weights exactly (f32 input against ggml's f16-rounded one);
    # Q8_0 rounds the input to int8 as ggml's dense Q8_0 product does, in blocks of 64 inputs
    model = request.getfixturevalue(which)
    packed = _decode_logits(model, tmp_path, "packed")
    dense = _decode_logits(model, tmp_path, "dense", dense=True)
    scale = np.abs(dense).max()
    assert np.abs(packed - dense).max() <= tol * scale
    assert (packed.argmax(-1) == dense.argmax(-1)).mean() >= top1


@pytest.mark.runtime
def test_decode_reads_the_positions_of_the_packed_copies(q8_0_plain, tmp_path):
    # every position set to 0 keeps the wrong inputs: decode must change, prompts must not
    bad = tmp_path / "bad-positions.gguf"
    shutil.copy(q8_0_plain, bad)
    for t in gguf.GGUFReader(bad, "r+").tensors:
        if t.name.endswith("_nm_idx"):
            t.data[...] = 0
    good = _decode_logits(q8_0_plain, tmp_path, "good")
    broken = _decode_logits(bad, tmp_path, "broken")
    assert np.abs(broken - good).max() > 0.2 * np.abs(good).max()
    prompt_good = logits_of.in_subprocess(q8_0_plain, tmp_path / "pg.npy")
    prompt_bad = logits_of.in_subprocess(bad, tmp_path / "pb.npy")
    np.testing.assert_array_equal(prompt_good, prompt_bad)


@pytest.mark.runtime
def test_chess_on_an_esparse_model_with_zero_thresholds_decodes_as_the_pruned_model(tmp_path):
    # chess+esparse: CHESS's sparse paths (thresholds 0: nothing skipped) and the N:M packed copies
    # of the projections without a threshold, against the zeroed weights' dense products
    model = _converted(tmp_path, "f16", "--method", "chess+esparse", "--sparsity", "0", "--attn-sparsity", "0")
    r = gguf.GGUFReader(model)
    assert r.fields[layout.Keys.METHOD].contents() == "chess+esparse"
    assert r.fields[layout.Keys.NM_PATTERN].contents() == "2:4"
    names = {t.name for t in r.tensors}
    assert {layout.FFN_GATE_THR.name(1), layout.ATTN_Q_T.name(1), layout.NM_TENSORS["attn_k"].vals.name(1),
            layout.NM_TENSORS["ffn_gate"].perm.name(1)} <= names
    sparse = _decode_logits(model, tmp_path, "sparse")
    dense = _decode_logits(model, tmp_path, "dense", dense=True)
    assert np.abs(sparse - dense).max() <= 0.005 * np.abs(dense).max()
    assert (sparse.argmax(-1) == dense.argmax(-1)).mean() >= 0.99


@pytest.mark.runtime
def test_packed_storage_leaves_the_pruned_weights_out(packed_pair):
    both, packed_only = (gguf.GGUFReader(p) for p in packed_pair)
    assert packed_only.fields[layout.Keys.NM_STORAGE].contents() == "packed"
    pruned = packed_only.fields[layout.Keys.NM_TENSORS].contents()
    names_both = {t.name: t for t in both.tensors}
    names_packed = {t.name: t for t in packed_only.tensors}
    assert len(pruned) == 14 and set(pruned) <= set(names_both)
    assert not set(pruned) & set(names_packed)
    # every other tensor, packed copies included, is the same in both files
    assert set(names_packed) == set(names_both) - set(pruned)
    for name, t in names_packed.items():
        assert bytes(t.data) == bytes(names_both[name].data), name
    saved = sum(int(names_both[n].n_bytes) for n in pruned)
    assert packed_pair[0].stat().st_size - packed_pair[1].stat().st_size >= saved


@pytest.mark.runtime
def test_prompts_of_a_packed_only_file_give_the_masked_weights_logits(packed_pair, tmp_path):
    # prompts expand the packed copies (ggml_nm_expand); the masked+packed file multiplies its zeroed
    # weights. Q8_0 without a shuffle expands to the zeroed weight's very bytes; F16 sums in another
    # order; shuffled Q4_0's zeroed weight is F16, while its expansion is Q4_0, whose dense product
    # rounds the input to 8 bits (as the Q8_0 decode test above)
    both, packed_only = packed_pair
    want = logits_of.in_subprocess(both, tmp_path / "both.npy")
    got = logits_of.in_subprocess(packed_only, tmp_path / "packed.npy")
    if "q8_0" in packed_only.name:  # magnitude: no shuffle
        np.testing.assert_array_equal(got, want)
    tol, top1 = (0.05, 0.9) if "q4_0" in packed_only.name else (0.002, 0.97)
    assert np.abs(got - want).max() <= tol * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= top1


@pytest.mark.runtime
def test_decode_of_a_packed_only_file_gives_its_prompt_path_logits(packed_pair, tmp_path):
    # one token per call reads the packed copies (mul_mat_nm); GGUFSPARSE_DENSE=1 takes the
    # expansion for every batch
    packed_only = packed_pair[1]
    packed = _decode_logits(packed_only, tmp_path, "packed")
    dense = _decode_logits(packed_only, tmp_path, "dense", dense=True)
    tol = 0.005 if "f16" in packed_only.name else 0.05
    assert np.abs(packed - dense).max() <= tol * np.abs(dense).max()
    assert (packed.argmax(-1) == dense.argmax(-1)).mean() >= 0.9


@pytest.mark.runtime
def test_thresholds_on_a_packed_only_file_are_refused(packed_pair, tmp_path):
    from ggufsparse.format.gguf_io import ExtraTensor, write_with_extras
    from ggufsparse.runtime import llm

    bad = tmp_path / "packed-with-threshold.gguf"
    thr = ExtraTensor(layout.ATTN_Q_THR.name(0), np.zeros(1, np.float32), T.F32)
    write_with_extras(packed_pair[1], bad, [], [thr], progress=False)
    with pytest.raises(llm.ModelLoadError) as err:
        llm.load(bad, n_ctx=64)
    assert "packed only" in str(err.value) and layout.ATTN_Q_THR.name(0) in str(err.value)


@pytest.mark.runtime
def test_converter_and_runtime_agree_on_which_kept_values_expand():
    # the converter writes F16 kept values where the runtime's ggml_nm_expand could not expand them
    from ggufsparse.format import ggml_quant

    seen = set()
    for qtype in (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q4_K):
        for m in range(2, 17):
            for n in range(1, m):
                expands = nm_pack.runtime_expands(qtype, Pattern(n, m))
                assert ggml_quant.nm_expandable(qtype, n, m) == expands, (qtype.name, n, m)
                seen.add(expands)
    assert seen == {True, False}
    assert not nm_pack.blocks_expand(T.Q8_0, Pattern(3, 6))  # 32 kept values would span two groups' blocks


@pytest.mark.runtime
@pytest.mark.parametrize("bad", ["out of range", "repeated"])
def test_a_permutation_that_is_not_one_is_refused_at_load(f16_shuffled, bad, tmp_path):
    # prompts of a packed-only file gather inputs by the permutation; the loader checks it first
    from ggufsparse.runtime import llm

    path = tmp_path / "bad-perm.gguf"
    shutil.copy(f16_shuffled, path)
    perm = next(t for t in gguf.GGUFReader(path, "r+").tensors if t.name.endswith("_nm_perm"))
    perm.data[0] = 10**6 if bad == "out of range" else perm.data[1]
    with pytest.raises(llm.ModelLoadError) as err:
        llm.load(path, n_ctx=64)
    assert perm.name in str(err.value) and "not a permutation" in str(err.value)
