"""Calibration text: read it, hash it, and cut it into token windows."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError
from ggufsparse.paths import shared_data_dir


def default_calibration_file() -> Path:
    return shared_data_dir() / "c4" / "c4_sample.jsonl"


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def iter_documents(path: Path) -> Iterator[str]:
    """Documents of a .txt file (the whole file) or a .jsonl file (its "text" fields)."""
    name = path.name.removesuffix(".gz")
    try:
        with _open(path) as f:
            if name.endswith(".jsonl"):
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (ValueError, KeyError, TypeError):
                        raise UserError(f"{path}:{n}: not a JSON object with a \"text\" field") from None
                    if text:
                        yield text
            else:
                text = f.read()
                if text.strip():
                    yield text
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class CalibrationSet:
    windows: np.ndarray  # (n_windows, seq_len) token ids, each window starting with BOS
    sha256: str  # of the file's bytes
    source: str  # file name

    @property
    def n_tokens(self) -> int:
        return int(self.windows.size)


def load(path: Path, tokenize: Callable[[str], list[int]], bos: int | None, n_tokens: int,
         seq_len: int) -> CalibrationSet:
    """The first n_tokens // seq_len windows of the documents' token stream (joined by blank lines).

    Deterministic: the same file and sizes give the same windows.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: calibration file not found")
    if seq_len < 2:
        raise UserError(f"--calib-seq-len must be at least 2, got {seq_len}")
    if n_tokens < seq_len:
        raise UserError(f"--calib-tokens ({n_tokens}) must be at least one sequence (--calib-seq-len {seq_len})")
    n_windows = n_tokens // seq_len
    body = seq_len - (1 if bos is not None else 0)
    need = n_windows * body
    stream: list[int] = []
    any_text = False
    for doc in iter_documents(path):
        any_text = True
        stream.extend(tokenize(doc + "\n\n"))
        if len(stream) >= need:
            break
    if not any_text:
        raise UserError(f"{path}: calibration file has no text")
    if len(stream) < body:
        raise UserError(f"{path}: calibration text is {len(stream)} tokens, shorter than one sequence "
                        f"of {seq_len}; use more text or a smaller --calib-seq-len")
    n_windows = min(n_windows, len(stream) // body)
    rows = np.asarray(stream[: n_windows * body], dtype=np.int64).reshape(n_windows, body)
    if bos is not None:
        rows = np.concatenate([np.full((n_windows, 1), bos, dtype=np.int64), rows], axis=1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return CalibrationSet(rows, digest, path.name)
