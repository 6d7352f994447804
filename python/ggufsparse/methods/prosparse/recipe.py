"""The settings of a ProSparse fine-tune: `ggufsparse finetune --recipe` reads them from the
[prosparse] section of a TOML file in convert/ (e.g. prosparse-smollm2-135m; pipeline/recipe.py reads
the file); flags override fields."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from ggufsparse.errors import UserError
from ggufsparse.methods.prosparse import schedule


@dataclass(frozen=True)
class FinetuneRecipe:
    method: str = "prosparse"
    # (lambda, end of stage as a fraction of the run); the paper's 7B shape
    stages: tuple[tuple[float, float], ...] = ((0.0, 0.303), (5e-3, 0.364), (5e-2, 0.606), (5e-2, 0.727),
                                              (2e-1, 0.970), (2e-1, 1.0))
    steps: int = 240
    batch: int = 4
    seq_len: int = 256
    lr: float = 1e-4
    warmup_steps: int = 10  # linear learning-rate warm-up
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    fatrelu: float = 0.01  # FATReLU threshold written at export; 0 exports plain ReLU
    save_every: int = 20  # checkpoint interval in steps
    eval_windows: int = 8  # held-out windows of the training text, scored at each stage's end
    seed: int = 0
    data: str | None = None  # training text; None: the C4 sample
    # weight of distillation from the original (SiLU) model in place of cross-entropy:
    # loss = (1 - distill) * CE + distill * KL(original || trained) + lambda * L1. 0: the paper's loss
    distill: float = 0.0
    # fraction of the run over which the activation moves linearly from the model's own to ReLU
    # (prosparse/anneal.py; not in the paper). 0: the paper's swap at step 0
    relu_anneal: float = 0.0

    def validate(self) -> FinetuneRecipe:
        if self.method != "prosparse":
            raise UserError(f"--method {self.method}: finetune knows prosparse")
        for name in ("steps", "batch", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.seq_len < 8:
            raise UserError("--seq-len must be at least 8")
        if self.eval_windows < 1 or self.warmup_steps < 0:
            raise UserError("--eval-windows must be at least 1 and --warmup-steps at least 0")
        for name in ("lr", "weight_decay", "grad_clip", "fatrelu"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0) or (name == "lr" and v == 0):
                raise UserError(f"--{name.replace('_', '-')} {v}: must be a finite number" +
                                (" above 0" if name == "lr" else " >= 0"))
        if not (math.isfinite(self.distill) and 0 <= self.distill <= 1):
            raise UserError(f"--distill {self.distill}: must be between 0 and 1")
        if not (math.isfinite(self.relu_anneal) and 0 <= self.relu_anneal <= 1):
            raise UserError(f"--relu-anneal {self.relu_anneal}: must be between 0 and 1")
        fracs = [f for _, f in self.stages]
        if any(not 0 < b <= 1 for b in fracs) or fracs != sorted(set(fracs)) or fracs[-1] != 1.0:
            raise UserError("stages: each ends at an increasing fraction of the run in (0, 1], the last at 1")
        schedule.check(self.schedule())
        return self

    def schedule(self) -> list[schedule.Stage]:
        return schedule.scaled([tuple(s) for s in self.stages], self.steps)

    def training_fields(self) -> dict:
        """The fields that shape the trained weights (a checkpoint resumes only under the same)."""
        d = asdict(self)
        for name in ("fatrelu", "save_every", "eval_windows"):
            d.pop(name)
        return d

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def override(self, **given) -> FinetuneRecipe:
        return replace(self, **{k: v for k, v in given.items() if v is not None})


_TYPES = {"method": str, "stages": list, "steps": int, "batch": int, "seq_len": int, "lr": (int, float),
          "warmup_steps": int, "weight_decay": (int, float), "grad_clip": (int, float), "fatrelu": (int, float),
          "save_every": int, "eval_windows": int, "seed": int, "data": str, "distill": (int, float),
          "relu_anneal": (int, float)}


def from_dict(data: dict, source: str) -> FinetuneRecipe:
    """A fine-tune recipe from its fields (as a TOML file gives them); source names the file in errors."""
    unknown = sorted(set(data) - {f.name for f in fields(FinetuneRecipe)})
    if unknown:
        raise UserError(f"{source}: unknown field '{unknown[0]}' for a fine-tune recipe")
    data = dict(data)
    for name, value in data.items():
        if not isinstance(value, _TYPES[name]) or isinstance(value, bool):
            raise UserError(f"{source}: field '{name}' = {value!r} has the wrong type")
    if "stages" in data:
        try:
            data["stages"] = tuple((float(lam), float(end)) for lam, end in data["stages"])
        except (TypeError, ValueError):
            raise UserError(f"{source}: stages must be [lambda, end fraction] pairs") from None
    return FinetuneRecipe(**data)
