"""Markdown table of the evaluations written by scripts/nm-quality.sh: python nm_table.py OUT."""

import json
import sys
from pathlib import Path

TASKS = ("piqa", "arc_easy", "boolq", "winogrande")
ORDER = ("dense", "magnitude", "wanda", "esparse-noshuffle", "esparse-global", "esparse")


def row(name: str, r: dict) -> str:
    p = r["perplexity"]
    cells = [name, f"{p['ppl']:.2f}", f"{p['kl_mean']:.4f}", f"{p['top1_agreement']:.3f}"]
    for t in TASKS:
        m = r["tasks"].get(t)
        cells.append("-" if m is None else f"{m['acc']:.3f} ± {m['acc_stderr']:.3f}")
    return "| " + " | ".join(cells) + " |"


def main(out: Path) -> None:
    results = {f.stem: json.loads(f.read_text()) for f in out.glob("*.json") if not f.stem.endswith(".convert")}
    dense = results["dense"]
    p = dense["perplexity"]
    n = {t: m["examples"] for t, m in dense["tasks"].items()}
    print(f"WikiText-2 test, {p['windows']} windows of {p['ctx']} tokens ({p['tokens_scored']} scored); "
          f"tasks: acc on the first {', '.join(f'{v} of {t}' for t, v in n.items())}\n")
    print("| model | PPL | KL | top-1 | " + " | ".join(TASKS) + " |")
    print("|---" * (4 + len(TASKS)) + "|")
    print(row("dense", dense))
    patterns = sorted({k.rsplit("-", 1)[1] for k in results if k != "dense"})
    for pattern in patterns:
        for name in ORDER[1:]:
            key = f"{name}-{pattern}"
            if key in results:
                print(row(f"{name} {pattern.replace('x', ':')}", results[key]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
