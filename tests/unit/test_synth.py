"""`ggufsparse synth` with llama-quantize's file types, against a stand-in llama-quantize: the
type names, the command, the temporary files and the one-line failure (no runtime needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import pytest
from ggufsparse.cli import main
from ggufsparse.errors import UserError
from ggufsparse.models import synth
from tiny_vocab import tiny_vocab

# copies its input to its output as llama-quantize would write a quantized file; records its argv
FAKE = """#!{python}
import json, shutil, sys
json.dump(sys.argv[1:], open({record!r}, "w"))
print("[   1/   2] token_embd.weight - converting to q4_K .. size = 1 MiB", flush=True)
if {fail!r}:
    print("llama_model_quantize: failed to quantize: no space left on device", file=sys.stderr)
    print("main: failed to quantize model from 'x'", file=sys.stderr)
    sys.exit(1)
shutil.copyfile(sys.argv[1], sys.argv[2])
print("llama_quantize: total time = 1 ms")
"""


@pytest.fixture
def vocab(tmp_path) -> Path:
    return tiny_vocab(tmp_path / "vocab.gguf")


def fake_quantize(monkeypatch, folder: Path, fail: bool = False) -> Path:
    """Put a stand-in llama-quantize where the runtime locator looks; returns the file its argv goes to."""
    record = folder / "argv.json"
    script = folder / "llama-quantize"
    script.write_text(FAKE.format(python=sys.executable, record=str(record), fail=fail))
    script.chmod(0o755)
    monkeypatch.setattr("ggufsparse.runtime.locate.tool", lambda name: script if name == "llama-quantize" else None)
    return record


@pytest.mark.parametrize(("name", "ftype"), [("q4_k_m", "Q4_K_M"), ("Q4_K_S", "Q4_K_S"), ("q5_k_m", "Q5_K_M"),
                                             ("q5_k_s", "Q5_K_S"), ("q6_k_mix", "Q6_K"), ("q2_k_mix", "Q2_K"),
                                             ("q3_k_l", "Q3_K_L")])
def test_file_types_name_llama_quantizes_own(name, ftype):
    assert synth.mix_of(name) == ftype


@pytest.mark.parametrize("name", ["q4_0", "q4_k", "q6_k", "q2_k", "f16", "q8_0", "q2_k_s", "iq2_xs"])
def test_ggml_types_and_imatrix_mixes_are_no_file_types(name):
    assert synth.mix_of(name) is None


def test_quantize_command_passes_threads_only_when_given(tmp_path):
    q, a, b = tmp_path / "llama-quantize", tmp_path / "a.gguf", tmp_path / "b.gguf"
    assert synth.quantize_command(q, a, b, "Q4_K_M") == [str(q), str(a), str(b), "Q4_K_M"]
    assert synth.quantize_command(q, a, b, "Q6_K", 3) == [str(q), str(a), str(b), "Q6_K", "3"]


def test_failure_line_is_the_reason_llama_quantize_gives():
    out = ["main: build = 1\n", "llama_model_quantize: failed to quantize: tensor 'x' has invalid data\n",
           "main: failed to quantize model from 'f16.gguf'\n", "\n"]
    assert synth.failure_line(out, 1) == "tensor 'x' has invalid data"
    assert synth.failure_line(["loading\n", "error: unknown type\n", "usage: ...\n"], 1) == "error: unknown type"
    assert synth.failure_line(["loading\n", "last words\n", "  \n"], 1) == "last words"
    assert synth.failure_line([], -9) == "exit code -9"


def test_a_file_type_is_written_in_f16_and_quantized_into_place(tmp_path, vocab, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    record = fake_quantize(monkeypatch, tmp_path)
    out = work / "model.gguf"
    synth.write_synthetic(out, "smollm2-135m", "q4_k_m", 1, tokenizer_from=vocab, threads=2)
    argv = json.loads(record.read_text())
    src, dst = Path(argv[0]), Path(argv[1])
    assert argv[2:] == ["Q4_K_M", "2"]
    assert src.parent == dst.parent == work and src != dst != out  # temporary files beside the output
    assert sorted(p.name for p in work.iterdir()) == ["model.gguf"]  # the F16 file removed, the output renamed
    r = gguf.GGUFReader(out)
    assert {t.tensor_type.name for t in r.tensors if t.name.endswith("ffn_down.weight")} == {"F16"}
    assert "q4_k_m" in bytes(r.fields["general.name"].parts[-1]).decode()
    assert "converting to q4_K" in capsys.readouterr().err  # llama-quantize's progress passed through


def test_quiet_keeps_llama_quantizes_output(tmp_path, vocab, monkeypatch, capsys):
    fake_quantize(monkeypatch, tmp_path)
    synth.write_synthetic(tmp_path / "m.gguf", "smollm2-135m", "q5_k_s", 1, tokenizer_from=vocab, progress=False)
    assert capsys.readouterr().err == ""


def test_a_llama_quantize_failure_is_one_line_and_leaves_nothing(tmp_path, vocab, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    fake_quantize(monkeypatch, tmp_path, fail=True)
    with pytest.raises(UserError, match=r"^llama-quantize to Q6_K failed: no space left on device$"):
        synth.write_synthetic(work / "m.gguf", "smollm2-135m", "q6_k_mix", 1, tokenizer_from=vocab, progress=False)
    assert list(work.iterdir()) == []


def test_cli_failure_exits_2_with_one_line(tmp_path, vocab, monkeypatch, capsys):
    fake_quantize(monkeypatch, tmp_path, fail=True)
    out = tmp_path / "m.gguf"
    rc = main(["synth", "--shape", "smollm2-135m", "--layers", "1", "--type", "q4_k_m", "--tokenizer-from",
               str(vocab), "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err == "ggufsparse: error: llama-quantize to Q4_K_M failed: no space left on device\n"


def test_a_k_type_that_does_not_divide_the_rows_is_refused_and_names_the_file_types(tmp_path, vocab):
    with pytest.raises(UserError, match="256 does not divide the rows of smollm2-135m.*q4_k_m"):
        synth.write_synthetic(tmp_path / "m.gguf", "smollm2-135m", "q4_k", 1, tokenizer_from=vocab)
    with pytest.raises(UserError, match="not a ggml type.*q4_k_m"):
        synth.write_synthetic(tmp_path / "m.gguf", "smollm2-135m", "q4_k_x", 1, tokenizer_from=vocab)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.gguf"]


def test_a_missing_llama_quantize_is_a_user_error(tmp_path, vocab, monkeypatch):
    missing = tmp_path / "no-such-llama-quantize"
    monkeypatch.setattr("ggufsparse.runtime.locate.tool", lambda name: missing)
    with pytest.raises(UserError, match="cannot run"):
        synth.write_synthetic(tmp_path / "m.gguf", "smollm2-135m", "q4_k_m", 1, tokenizer_from=vocab, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.gguf"]
