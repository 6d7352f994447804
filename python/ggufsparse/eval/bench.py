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
from ggufsparse.runtime import stats as runtime_stats
from ggufsparse.runtime.locate import tool


@dataclass
class Speeds:
    """Tokens per second of each repetition, per test name (e.g. tg128, pp512)."""

    model: str
    runs: dict[str, list[float]] = field(default_factory=dict)
    # per site kind (ffn, attn_q, ...): [skipped, total] channel activations over every run
    counts: dict[str, list[int]] = field(default_factory=dict)

    def add_counts(self, report: dict | None) -> None:
        for kind, r in (report or {}).items():
            c = self.counts.setdefault(kind, [0, 0])
            c[0] += int(r["skipped"])
            c[1] += int(r["total"])

    def sparsity(self) -> dict[str, float] | None:
        """The fraction of channels the runtime skipped over the runs; None where nothing was sparse."""
        return {k: z / t for k, (z, t) in self.counts.items()} or None

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
    report = runtime_stats.read_report(stats)
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
    from tqdm import tqdm

    for m in (dense, sparse):
        if m is not None and not m.is_file():
            raise UserError(f"{m}: file not found")
    bench = tool("llama-bench")
    sides = ((dense, {}) if dense is not None else (sparse, DENSE_ENV), (sparse, {}))
    dense_name = str(dense) if dense is not None else f"{sparse} (GGUFSPARSE_DENSE=1)"
    results = (Speeds(dense_name), Speeds(str(sparse)))
    for _ in tqdm(range(reps), desc="benchmark", unit="rep", disable=not progress):
        for (model, env), speeds in zip(sides, results):
            run_speeds, report = _one_run(bench, model, tg, pp, threads, env)
            for test, ts in run_speeds.items():
                speeds.runs.setdefault(test, []).append(ts)
            speeds.add_counts(report)
    return results


def report(dense: Speeds, sparse: Speeds) -> dict:
    tests = {}
    for test in dense.runs:
        d, s = dense.median(test), sparse.median(test)
        tests[test] = {"dense_tps": d, "sparse_tps": s, "ratio": s / d,
                       "dense_runs": dense.runs[test], "sparse_runs": sparse.runs[test]}
    return {"dense": dense.model, "sparse": sparse.model, "reps": len(next(iter(dense.runs.values()))),
            "tests": tests, "sparsity": {"dense": dense.sparsity(), "sparse": sparse.sparsity()}}


def table(rep: dict) -> str:
    lines = [f"dense:  {rep['dense']}", f"sparse: {rep['sparse']}",
             f"medians of {rep['reps']} alternated repetitions (tokens/s)",
             f"{'test':<8} {'dense':>10} {'sparse':>10} {'sparse/dense':>13}"]
    for test, r in rep["tests"].items():
        lines.append(f"{test:<8} {r['dense_tps']:>10.2f} {r['sparse_tps']:>10.2f} {r['ratio']:>12.3f}x")
    for side in ("dense", "sparse"):
        sp = rep["sparsity"][side]
        text = ", ".join(f"{k} {v:.3f}" for k, v in sp.items()) if sp else "none (no sparse layer ran)"
        lines.append(f"channels skipped over the {side} runs: {text}")
    return "\n".join(lines)
