"""`kill -9` of convert, finetune and predictor: at a random moment (a seeded delay), between
checkpoints and while a checkpoint or the output is being written. After each kill there is no
output file (only hidden temporaries, which the next run removes) and the last checkpoint loads;
the run started again with the same arguments ends with a file bit-identical to an uninterrupted
run's. The model is a 2-layer synthetic one with a byte-level vocabulary: a run takes seconds."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from ggufsparse.format.gguf_io import remove_leftovers, replacing, write_atomic
from tiny_vocab import byte_vocab

TIMEOUT = 180  # seconds, for any one run; a run here takes about 5 on two cores
# one torch thread a run: on a busy machine two threads spin against each other at twice the time;
# every run of a comparison has the same setting
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CONVERT = ["--sparsity", "0.5", "--calib-tokens", "2048", "--calib-seq-len", "256", "-q"]
FINETUNE = ["--steps", "6", "--batch", "1", "--seq-len", "32", "--eval-windows", "1", "--save-every", "1", "-q",
            "--json"]
PREDICTOR = ["--rank", "32", "--epochs", "2", "--calib-tokens", "2048", "-q"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ggufsparse", *map(str, args)]


def _run(*args, log: Path) -> tuple[str, float]:
    """Run to the end: (stdout, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=TIMEOUT, check=False, env=ENV)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, time.monotonic() - t0


def _start(*args, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(_cli(*args), stdout=f, stderr=subprocess.STDOUT, env=ENV)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL proc as soon as ready() holds (polled every half millisecond)."""
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, f"the run ended by itself at {what}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL proc after `seconds`; False if it ended by itself first (then it must have succeeded)."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=30)
    assert rc in (0, -signal.SIGKILL), f"exit {rc}"
    return rc != 0


def _temps(folder: Path, name: str) -> list[Path]:
    """The hidden temporary files (with bytes in them) that a write of folder/name goes through."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")
    found = []
    for e in os.scandir(folder):
        try:
            if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False) and e.stat().st_size > 0:
                found.append(Path(e.path))
        except FileNotFoundError:  # renamed meanwhile
            pass
    return found


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _random_moment(name: str, seconds: float) -> float:
    """A delay drawn with a fixed seed, within the time an uninterrupted run took."""
    return random.Random(f"interrupt {name}").uniform(0.2, 0.9) * seconds


def _kill_while_writing(args: list, out: Path, log: Path, attempts: int = 3) -> int:
    """Kill a run while it writes out (its temporary file beside out holds bytes and is not yet
    renamed); returns the runs it took. A write takes tens of milliseconds: should the rename win
    the race, the whole file is there; it is removed and the run made again."""
    for attempt in range(1, attempts + 1):
        proc = _start(*args, log=log)
        _kill_when(proc, lambda: bool(_temps(out.parent, out.name)), f"a temporary file for {out.name}")
        if _temps(out.parent, out.name):
            assert not out.exists()
            return attempt
        assert out.is_file()
        out.unlink()
    pytest.fail(f"{attempts} runs renamed {out.name} into place before the kill landed")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("interrupt-model")
    vocab = byte_vocab(folder / "vocab.gguf")
    out = folder / "synth.gguf"
    _run("synth", "--shape", "smollm2-135m", "--type", "q8_0", "--layers", "2", "--tokenizer-from", vocab,
         "-o", out, "-q", log=folder / "synth.log")
    return out


