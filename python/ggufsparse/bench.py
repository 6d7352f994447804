"""Dense against sparse decode and prompt speed with llama.cpp's llama-bench.

The two models are alternated within one run (one llama-bench call per model and repetition),
so that drift in the machine's speed falls on both alike; we report medians and their ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.runtime.locate import tool


@dataclass
class Speeds:
    """Tokens per second of each repetition, per test name (e.g. tg128, pp512)."""

    model: str
    runs: dict[str, list[float]] = field(default_factory=dict)

    def median(self, test: str) -> float:
        return statistics.median(self.runs[test])


def _one_run(bench: Path, model: Path, tg: int, pp: int, threads: int) -> dict[str, float]:
    cmd = [str(bench), "-m", str(model), "-r", "1", "-n", str(tg), "-p", str(pp), "-t", str(threads), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"llama-bench failed on {model}: {last}")
    speeds = {}
    for row in json.loads(proc.stdout):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        speeds[test] = float(row["avg_ts"])
    return speeds


def run(dense: Path, sparse: Path, reps: int, tg: int, pp: int, threads: int,
        progress: bool = True) -> tuple[Speeds, Speeds]:
    from tqdm import tqdm

    for m in (dense, sparse):
        if not m.is_file():
            raise UserError(f"{m}: file not found")
    bench = tool("llama-bench")
    results = (Speeds(str(dense)), Speeds(str(sparse)))
    for _ in tqdm(range(reps), desc="benchmark", unit="rep", disable=not progress):
        for model, speeds in zip((dense, sparse), results):
            for test, ts in _one_run(bench, model, tg, pp, threads).items():
                speeds.runs.setdefault(test, []).append(ts)
    return results


def report(dense: Speeds, sparse: Speeds) -> dict:
    tests = {}
    for test in dense.runs:
        d, s = dense.median(test), sparse.median(test)
        tests[test] = {"dense_tps": d, "sparse_tps": s, "ratio": s / d,
                       "dense_runs": dense.runs[test], "sparse_runs": sparse.runs[test]}
    return {"dense": dense.model, "sparse": sparse.model, "reps": len(next(iter(dense.runs.values()))),
            "tests": tests}


def table(rep: dict) -> str:
    lines = [f"dense:  {rep['dense']}", f"sparse: {rep['sparse']}",
             f"medians of {rep['reps']} alternated repetitions (tokens/s)",
             f"{'test':<8} {'dense':>10} {'sparse':>10} {'sparse/dense':>13}"]
    for test, r in rep["tests"].items():
        lines.append(f"{test:<8} {r['dense_tps']:>10.2f} {r['sparse_tps']:>10.2f} {r['ratio']:>12.3f}x")
    return "\n".join(lines)
