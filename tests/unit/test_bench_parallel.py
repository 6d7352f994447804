"""`ggufsparse bench --parallel`: its table's per-stream latency and switch-over line, its options."""

from __future__ import annotations

import subprocess
import sys

from ggufsparse.eval import bench


def _speeds(model: str, runs: dict[str, list[float]]) -> bench.Speeds:
    s = bench.Speeds(model)
    s.runs = runs
    return s


def test_table_gives_each_stream_its_latency_and_where_sparse_stops_winning():
    dense = _speeds("d.gguf", {"tg32x1": [10.0, 11.0, 12.0], "tg32x4": [30.0, 30.0, 30.0], "tg32x8": [40.0] * 3})
    sparse = _speeds("s.gguf", {"tg32x1": [14.0, 13.0, 15.0], "tg32x4": [27.0, 27.0, 27.0], "tg32x8": [41.0] * 3})
    text = bench.parallel_table(bench.report(dense, sparse))
    rows = {int(line.split()[0]): line.split() for line in text.splitlines() if line.split()[0].isdigit()}
    assert sorted(rows) == [1, 4, 8]
    assert rows[1][3] == "1.273x"  # medians 14 / 11
    assert rows[4][4:] == ["133.3", "148.1"]  # 1000 ms x 4 streams / aggregate tokens/s
    assert "the sparse file is slower from 4 streams on" in text.splitlines()


def test_table_says_when_sparse_never_loses():
    dense = _speeds("d.gguf", {"tg8x1": [10.0], "tg8x2": [18.0]})
    sparse = _speeds("s.gguf", {"tg8x1": [12.0], "tg8x2": [19.0]})
    lines = bench.parallel_table(bench.report(dense, sparse)).splitlines()
    assert "the sparse file is not slower at any level measured" in lines
    # no runtime report in these made-up runs: the table says so instead of inventing a choice
    assert lines[-1] == "kernels of the sparse runs: not reported (a runtime without the choice of kernels)"


def test_bad_stream_counts_are_one_line_errors(tmp_path):
    for value in ("0,2", "four", ""):
        proc = subprocess.run([sys.executable, "-m", "ggufsparse", "bench", str(tmp_path / "a.gguf"),
                               str(tmp_path / "b.gguf"), "--parallel", value],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "--parallel" in proc.stderr
