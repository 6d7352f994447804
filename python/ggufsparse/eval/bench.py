"""Dense against sparse decode and prompt speed with llama.cpp's llama-bench.

The two models are alternated within one run (one llama-bench call per model and repetition),
so that drift in the machine's speed falls on both alike; we report medians and their ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.eval import bytes_read
from ggufsparse.runtime import stats as runtime_stats
from ggufsparse.runtime.locate import tool


@dataclass
class Speeds:
    """Tokens per second of each repetition, per test name (e.g. tg128, pp512)."""

    model: str
    runs: dict[str, list[float]] = field(default_factory=dict)
    # per site kind (ffn, attn_q, ...): [skipped, total] channel activations over every run
    counts: dict[str, list[int]] = field(default_factory=dict)
    # per site kind, per layer: [skipped, total], each run's layer total taken as its total over the
    # layers it counted (their sizes are equal in a model), since the report has per-layer fractions
    layer_counts: dict[str, list[list[float]]] = field(default_factory=dict)
    # the kernels the runs used and why (the runtime's report; the last run's)
    kernels: dict | None = None

    def add_counts(self, report: dict | None) -> None:
        """Adds a run's whole report (runtime/stats.read_whole): its counters, and its kernels."""
        k = runtime_stats.kernels(report)
        if k is not None and (k.get("sites") or k.get("mode") != "auto" or self.kernels is None):
            self.kernels = k
        for kind, r in (runtime_stats.counters(report) or {}).items():
            c = self.counts.setdefault(kind, [0, 0])
            c[0] += int(r["skipped"])
            c[1] += int(r["total"])
            fractions = r.get("layers") or []
            seen = sum(f is not None for f in fractions)
            layers = self.layer_counts.setdefault(kind, [])
            layers.extend([0.0, 0.0] for _ in range(len(fractions) - len(layers)))
            for il, f in enumerate(fractions):
                if f is not None:
                    layers[il][0] += float(f) * int(r["total"]) / seen
                    layers[il][1] += int(r["total"]) / seen

    def sparsity(self) -> dict[str, float] | None:
        """The fraction of channels the runtime skipped over the runs; None where nothing was sparse."""
        return {k: z / t for k, (z, t) in self.counts.items()} or None

    def shares(self) -> dict[str, float | list[float | None]]:
        """Per site kind, the fraction skipped in each layer over the runs (None: not counted there),
        or over all layers where the report had no per-layer fractions."""
        out: dict[str, float | list[float | None]] = {}
        for kind, (z, t) in self.counts.items():
            layers = self.layer_counts.get(kind)
            out[kind] = [s / n if n else None for s, n in layers] if layers else z / t
        return out

    def median(self, test: str) -> float:
        return statistics.median(self.runs[test])


# The runtime ignores a file's sparsity tensors under this variable and computes its dense model
# with the file's own weights and activation (docs/sparse-runtime.md).
DENSE_ENV = {"GGUFSPARSE_DENSE": "1"}


def _one_run(bench: Path, model: Path, tg: int, pp: int, threads: int,
             env: dict[str, str]) -> tuple[dict[str, float], dict | None]:
    """(tokens/s per test, the runtime's sparsity report of the run or None)."""
    cmd = [str(bench), "-m", str(model), "-r", "1", "-n", str(tg), "-p", str(pp), "-t", str(threads), "-o", "json"]
    stats = runtime_stats.new_report_path()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **env, runtime_stats.ENV: str(stats)})
    report = runtime_stats.read_whole(stats)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"llama-bench failed on {model}: {last}")
    speeds = {}
    for row in json.loads(proc.stdout):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        speeds[test] = float(row["avg_ts"])
    return speeds, report


