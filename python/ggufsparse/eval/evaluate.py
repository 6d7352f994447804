"""`ggufsparse eval`: perplexity, KL divergence to a reference, multiple-choice accuracy and the
sparsity reached, all through the patched runtime that users run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.eval import mc_score, mc_tasks, perplexity
from ggufsparse.format import param_sparsity
from ggufsparse.format.gguf_io import check_gguf
from ggufsparse.paths import shared_data_dir
from ggufsparse.runtime import stats as runtime_stats
from ggufsparse.runtime.session import Session


@dataclass
class EvalPlan:
    ppl_text: Path | None
    ctx: int = 512
    chunks: int = 0
    tasks: list[Path] = field(default_factory=list)
    limit: int | None = None
    task_ctx: int = 2048
    threads: int | None = None
    flash_attn: str = "auto"
    ppl_docs: slice | None = None  # documents of a .jsonl ppl_text


def make_plan(*, ppl: str | None, no_ppl: bool, ppl_docs: str | None, ctx: int, chunks: int,
              tasks: list[str] | None, limit: int | None, task_ctx: int, threads: int | None,
              flash_attn: str) -> EvalPlan:
    """The plan of `ggufsparse eval` from its options: task lists (comma-separated, may repeat, 'all'
    for the bundled ones), the perplexity text (default: wikitext-2's test set) and its documents."""
    specs = [s for group in tasks or [] for s in group.split(",") if s]
    specs = [t for s in specs for t in (mc_tasks.BUNDLED if s == "all" else [s])]
    needs_data = not ppl or any(s in mc_tasks.BUNDLED for s in specs)
    data = shared_data_dir() if needs_data else None
    text = None if no_ppl else Path(ppl) if ppl else data / "wikitext2" / "wiki.test.raw"
    if ctx < 8 or chunks < 0 or (limit is not None and limit < 1):
        raise UserError("--ctx must be at least 8, --chunks at least 0, --limit at least 1")
    return EvalPlan(ppl_text=text, ctx=ctx, chunks=chunks, tasks=[mc_tasks.resolve_task(s, data) for s in specs],
                    limit=limit, task_ctx=task_ctx, threads=threads, flash_attn=flash_attn,
                    ppl_docs=_doc_slice(ppl_docs))


def _doc_slice(text: str | None) -> slice | None:
    if text is None:
        return None
    try:
        start, stop = (int(v) if v else None for v in text.split(":"))
    except ValueError:
        raise UserError(f"--ppl-docs {text}: give START:END document indices, e.g. 800: (either may be empty)") from None
    return slice(start, stop)


def evaluate(model: Path, ref: Path | None, plan: EvalPlan, progress: bool = True) -> dict:
    """Everything the plan asks for; bad input fails before any model work."""
    for m in (model, ref):
        if m is not None:
            check_gguf(m)
    text = perplexity.read_text(plan.ppl_text, plan.ppl_docs) if plan.ppl_text else None
    if len({p.stem for p in plan.tasks}) != len(plan.tasks):
        raise UserError("two task files have the same name; rename one")
    tasks = [(p, mc_tasks.read_task(p, plan.limit)) for p in plan.tasks]
    stats_path = runtime_stats.request_report()
    out: dict = {"model": str(model), "ref": str(ref) if ref else None, "flash_attn": plan.flash_attn}
    with Session(model, plan.threads, flash_attn=plan.flash_attn) as session:
        if text is not None:
            out["perplexity"] = _perplexity(session, ref, text, plan, progress)
        out["tasks"] = {}
        for path, examples in tasks:
            start = time.perf_counter()
            ll = mc_score.loglikelihoods(session, examples, plan.task_ctx, progress, desc=path.stem)
            out["tasks"][path.stem] = mc_tasks.metrics(examples, ll) | {
                "file": str(path), "seconds": time.perf_counter() - start}
    out["sparsity"] = runtime_stats.read_report(stats_path)
    out["param_sparsity"] = param_sparsity.parameter_sparsity(model, out["sparsity"])
    return out


def _perplexity(session: Session, ref: Path | None, text: str, plan: EvalPlan, progress: bool) -> dict:
    start = time.perf_counter()
    windows = perplexity.windows(session, text, plan.ppl_text, plan.ctx, plan.chunks)
    if ref is None:
        result = perplexity.score(session, None, windows, progress)
    else:
        with Session(ref, plan.threads, flash_attn=plan.flash_attn) as ref_session:
            if ref_session.n_vocab != session.n_vocab:
                raise UserError(f"{ref}: its vocabulary ({ref_session.n_vocab}) differs from the model's "
                                f"({session.n_vocab}); compare files made from one model")
            result = perplexity.score(session, ref_session, windows, progress)
    docs = None if plan.ppl_docs is None else f"{plan.ppl_docs.start or 0}:{plan.ppl_docs.stop or ''}"
    return result | {"file": str(plan.ppl_text), "docs": docs, "seconds": time.perf_counter() - start}


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_report(r: dict) -> str:
    lines = [f"model: {r['model']}"] + ([f"reference: {r['ref']}"] if r["ref"] else [])
    p = r.get("perplexity")
    if p:
        lines.append(f"perplexity ({Path(p['file']).name}, {p['windows']} windows of {p['ctx']}, "
                     f"second half scored, {p['tokens_scored']} tokens, {p['seconds']:.0f} s): {p['ppl']:.4f}")
        if "kl_mean" in p:
            lines.append(f"  reference perplexity {p['ref_ppl']:.4f}; KL divergence mean {p['kl_mean']:.5f}, "
                         f"p99 {p['kl_p99']:.4f}, max {p['kl_max']:.4f}; top-1 agreement {p['top1_agreement']:.4f}")
    if r["tasks"]:
        lines.append(f"{'task':<14} {'n':>6} {'acc':>15} {'acc_norm':>15} {'seconds':>8}")
        for name, t in r["tasks"].items():
            acc = f"{t['acc']:.4f} ± {_f(t['acc_stderr'])}"
            norm = f"{t['acc_norm']:.4f} ± {_f(t['acc_norm_stderr'])}" if "acc_norm" in t else "-"
            lines.append(f"{name:<14} {t['examples']:>6} {acc:>15} {norm:>15} {t['seconds']:>8.0f}")
    s = r["sparsity"]
    if s:
        parts = [f"{kind} {v['fraction']:.4f}" for kind, v in s.items()]
        lines.append("sparsity reached (runtime counters, channels skipped): " + ", ".join(parts))
        lines.append(f"  projection weights skipped: {r['param_sparsity']:.4f} (docs/eval.md)")
    else:
        lines.append("sparsity reached: none (no sparse layer ran)")
    return "\n".join(lines)
