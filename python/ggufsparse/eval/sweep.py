"""`ggufsparse sweep`: convert a model at several sparsities with each method, evaluate and
benchmark every point against the dense model, and write JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.eval import bench
from ggufsparse.format.gguf_io import write_atomic
from ggufsparse.methods import FFN_METHODS


@dataclass
class SweepPlan:
    methods: list[str]
    sparsities: list[float]
    attn_sparsities: list[float | None]
    chunks: int = 16
    ctx: int = 512
    reps: int = 3
    tg: int = 64
    pp: int = 128
    threads: int = 2
    calib_tokens: int | None = None
    flash_attn: str = "auto"


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 <= v < 1 for v in values):
        raise UserError(f"{what}: every value must be in [0, 1)")
    return values


def make_plan(method: str, sparsity: str, attn_sparsity: str | None, **settings) -> SweepPlan:
    """The plan of `ggufsparse sweep` from its comma-separated lists; settings: SweepPlan's others."""
    methods = [m.strip() for m in method.split(",") if m.strip()]
    unknown = [m for m in methods if m not in FFN_METHODS]
    if not methods or unknown:
        raise UserError(f"--method: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(FFN_METHODS)})")
    sparsities = parse_floats(sparsity, "--sparsity")
    attn = parse_floats(attn_sparsity, "--attn-sparsity") if attn_sparsity else [None]
    if len(attn) == 1:
        attn = attn * len(sparsities)
    if len(attn) != len(sparsities):
        raise UserError("--attn-sparsity takes one value, or one per --sparsity value")
    if settings["reps"] < 1 or settings["chunks"] < 1:
        raise UserError("--reps and --chunks must be at least 1")
    return SweepPlan(methods, sparsities, attn, **settings)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{what} failed: {last}")


def _eval(model: Path, ref: Path | None, out: Path, plan: SweepPlan) -> dict:
    """In its own process: the runtime's counters are per process."""
    if not out.is_file():
        cmd = [sys.executable, "-m", "ggufsparse", "eval", str(model), "--chunks", str(plan.chunks),
               "--ctx", str(plan.ctx), "-t", str(plan.threads), "-fa", plan.flash_attn, "-q", "--json", str(out)]
        _run(cmd + (["--ref", str(ref)] if ref else []), f"eval of {model.name}")
    return json.loads(out.read_text())


def _convert(model: Path, out: Path, method: str, sparsity: float, attn: float | None, plan: SweepPlan) -> None:
    if out.is_file():
        return
    cmd = [sys.executable, "-m", "ggufsparse", "convert", str(model), "-o", str(out), "--method", method,
           "--sparsity", str(sparsity), "-q"]
    if attn is not None:
        cmd += ["--attn-sparsity", str(attn)]
    if plan.calib_tokens:
        cmd += ["--calib-tokens", str(plan.calib_tokens)]
    _run(cmd, f"convert {out.name}")


def run(model: Path, out_dir: Path, plan: SweepPlan, progress: bool = True) -> dict:
    """Every point's figures; files in out_dir are reused when present (delete them to redo a point)."""
    from tqdm import tqdm

    points = [(m, s, a) for m in plan.methods for s, a in zip(plan.sparsities, plan.attn_sparsities)]
    tag = f"{plan.ctx}x{plan.chunks}" + ("" if plan.flash_attn == "auto" else f"-fa{plan.flash_attn}")
    dense = _eval(model, None, out_dir / f"dense.eval-{tag}.json", plan)
    rows = []
    for method, s, a in tqdm(points, desc="sweep", unit="point", disable=not progress):
        name = f"{method}-ffn{s:g}" + (f"-attn{a:g}" if a is not None else "")
        gguf = out_dir / f"{name}.gguf"
        _convert(model, gguf, method, s, a, plan)
        ev = _eval(gguf, model, out_dir / f"{name}.eval-{tag}.json", plan)
        d, sp = bench.run(model, gguf, plan.reps, plan.tg, plan.pp, plan.threads, progress=False)
        speed = bench.report(d, sp)["tests"]
        reached = {k: v["fraction"] for k, v in (ev["sparsity"] or {}).items()}
        p = ev["perplexity"]
        rows.append({"name": name, "file": str(gguf), "method": method, "ffn_target": s, "attn_target": a,
                     "ppl": p["ppl"], "kl_mean": p["kl_mean"], "kl_p99": p["kl_p99"],
                     "top1": p["top1_agreement"], "sparsity": reached,
                     "speed": {t: {"dense_tps": v["dense_tps"], "sparse_tps": v["sparse_tps"], "ratio": v["ratio"]}
                               for t, v in speed.items()}})
    return {"model": str(model), "dense_ppl": dense["perplexity"]["ppl"],
            "eval": {"text": dense["perplexity"]["file"], "ctx": plan.ctx, "flash_attn": plan.flash_attn,
                     "windows": dense["perplexity"]["windows"]},
            "bench": {"reps": plan.reps, "tg": plan.tg, "pp": plan.pp, "threads": plan.threads}, "points": rows}