def run(dense: Path | None, sparse: Path, reps: int, tg: int, pp: int, threads: int,
        progress: bool = True) -> tuple[Speeds, Speeds]:
    """dense None: the dense side is `sparse` itself with its sparsity tensors ignored (the only
    dense baseline of a fine-tuned file, whose weights no other file holds)."""
    bench = tool("llama-bench")
    return _alternated(dense, sparse, reps, lambda model, env: _one_run(bench, model, tg, pp, threads, env), progress)


def _alternated(dense: Path | None, sparse: Path, reps: int, one_run, progress: bool) -> tuple[Speeds, Speeds]:
    """`reps` rounds of one_run(model, env) on each side in turn: (tokens/s per test, report)."""
    from tqdm import tqdm

    for m in (dense, sparse):
        if m is not None and not m.is_file():
            raise UserError(f"{m}: file not found")
    sides = ((dense, {}) if dense is not None else (sparse, DENSE_ENV), (sparse, {}))
    dense_name = str(dense) if dense is not None else f"{sparse} (GGUFSPARSE_DENSE=1)"
    results = (Speeds(dense_name), Speeds(str(sparse)))
    for _ in tqdm(range(reps), desc="benchmark", unit="rep", disable=not progress):
        for (model, env), speeds in zip(sides, results):
            run_speeds, report = one_run(model, env)
            for test, ts in run_speeds.items():
                speeds.runs.setdefault(test, []).append(ts)
            speeds.add_counts(report)
    return results


def decode_bound(dense: Path | None, sparse: Path, dense_speeds: Speeds,
                 sparse_speeds: Speeds) -> bytes_read.Bound:
    """Bytes of weights a decode token reads on each side, at the sparsity each side's runs reached
    (eval/bytes_read.py). dense None: `sparse` with GGUFSPARSE_DENSE=1, as in `run`."""
    sparse_tensors = bytes_read.tensor_bytes(sparse)
    if dense is None:
        dense_bytes: float = bytes_read.dense_bytes_per_token(sparse_tensors)
    else:  # a plain file reads its dense weights; a ggufsparse file given as DENSE runs sparse
        dense_bytes = bytes_read.sparse_bytes_per_token(bytes_read.tensor_bytes(dense), dense_speeds.shares())
    return bytes_read.Bound(dense_bytes, bytes_read.sparse_bytes_per_token(sparse_tensors, sparse_speeds.shares()))


def is_decode(test: str) -> bool:
    return test.startswith("tg")


def report(dense: Speeds, sparse: Speeds, bound: bytes_read.Bound | None = None) -> dict:
    tests = {}
    b = bound.bound if bound is not None else None
    for test in dense.runs:
        d, s = dense.median(test), sparse.median(test)
        tests[test] = {"dense_tps": d, "sparse_tps": s, "ratio": s / d,
                       "dense_runs": dense.runs[test], "sparse_runs": sparse.runs[test]}
        if b and is_decode(test):
            tests[test]["share_of_bound"] = s / d / b
    rep = {"dense": dense.model, "sparse": sparse.model, "reps": len(next(iter(dense.runs.values()))),
           "tests": tests, "sparsity": {"dense": dense.sparsity(), "sparse": sparse.sparsity()},
           "kernels": {"dense": dense.kernels, "sparse": sparse.kernels}}
    if bound is not None:
        rep["bound"] = bound.as_dict()
    return rep


def _mb(n: float) -> str:
    v = n / 1e6
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table(rep: dict) -> str:
    lines = [f"dense:  {rep['dense']}", f"sparse: {rep['sparse']}",
             f"medians of {rep['reps']} alternated repetitions (tokens/s)",
             f"{'test':<8} {'dense':>10} {'sparse':>10} {'sparse/dense':>13}"]
    for test, r in rep["tests"].items():
        line = f"{test:<8} {r['dense_tps']:>10.2f} {r['sparse_tps']:>10.2f} {r['ratio']:>12.3f}x"
        b = rep.get("bound")
        if b and b["bound"] and "share_of_bound" in r:
            line += (f"  (bound {b['bound']:.2f}x: {_mb(b['dense_bytes_per_token'])} -> "
                     f"{_mb(b['sparse_bytes_per_token'])} MB a token; {100 * r['share_of_bound']:.0f}% of it)")
        lines.append(line)
    for side in ("dense", "sparse"):
        sp = rep["sparsity"][side]
        text = ", ".join(f"{k} {v:.3f}" for k, v in sp.items()) if sp else "none (no sparse layer ran)"
        lines.append(f"channels skipped over the {side} runs: {text}")
    lines.append(f"kernels of the sparse runs: {runtime_stats.kernels_summary(rep.get('kernels', {}).get('sparse'))}")
    return "\n".join(lines)


