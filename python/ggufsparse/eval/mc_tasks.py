"""Multiple-choice task files (one JSON object a line, `../shared/data/README.md`) and their
metrics, as lm-evaluation-harness 0.4 defines them (lm_eval/api/task.py, process_results for
multiple_choice; lm_eval/api/metrics.py, mean_stderr)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError

BUNDLED = ("piqa", "arc_easy", "boolq", "winogrande")


@dataclass
class Example:
    """contexts: one shared context scored with each choice, or one context per choice scored with
    the single shared continuation `choices[0]` (WinoGrande's partial scoring)."""

    id: str
    contexts: list[str]
    choices: list[str]
    gold: int

    @property
    def per_context(self) -> bool:
        return len(self.contexts) > 1

    @property
    def n_options(self) -> int:
        return len(self.contexts) if self.per_context else len(self.choices)


def resolve_task(spec: str, data_dir: Path) -> Path:
    """A bundled task's name (piqa, ...) or a path to a task file."""
    if spec in BUNDLED:
        return data_dir / "tasks" / f"{spec}.jsonl"
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"{spec}: no such task file (bundled tasks: {', '.join(BUNDLED)})")
    return path


def _strings(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: \"{what}\" must be a non-empty list of strings")
    return value


def _example(obj, where: str, line_no: int) -> Example:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object")
    missing = [k for k in ("contexts", "choices", "gold") if k not in obj]
    if missing:
        raise UserError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    contexts = _strings(obj["contexts"], "contexts", where)
    choices = _strings(obj["choices"], "choices", where)
    gold = obj["gold"]
    if not isinstance(gold, int) or isinstance(gold, bool):
        raise UserError(f"{where}: \"gold\" must be an integer")
    ex = Example(str(obj.get("id", f"line-{line_no}")), contexts, choices, gold)
    if ex.per_context and len(choices) != 1:
        raise UserError(f"{where}: with {len(contexts)} contexts, \"choices\" must hold the one shared "
                        f"continuation, not {len(choices)}")
    if not ex.per_context and len(choices) < 2:
        raise UserError(f"{where}: one context needs at least two choices")
    if not 0 <= gold < ex.n_options:
        raise UserError(f"{where}: gold index {gold} out of range for {ex.n_options} "
                        f"{'contexts' if ex.per_context else 'choices'}")
    if any(not c for c in choices):
        raise UserError(f"{where}: an empty choice has no tokens to score")
    return ex


def read_task(path: Path, limit: int | None = None) -> list[Example]:
    """Every example of the file (the first `limit`), or a UserError naming file and line."""
    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        examples.append(_example(obj, where, n))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise UserError(f"{path}: no examples")
    return examples


def _mean_stderr(hits: np.ndarray) -> float | None:
    """lm-eval's mean_stderr: sample standard deviation (n - 1) over sqrt(n)."""
    n = len(hits)
    return None if n < 2 else float(np.std(hits, ddof=1) / math.sqrt(n))


def metrics(examples: list[Example], loglik: list[np.ndarray]) -> dict:
    """acc: argmax of the summed log-likelihoods; acc_norm: of the sums divided by the choice's
    length in characters (lm-eval's acc_norm); acc_bytes: in UTF-8 bytes (lm-eval's acc_bytes).
    Per-context examples have only acc, as in lm-eval. Ties go to the first option (np.argmax)."""
    hits: dict[str, list[float]] = {"acc": [], "acc_norm": [], "acc_bytes": []}
    for ex, ll in zip(examples, loglik):
        hits["acc"].append(float(np.argmax(ll) == ex.gold))
        if not ex.per_context:
            chars = np.array([len(c) for c in ex.choices], dtype=np.float64)
            nbytes = np.array([len(c.encode("utf-8")) for c in ex.choices], dtype=np.float64)
            hits["acc_norm"].append(float(np.argmax(ll / chars) == ex.gold))
            hits["acc_bytes"].append(float(np.argmax(ll / nbytes) == ex.gold))
    out: dict = {"examples": len(examples)}
    for name, h in hits.items():
        if len(h) == len(examples):
            arr = np.array(h)
            out[name] = float(arr.mean())
            out[f"{name}_stderr"] = _mean_stderr(arr)
    return out