def markdown(result: dict) -> str:
    tg, pp = f"tg{result['bench']['tg']}", f"pp{result['bench']['pp']}"
    e = result["eval"]
    lines = [(f"Sweep of `{Path(result['model']).name}`: perplexity, KL(dense || sparse) and top-1 agreement on "
             f"{e['windows']} windows of {e['ctx']} tokens of `{Path(e['text']).name}` (second half of each "
             f"scored, flash attention {e.get('flash_attn', 'auto')}); sparsity from the runtime's counters on "
             f"those windows; speed from llama-bench, "
             f"dense and sparse alternated, medians of {result['bench']['reps']}, "
             f"{result['bench']['threads']} threads. Dense perplexity {result['dense_ppl']:.3f}."), "",
             (f"| point | PPL | KL mean | KL p99 | top-1 | FFN skipped | q skipped | o skipped | {tg} sparse/dense "
             f"| {pp} sparse/dense |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["points"]:
        s = r["sparsity"]

        def frac(kind, s=s):
            return f"{s[kind]:.3f}" if kind in s else "-"

        def ratio(test, r=r):
            return f"{r['speed'][test]['ratio']:.3f}x" if test in r["speed"] else "-"

        lines.append(f"| {r['name']} | {r['ppl']:.3f} | {r['kl_mean']:.4f} | {r['kl_p99']:.3f} | {r['top1']:.4f} "
                     f"| {frac('ffn')} | {frac('attn_q')} | {frac('attn_output')} | {ratio(tg)} | {ratio(pp)} |")
    return "\n".join(lines) + "\n"


def plot_png(result: dict) -> bytes:
    """Quality against measured FFN sparsity and against decode speed, one line per method."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tg = f"tg{result['bench']['tg']}"
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in result["points"]):
        rows = sorted((r for r in result["points"] if r["method"] == method),
                      key=lambda r: r["sparsity"].get("ffn", 0))
        sp = [r["sparsity"].get("ffn", 0) for r in rows]
        left.plot(sp, [r["kl_mean"] for r in rows], marker="o", label=method.upper())
        if all(tg in r["speed"] for r in rows):
            right.plot([r["speed"][tg]["ratio"] for r in rows], [r["ppl"] for r in rows], marker="o",
                       label=method.upper())
    right.scatter([1.0], [result["dense_ppl"]], color="black", zorder=3, label="dense")
    left.set(xlabel="FFN channels skipped (runtime counters)", ylabel="KL(dense || sparse), mean per token",
             title="Quality vs sparsity")
    right.set(xlabel=f"decode speed, sparse/dense ({tg}, median)", ylabel="perplexity",
              title="Quality vs speed")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{Path(result['model']).name}, {result['eval']['windows']}x{result['eval']['ctx']} tokens of "
                 f"{Path(result['eval']['text']).name}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: dict, out_dir: Path) -> list[Path]:
    files = [out_dir / "sweep.json", out_dir / "sweep.md", out_dir / "sweep.png"]
    write_atomic(files[0], json.dumps(result, indent=2) + "\n")
    write_atomic(files[1], markdown(result))
    write_atomic(files[2], plot_png(result))
    return files
