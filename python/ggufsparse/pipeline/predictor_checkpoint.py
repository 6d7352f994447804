"""`ggufsparse predictor`'s checkpoint: a folder OUTPUT.ckpt with the settings it was made with and
one file per trained layer, each written whole or not at all, so a killed run resumes at the first
layer it had not finished. Each layer's predictor depends only on the settings, the input file and
that layer (its own seed), so a resumed run writes the same bytes as an uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.format.gguf_io import replacing, write_atomic
from ggufsparse.methods.predictor import LayerPredictor, PredictorRecipe

FORMAT = 1
_SETTINGS = "settings.json"


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def settings(model: Path, recipe: PredictorRecipe, calib_sha256: str) -> dict:
    """What a layer's predictor depends on: a checkpoint of other settings is refused."""
    h = hashlib.sha256()
    with open(model, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return {"format": FORMAT, **asdict(recipe), "model_sha256": h.hexdigest(), "calib_sha256": calib_sha256}


class Checkpoint:
    def __init__(self, folder: Path, made_with: dict):
        self.folder, self.made_with = Path(folder), made_with

    def _layer(self, i: int) -> Path:
        return self.folder / f"layer-{i:03d}.npz"

    def start(self, restart: bool) -> dict[int, LayerPredictor]:
        """The layers trained by an earlier run of the same settings (none with restart), and the
        folder ready for this run's."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder}: not a predictor checkpoint folder; move it or pass another -o")
        saved = self.folder / _SETTINGS
        if restart or (self.folder.is_dir() and not saved.is_file()):  # killed before its first write
            shutil.rmtree(self.folder, ignore_errors=True)
        if not self.folder.is_dir():
            self.folder.mkdir()
            write_atomic(saved, json.dumps(self.made_with, indent=1))
            return {}
        try:
            theirs = json.loads(saved.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{saved}: not readable ({exc}); delete {self.folder} or pass --restart") from None
        differ = sorted(k for k in set(self.made_with) | set(theirs) if theirs.get(k) != self.made_with.get(k))
        if differ:
            k = differ[0]
            raise UserError(f"{self.folder}: checkpoint made with other settings ({k} = {theirs.get(k)!r}, "
                            f"now {self.made_with.get(k)!r}); pass --restart to start over")
        done = {}
        for path in sorted(self.folder.glob("layer-*.npz")):
            try:
                with np.load(path) as z:
                    done[int(path.stem.split("-")[1])] = LayerPredictor(
                        z["pred_a"], z["pred_b"], z["pred_thr"], recall=float(z["recall"]),
                        predicted=float(z["predicted"]), active=float(z["active"]))
            except (OSError, ValueError, KeyError) as exc:
                raise UserError(f"{path}: not readable ({exc}); delete {self.folder} or pass --restart") from None
        return done

    def save(self, i: int, p: LayerPredictor) -> None:
        with replacing(self._layer(i)) as tmp, open(tmp, "wb") as f:
            np.savez(f, pred_a=p.pred_a, pred_b=p.pred_b, pred_thr=p.pred_thr, recall=np.float64(p.recall),
                     predicted=np.float64(p.predicted), active=np.float64(p.active))


def discard(folder: Path) -> None:
    """Once the output is written the checkpoint has served."""
    shutil.rmtree(folder, ignore_errors=True)
