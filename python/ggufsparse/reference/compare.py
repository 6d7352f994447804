"""`ggufsparse reference`: several files made from one model, scored by the PyTorch reference on the
same windows, as rows and a table."""

from __future__ import annotations

from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.models.tokenizer import gguf_tokenizer
from ggufsparse.models.torch_model import load
from ggufsparse.reference import sparse_forward


def compare(files: list[Path], text: Path, ctx: int, chunks: int, score: str, progress: bool = True) -> dict:
    """{"text", "ctx", "windows", "score", "rows"}: a dense row, then one per file with thresholds."""
    base = files[0]
    digest = sparse_forward.original_tensors_digest(base)
    for f in files[1:]:
        if sparse_forward.original_tensors_digest(f) != digest:
            raise UserError(f"{f}: its original tensors differ from {base}'s; compare files made from one model")
    tokenize, bos = gguf_tokenizer(base)
    windows = sparse_forward.text_windows(text, tokenize, bos, ctx, chunks)
    model = load(base)
    configs = [sparse_forward.BakedThresholds.dense(model.n_layers)]
    configs += [sparse_forward.BakedThresholds.read(f, model.n_layers) for f in files]
    configs = [c for c in configs if c.method is not None or c is configs[0]]
    first = ctx // 2 if score == "second-half" else 0
    rows = [q.row() for q in sparse_forward.evaluate(model, configs, windows, first, progress=progress)]
    return {"text": str(text), "ctx": ctx, "windows": len(windows), "score": score, "rows": rows}


def table(rows: list[dict]) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["| model | method | PPL | KL mean | KL p99 | top-1 | FFN sparsity | q sparsity | o sparsity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sparsity"]
        lines.append(f"| {r['name']} | {r['method'] or 'dense'} | {r['ppl']:.2f} | {r['kl_mean']:.4f} | "
                     f"{r['kl_p99']:.3f} | {r['top1']:.4f} | {pct(s['ffn'])} | {pct(s['attn_q'])} | "
                     f"{pct(s['attn_output'])} |")
    return "\n".join(lines)
