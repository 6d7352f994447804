"""The bytes-read bound of `ggufsparse bench` without a runtime: hand-made tensor maps whose bytes
per decode token are worked out by hand, and the bench's per-layer shares and output."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from ggufsparse.eval import bench
from ggufsparse.eval.bytes_read import Bound, dense_bytes_per_token, sparse_bytes_per_token, tensor_bytes

# one block of the original model: 1200 bytes
LAYER = {"attn_norm.weight": 10, "attn_q.weight": 100, "attn_k.weight": 40, "attn_v.weight": 40,
         "attn_output.weight": 100, "ffn_norm.weight": 10,
         "ffn_gate.weight": 300, "ffn_up.weight": 300, "ffn_down.weight": 300}


def model(*layers: dict[str, int], tied: bool = False) -> dict[str, int]:
    """Two-block (or more) model: token_embd 800, output_norm 5, output 1000 unless tied."""
    out = {"token_embd.weight": 800, "output_norm.weight": 5}
    if not tied:
        out["output.weight"] = 1000
    for i, layer in enumerate(layers):
        out.update({f"blk.{i}.{k}": v for k, v in layer.items()})
    return out


DENSE = model(LAYER, LAYER)


def test_dense_reads_every_block_tensor_and_the_head_not_the_embedding_table():
    # 2 x 1200 + output_norm 5 + output 1000; token_embd: one row, counted 0
    assert dense_bytes_per_token(DENSE) == 3405
    # with no sparsity tensors the sparse path reads the same
    assert sparse_bytes_per_token(DENSE, {"ffn": 0.5}) == 3405


def test_tied_embeddings_count_the_table_as_the_head():
    tied = model(LAYER, LAYER, tied=True)
    assert dense_bytes_per_token(tied) == 2400 + 5 + 800
    chess = model(*(dict(LAYER, ffn_gate_thr=8, **{"ffn_down_t.weight": 320}) for _ in range(2)), tied=True)
    # per layer: 1200 - up 300 x 0.5 - down 300 + down_t 320 x 0.5 + threshold 8 = 918
    assert sparse_bytes_per_token(chess, {"ffn": 0.5}) == 2 * 918 + 5 + 800


CHESS_LAYER = dict(LAYER, ffn_gate_thr=8, attn_q_thr=4, attn_output_thr=4,
                   **{"ffn_down_t.weight": 320, "attn_q_t.weight": 120, "attn_output_t.weight": 100})


def test_chess_reads_up_rows_and_transposed_copies_at_the_per_layer_shares():
    sparse = model(CHESS_LAYER, CHESS_LAYER)
    shares = {"ffn": 0.5, "attn_q": [0.5, 0.25], "attn_output": 0.5}
    # layer 0: norms 20, k and v 80, thresholds 16, gate 300, up 300 x 0.5, down_t 320 x 0.5,
    # q_t 120 x 0.5, output_t 100 x 0.5 = 836; layer 1: q_t 120 x 0.75 = 90 instead of 60: 866
    assert sparse_bytes_per_token(sparse, shares) == 836 + 866 + 5 + 1000
    # the dense path of the same file ignores the ggufsparse tensors
    assert dense_bytes_per_token(sparse) == 3405
    b = Bound(dense_bytes_per_token(DENSE), sparse_bytes_per_token(sparse, shares))
    assert b.bound == pytest.approx(3405 / 2707, rel=1e-12)
    assert b.as_dict() == {"bound": b.bound, "dense_bytes_per_token": 3405, "sparse_bytes_per_token": 2707}
    # no sparsity measured: every channel read, the copies in place of the dense weights
    assert sparse_bytes_per_token(sparse, {}) == 2 * (20 + 80 + 16 + 300 + 300 + 320 + 120 + 100) + 1005


def test_down_cut_and_predictor():
    layer = dict(LAYER, ffn_gate_thr=8, ffn_down_in_thr=4, ffn_pred_thr=8,
                 **{"ffn_down_t.weight": 320, "ffn_pred_a.weight": 30, "ffn_pred_b.weight": 30})
    shares = {"ffn": 0.5, "ffn_down_in": 0.75, "ffn_gate": 0.25}
    # norms 20, attention 280, thresholds 20, predictor 60, gate rows 300 x 0.75, up 300 x 0.5,
    # down_t at ffn_down_in's share (both cuts) 320 x 0.25
    assert sparse_bytes_per_token(model(layer), shares) == 20 + 280 + 20 + 60 + 225 + 150 + 80 + 1005


def test_teal_reads_every_projection_through_its_copy_at_its_site_share():
    sites = {"attn_q": "attn_q", "attn_k": "attn_k", "attn_v": "attn_v", "attn_output": "attn_output",
             "ffn_gate": "ffn_gate_in", "ffn_up": "ffn_up_in", "ffn_down": "ffn_down_in"}
    layer = dict(LAYER)
    for p, site in sites.items():
        layer[f"{site}_thr" if site.endswith("_in") else f"{p}_thr"] = 4
        layer[f"{p}_t.weight"] = LAYER[f"{p}.weight"]
    teal = model(layer, layer)
    shares = {s: 0.5 for s in sites.values()}
    shares["ffn_down_in"] = [0.5, None]  # not counted in layer 1: read whole there
    # layer 0: norms 20, 7 thresholds 28, the seven projections (1180 bytes) at half: 638
    # layer 1: down's 300 whole: 788
    assert sparse_bytes_per_token(teal, shares) == 638 + 788 + 1005
    assert dense_bytes_per_token(teal) == 3405


def _nm(layer: dict[str, int], storage: str) -> dict[str, int]:
    out = dict(layer)
    for p, vals, idx, perm in (("ffn_gate", 150, 20, 0), ("ffn_up", 150, 20, 0), ("ffn_down", 150, 20, 12)):
        if storage == "packed":
            del out[f"{p}.weight"]
        out[f"{p}_nm.weight"], out[f"{p}_nm_idx"] = vals, idx
        if perm:
            out[f"{p}_nm_perm"] = perm
    return out


def test_packed_only_file_reads_the_packed_copies_on_both_paths():
    packed = model(_nm(LAYER, "packed"), _nm(LAYER, "packed"))
    # per layer: norms 20, attention 280, gate and up 170 each, down 182 (with its permutation)
    assert sparse_bytes_per_token(packed, {}) == 2 * 822 + 1005
    assert dense_bytes_per_token(packed) == 2 * 822 + 1005
    assert Bound(dense_bytes_per_token(DENSE), sparse_bytes_per_token(packed, {})).bound == 3405 / 2649


def test_masked_and_packed_file_decodes_through_the_copies_and_its_dense_path_reads_the_weights():
    masked = model(_nm(LAYER, "masked+packed"), _nm(LAYER, "masked+packed"))
    assert sparse_bytes_per_token(masked, {}) == 2 * 822 + 1005
    assert dense_bytes_per_token(masked) == 3405


def test_chess_layer_leaves_the_packed_up_and_down_unread():
    # chess+esparse: the gate through its packed copy, up row-skipped on its (zeroed) weight, down
    # through ffn_down_t
    layer = dict(_nm(LAYER, "masked+packed"), ffn_gate_thr=8, **{"ffn_down_t.weight": 320})
    assert sparse_bytes_per_token(model(layer), {"ffn": 0.5}) == 20 + 280 + 8 + 170 + 150 + 160 + 1005


def test_speeds_keep_the_per_layer_fractions_over_runs():
    s = bench.Speeds("m")
    s.add_counts({"ffn": {"skipped": 30, "total": 100, "layers": [0.2, 0.4]},
                  "attn_q": {"skipped": 20, "total": 40, "layers": [None, 0.5]}})
    s.add_counts({"ffn": {"skipped": 50, "total": 100, "layers": [0.4, 0.6]}})
    assert s.sparsity() == {"ffn": 0.4, "attn_q": 0.5}
    assert s.shares() == {"ffn": pytest.approx([0.3, 0.5]), "attn_q": [None, 0.5]}
    # a report without per-layer fractions: the overall one
    s = bench.Speeds("m")
    s.add_counts({"ffn": {"skipped": 1, "total": 4}})
    assert s.shares() == {"ffn": 0.25}


def _speeds(name: str, tg: list[float], pp: list[float]) -> bench.Speeds:
    return bench.Speeds(name, {"tg32": tg, "pp512": pp})


def test_report_and_table_print_the_bound_beside_the_decode_ratio():
    rep = bench.report(_speeds("d", [13.76] * 3, [100.0] * 3), _speeds("s", [17.1] * 3, [95.0] * 3),
                       Bound(980e6, 700e6))
    assert rep["bound"] == {"bound": pytest.approx(1.4), "dense_bytes_per_token": 980e6,
                            "sparse_bytes_per_token": 700e6}
    assert rep["tests"]["tg32"]["share_of_bound"] == pytest.approx(17.1 / 13.76 / 1.4)
    assert "share_of_bound" not in rep["tests"]["pp512"]
    json.dumps(rep)
    lines = bench.table(rep).splitlines()
    assert lines[4] == ("tg32          13.76      17.10        1.243x"
                        "  (bound 1.40x: 980 -> 700 MB a token; 89% of it)")
    assert lines[5] == "pp512        100.00      95.00        0.950x"
    # without a bound: the table as before
    assert bench.table(bench.report(_speeds("d", [1.0], [1.0]), _speeds("s", [2.0], [1.0]))).splitlines()[4] == \
        "tg32           1.00       2.00        2.000x"


def _write(path, tensors: dict[str, int]) -> None:
    w = gguf.GGUFWriter(path, "llama")
    for name, n in tensors.items():
        w.add_tensor(name, np.zeros(n // 4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_decode_bound_reads_the_files(tmp_path):
    dense = {"token_embd.weight": 64, "output.weight": 64, "blk.0.ffn_up.weight": 128,
             "blk.0.ffn_gate.weight": 128, "blk.0.ffn_down.weight": 128}
    sparse = dict(dense, **{"blk.0.ffn_gate_thr": 16, "blk.0.ffn_down_t.weight": 128})
    _write(tmp_path / "d.gguf", dense)
    _write(tmp_path / "s.gguf", sparse)
    assert tensor_bytes(tmp_path / "s.gguf") == sparse
    runs = bench.Speeds("s")
    runs.add_counts({"ffn": {"skipped": 3, "total": 4, "layers": [0.75]}})
    # dense: 64 + 3 x 128 = 448; sparse: 64 + gate 128 + up and down_t 128 x 0.25 each + 16 = 272
    b = bench.decode_bound(tmp_path / "d.gguf", tmp_path / "s.gguf", bench.Speeds("d"), runs)
    assert (b.dense_bytes_per_token, b.sparse_bytes_per_token) == (448, 272)
    # one file: its own dense path
    b = bench.decode_bound(None, tmp_path / "s.gguf", bench.Speeds("s*"), runs)
    assert (b.dense_bytes_per_token, b.sparse_bytes_per_token) == (448, 272)