# Served throughput: several sequences decoding together, with llama.cpp's llama-batched-bench
# (one call per model and repetition, alternated as above). A test "tg32x4" is 4 streams of 32
# tokens each, decoded as batches of 4 tokens; its tokens/s are the streams' aggregate.

def parallel_test(tg: int, streams: int) -> str:
    return f"tg{tg}x{streams}"


def streams_of(test: str) -> int:
    return int(test.rpartition("x")[2]) if "x" in test else 1


def _one_parallel_run(tool_path: Path, model: Path, levels: list[int], tg: int, pp: int, threads: int,
                      env: dict[str, str]) -> tuple[dict[str, float], dict | None]:
    ctx = max(levels) * (pp + tg) + 16
    cmd = [str(tool_path), "-m", str(model), "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(pp),
           "-ntg", str(tg), "-npl", ",".join(map(str, levels)), "-t", str(threads), "--output-format", "jsonl"]
    stats = runtime_stats.new_report_path()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **env, runtime_stats.ENV: str(stats)})
    report = runtime_stats.read_whole(stats)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"llama-batched-bench failed on {model}: {last}")
    speeds = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            speeds[parallel_test(tg, int(row["pl"]))] = float(row["speed_tg"])
    missing = [n for n in levels if parallel_test(tg, n) not in speeds]
    if missing:
        raise UserError(f"llama-batched-bench printed no result for {missing[0]} streams on {model}")
    return speeds, report


def run_parallel(dense: Path | None, sparse: Path, reps: int, levels: list[int], tg: int, pp: int, threads: int,
                 progress: bool = True) -> tuple[Speeds, Speeds]:
    """As `run`, for `levels` streams decoding together: aggregate decode tokens/s per level."""
    batched = tool("llama-batched-bench")
    return _alternated(dense, sparse, reps,
                       lambda model, env: _one_parallel_run(batched, model, levels, tg, pp, threads, env), progress)


def parallel_table(rep: dict) -> str:
    """`table` for served throughput: aggregate tokens/s and each stream's milliseconds a token."""
    lines = [f"dense:  {rep['dense']}", f"sparse: {rep['sparse']}",
             (f"medians of {rep['reps']} alternated repetitions; decode of several streams together "
              "(llama-batched-bench)"),
             (f"{'streams':>7} {'dense t/s':>10} {'sparse t/s':>11} {'sparse/dense':>13} "
              f"{'dense ms/tok':>13} {'sparse ms/tok':>14}")]
    for test, r in rep["tests"].items():
        n = streams_of(test)
        lines.append(f"{n:>7} {r['dense_tps']:>10.2f} {r['sparse_tps']:>11.2f} {r['ratio']:>12.3f}x "
                     f"{1000 * n / r['dense_tps']:>13.1f} {1000 * n / r['sparse_tps']:>14.1f}")
    slower = [streams_of(t) for t, r in rep["tests"].items() if r["ratio"] < 1.0]
    lines.append(f"the sparse file is slower from {min(slower)} streams on" if slower else
                 "the sparse file is not slower at any level measured")
    lines.append(f"kernels of the sparse runs: {runtime_stats.kernels_summary(rep.get('kernels', {}).get('sparse'))}")
    return "\n".join(lines)
