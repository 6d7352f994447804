"""`ggufsparse finetune MODEL --method prosparse -o OUT.gguf`: load, train (resuming), export."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ggufsparse.errors import UserError
from ggufsparse.format import layout
from ggufsparse.format.gguf_io import ExtraKey, check_writable, remove_leftovers, write_atomic
from ggufsparse.methods.prosparse import data, export
from ggufsparse.methods.prosparse.recipe import FinetuneRecipe
from ggufsparse.methods.prosparse.train import TrainResult, evaluate, train, trainable
from ggufsparse.models.activation import Activation


@dataclass
class FinetuneResult:
    output: Path
    checkpoint: Path
    result: TrainResult
    activation: Activation
    seconds: float
    device: str
    # held-out fraction of act(gate) at or below the exported threshold (None before the last step)
    export_sparsity: float | None = None


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def finetune(source: Path, out: Path, recipe: FinetuneRecipe, *, checkpoint: Path | None = None,
             restart: bool = False, stop_after: int | None = None, force: bool = False,
             progress: bool = True, log=print, outtype: str = "auto") -> FinetuneResult:
    import torch

    from ggufsparse.calib.text import default_calibration_file
    from ggufsparse.models.tokenizer import gguf_tokenizer
    from ggufsparse.models.torch_model import GGUFTorchModel

    recipe.validate()
    export.output_type(0, outtype)  # a bad --outtype fails before any work
    check_writable(out, force)
    checkpoint = checkpoint or checkpoint_path(out)
    remove_leftovers(checkpoint)  # a killed run's half-written checkpoint; the last whole one stays
    t0 = time.time()
    tm = GGUFTorchModel(source, "float32")
    if tm.activation is not None:
        raise UserError(f"{source}: already has activation {tm.activation.kind}; fine-tune the original model")
    text_file = Path(recipe.data) if recipe.data else default_calibration_file()
    tokenize, bos = gguf_tokenizer(source)
    text = data.load(text_file, tokenize, bos, recipe.seq_len, recipe.steps * recipe.batch, recipe.eval_windows)
    log(f"training text {text.source}: {len(text.train)} windows of {recipe.seq_len} tokens "
        f"({len(text.held_out)} held out); {recipe.steps} steps of {recipe.batch}")
    tm.load_all()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tm.model.to(device)
    # the original model, copied before training swaps its activation
    teacher = copy.deepcopy(tm.model).eval() if recipe.distill > 0 else None
    result = train(tm.model, tm.layers, text.train, text.held_out, recipe, checkpoint, restart=restart,
                   stop_after=stop_after, progress=progress, log=log, teacher=teacher)
    act = Activation.with_threshold(recipe.fatrelu)
    if result.steps < recipe.steps:
        log(f"stopped at step {result.steps} of {recipe.steps}; run the same command again to continue")
        return FinetuneResult(out, checkpoint, result, act, time.time() - t0, device)
    import gguf

    V = gguf.GGUFValueType
    # the history counted at the threshold of the run that trained; the export may pick another
    _, _, export_sparsity, layer_sparsity = evaluate(tm.model, tm.layers, text.held_out, act.threshold)
    keys = export.activation_keys(act, "prosparse", layer_sparsity) + [
        ExtraKey(layout.Keys.RECIPE, recipe.to_json(), V.STRING),
        ExtraKey(layout.Keys.FINETUNE_STEPS, result.steps, V.UINT64),
        ExtraKey(layout.Keys.FINETUNE_TOKENS, result.tokens, V.UINT64),
        ExtraKey(layout.Keys.FINETUNE_FILE, text.source, V.STRING),
        ExtraKey(layout.Keys.FINETUNE_SHA256, text.sha256, V.STRING),
    ]
    names = {n for n, _ in trainable(tm.model)}
    # the GGUF last: its presence says the run is done (a run killed before it exports again)
    history = [{**asdict(h), "ppl": h.ppl} for h in result.history]
    write_atomic(out.with_name(out.name + ".history.json"), json.dumps(history, indent=1))
    export.write(tm, out, act, names, keys, force=force, progress=progress, outtype=outtype)
    return FinetuneResult(out, checkpoint, result, act, time.time() - t0, device, export_sparsity)