@pytest.fixture(scope="module")
def converted(model, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted conversion (the reference, and the predictor's input) and its seconds."""
    folder = tmp_path_factory.mktemp("interrupt-converted")
    out = folder / "chess.gguf"
    _, seconds = _run("convert", model, "-o", out, *CONVERT, log=folder / "convert.log")
    return out, seconds


def test_a_killed_writers_temporaries_are_removed_and_a_live_writers_kept(tmp_path):
    out = tmp_path / "out.bin"
    write_atomic(out, b"old")
    # a writer that stops half way: in a temporary file and a scratch folder, both beside out
    code = ("import sys, time\nfrom pathlib import Path\n"
            "from ggufsparse.format.gguf_io import replacing, scratch_beside\n"
            "with scratch_beside(Path(sys.argv[1])) as s, replacing(Path(sys.argv[1])) as t:\n"
            "    (s / 'part').write_bytes(b'x' * 100)\n    t.write_bytes(b'new, half')\n"
            "    print('writing', flush=True)\n    time.sleep(600)\n")
    writers = []
    try:
        for _ in range(2):
            writers.append(subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True))
            assert writers[-1].stdout.readline() == "writing\n"
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(timeout=30)
        assert len(_hidden(tmp_path)) == 4 and out.read_bytes() == b"old"
        removed = remove_leftovers(out)
        assert len(removed) == 2  # the killed writer's file and folder; the live one's are locked
        assert len(_hidden(tmp_path)) == 2 and not set(removed) & set(tmp_path.iterdir())
    finally:
        for w in writers:
            w.kill()
            w.wait(timeout=30)
    assert len(remove_leftovers(out)) == 2 and _hidden(tmp_path) == [] and out.read_bytes() == b"old"
    with pytest.raises(KeyboardInterrupt), replacing(out) as tmp:  # an error inside: nothing left, out as it was
        tmp.write_bytes(b"new, half")
        raise KeyboardInterrupt
    assert _hidden(tmp_path) == [] and out.read_bytes() == b"old"


@pytest.mark.runtime  # the tokenizer is the runtime's
def test_convert_killed_at_any_moment_leaves_no_output_and_a_rerun_writes_the_same_file(
        model, converted, tmp_path):
    reference, seconds = converted
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "chess.gguf"
    args = ["convert", model, "-o", out, *CONVERT]
    # a random moment
    delay = _random_moment("convert", seconds)
    if _kill_after(_start(*args, log=tmp_path / "random.log"), delay):
        assert not out.exists() and _visible(folder) == set(), f"killed after {delay:.2f} s"
    else:  # it ended before the kill: whole
        assert _sha(out) == _sha(reference)
        out.unlink()
    # while the output is being written
    _kill_while_writing(args, out, tmp_path / "writing.log")
    assert _visible(folder) == set() and _hidden(folder)  # its temporary file and scratch folder
    # the same command again: the same bytes as the uninterrupted run, nothing left beside them
    _run(*args, log=tmp_path / "rerun.log")
    assert _sha(out) == _sha(reference)
    assert _hidden(folder) == [] and _visible(folder) == {"chess.gguf"}


@pytest.mark.runtime
def test_finetune_killed_between_and_during_checkpoints_resumes_to_the_same_file(model, tmp_path):
    ref_folder, folder = tmp_path / "ref", tmp_path / "out"
    ref_folder.mkdir(), folder.mkdir()
    ref_out = ref_folder / "p.gguf"
    _, seconds = _run("finetune", model, "-o", ref_out, *FINETUNE, log=tmp_path / "ref.log")
    out, ckpt = folder / "p.gguf", folder / "p.gguf.ckpt"
    history = folder / "p.gguf.history.json"
    args = ["finetune", model, "-o", out, *FINETUNE]

    def step() -> int:
        state = torch.load(ckpt, weights_only=False, map_location="cpu")
        return state["step"]

    # between checkpoints: as soon as the first one is in place
    _kill_when(_start(*args, log=tmp_path / "first.log"), ckpt.exists, "the first checkpoint")
    assert not out.exists() and _visible(folder) == {"p.gguf.ckpt"}
    first = step()
    assert 1 <= first < 6
    # while the next one is being written: the previous one stays whole
    _kill_when(_start(*args, log=tmp_path / "during.log"), lambda: bool(_temps(folder, ckpt.name)),
               "a temporary checkpoint file")
    assert _temps(folder, ckpt.name), "killed after the checkpoint was renamed into place"
    assert not out.exists() and _visible(folder) == {"p.gguf.ckpt"}
    assert first <= step() < 6  # the last whole one (the one before the write, unless a write was missed)
    # a random moment
    delay = _random_moment("finetune", seconds)
    if not _kill_after(_start(*args, log=tmp_path / "random.log"), delay):
        assert _sha(out) == _sha(ref_out)  # it ended first: whole; export it again below
        out.unlink()
    assert not out.exists(), f"killed after {delay:.2f} s"
    step()  # loads
    # while the GGUF is being written (resuming trains the rest first)
    _kill_while_writing(args, out, tmp_path / "export.log")
    assert step() == 6
    # the same command again: only exports, and the file is the uninterrupted run's
    stdout, _ = _run(*args, log=tmp_path / "rerun.log")
    assert json.loads(stdout)["resumed_from"] == 6
    assert _sha(out) == _sha(ref_out)
    assert history.read_text() == (ref_folder / "p.gguf.history.json").read_text()
    assert _hidden(folder) == [] and _visible(folder) == {"p.gguf", "p.gguf.ckpt", "p.gguf.history.json"}


@pytest.mark.runtime
def test_predictor_killed_after_a_layer_and_while_writing_resumes_to_the_same_file(converted, tmp_path):
    chess, _ = converted
    ref_folder, folder = tmp_path / "ref", tmp_path / "out"
    ref_folder.mkdir(), folder.mkdir()
    ref_out = ref_folder / "pred.gguf"
    _, seconds = _run("predictor", chess, "-o", ref_out, *PREDICTOR, log=tmp_path / "ref.log")
    assert _visible(ref_folder) == {"pred.gguf"}  # the checkpoint goes once the file is written
    out, ckpt = folder / "pred.gguf", folder / "pred.gguf.ckpt"
    args = ["predictor", chess, "-o", out, *PREDICTOR]
    layer0 = ckpt / "layer-000.npz"

    # after the first layer's checkpoint
    _kill_when(_start(*args, log=tmp_path / "first.log"), layer0.exists, "the first layer's checkpoint")
    assert not out.exists() and _visible(folder) == {"pred.gguf.ckpt"}
    with np.load(layer0) as z:
        assert z["pred_a"].shape == (32, 576) and 0 < float(z["recall"]) <= 1
    kept = layer0.stat().st_ino
    # other settings do not continue it
    other = subprocess.run(_cli(*args, "--epochs", "3"), capture_output=True, text=True, timeout=TIMEOUT,
                           check=False, env=ENV)
    assert other.returncode == 2 and "epochs = 2, now 3" in other.stderr and "Traceback" not in other.stderr
    # while the GGUF is being written: the rerun took layer 0 from the checkpoint, trained layer 1
    if _kill_while_writing(args, out, tmp_path / "writing.log") == 1:  # (a retry may start over)
        assert layer0.stat().st_ino == kept
    assert (ckpt / "layer-001.npz").is_file()
    assert _visible(folder) == {"pred.gguf.ckpt"}
    # a random moment
    delay = _random_moment("predictor", seconds)
    if not _kill_after(_start(*args, log=tmp_path / "random.log"), delay):
        assert _sha(out) == _sha(ref_out)  # it ended first: whole; train it again below
        out.unlink()
    assert not out.exists(), f"killed after {delay:.2f} s"
    # the same command again: the uninterrupted run's bytes, no checkpoint nor temporary left
    _run(*args, log=tmp_path / "rerun.log")
    assert _sha(out) == _sha(ref_out)
    assert _hidden(folder) == [] and _visible(folder) == {"pred.gguf"}
