"""`ggufsparse eval` through the patched runtime: perplexity against llama-perplexity, KL of a
model against itself, task scoring against decoding each option whole, and bad input."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ggufsparse.eval import mc_score, mc_tasks
from ggufsparse.paths import shared_data_dir
from ggufsparse.runtime.session import Piece, Session, log_softmax

pytestmark = [pytest.mark.runtime, pytest.mark.model]

WIKI = shared_data_dir() / "wikitext2" / "wiki.test.raw"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ggufsparse", *args], capture_output=True, text=True, check=False)


def eval_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval.json"
    proc = run("eval", *args, "-t", "2", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def llama_perplexity(runtime, model: Path, ctx: int, chunks: int, *extra: str) -> float:
    proc = subprocess.run([str(Path(runtime.bin_dir) / "llama-perplexity"), "-m", str(model), "-f", str(WIKI),
                           "-c", str(ctx), "--chunks", str(chunks), "-t", "2", *extra],
                          capture_output=True, text=True, check=True)
    return float(re.search(r"Final estimate: PPL = ([0-9.]+)", proc.stdout + proc.stderr).group(1))


def test_perplexity_agrees_with_llama_perplexity(runtime, default_model, tmp_path):
    for flags in ([], ["-fa", "off"]):  # llama.cpp's default (flash attention on for CPU), exact attention
        ours = eval_json(tmp_path, str(default_model), "--ctx", "256", "--chunks", "6", *flags)["perplexity"]
        assert ours["windows"] == 6 and ours["tokens_scored"] == 6 * (256 - 1 - 128)
        theirs = llama_perplexity(runtime, default_model, 256, 6, *flags)
        assert abs(ours["ppl"] / theirs - 1) < 1e-4, flags  # the same computation: 4-5 digits agree


def test_a_model_against_itself_has_zero_kl_and_full_agreement(default_model, tmp_path):
    p = eval_json(tmp_path, str(default_model), "--ref", str(default_model), "--ctx", "128", "--chunks", "3")
    p = p["perplexity"]
    assert p["kl_mean"] == 0.0 and p["kl_p99"] == 0.0 and p["top1_agreement"] == 1.0
    assert p["ref_ppl"] == p["ppl"]


@pytest.fixture(scope="module")
def session(default_model):
    with Session(default_model, n_threads=2, flash_attn="off") as s:
        yield s


def whole_sequence_loglik(session: Session, context: str, continuation: str) -> float:
    """The reference: context and continuation decoded as one piece, summed log-probabilities
    (exact attention: flash attention's f16 rounding depends on the cache's layout)."""
    ctx, cont = mc_score.encode_pair(session, context, continuation)
    tokens = ctx + cont
    session.open_context(len(tokens))
    lp = log_softmax(session.decode([Piece(tokens[:-1], 0, [0], [True] * (len(tokens) - 1))]))
    return float(sum(lp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


@pytest.mark.parametrize("task", ["piqa", "winogrande"])
def test_task_scores_are_the_whole_sequence_log_likelihoods(session, task):
    examples = mc_tasks.read_task(shared_data_dir() / "tasks" / f"{task}.jsonl", limit=6)
    got = mc_score.loglikelihoods(session, examples, progress=False)
    for ex, ll in zip(examples, got):
        for i in range(ex.n_options):
            context = ex.contexts[i] if ex.per_context else ex.contexts[0]
            choice = ex.choices[0] if ex.per_context else ex.choices[i]
            assert ll[i] == pytest.approx(whole_sequence_loglik(session, context, choice), abs=1e-6)


def test_trailing_spaces_of_the_context_move_to_the_continuation(session):
    ctx, cont = mc_score.encode_pair(session, "Question: is water wet?\nAnswer: ", "yes")
    assert ctx == session.tokenize("Question: is water wet?\nAnswer:", add_special=True)
    assert ctx + cont == session.tokenize("Question: is water wet?\nAnswer: yes", add_special=True)


def test_metrics_follow_lm_eval():
    examples = [mc_tasks.Example("a", ["q"], [" x", " longer choice"], 1),
                mc_tasks.Example("b", ["q"], [" x", " longer choice"], 0),
                mc_tasks.Example("c", ["c1", "c2"], [" end"], 1)]
    # a: raw argmax 0 (wrong), per character 1 (right); b: both 0 (right); c: argmax 1 (right)
    loglik = [np.array([-2.0, -3.0]), np.array([-1.0, -30.0]), np.array([-5.0, -4.0])]
    m = mc_tasks.metrics(examples, loglik)
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["acc_stderr"] == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 2))
    assert "acc_norm" not in m  # one example scores per context: lm-eval reports acc only


def test_a_small_model_beats_chance_on_piqa(default_model, tmp_path):
    r = eval_json(tmp_path, str(default_model), "--no-ppl", "--tasks", "piqa", "--limit", "120")
    t = r["tasks"]["piqa"]
    assert t["examples"] == 120
    assert t["acc"] > 0.57 and t["acc_norm"] > 0.57  # chance 0.5; SmolLM2-135M is near 0.67
    assert r["sparsity"] is None


def bad(args: list[str], expected: str):
    proc = run("eval", *args, "-q")
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_input_gives_one_line_errors(default_model, tmp_path):
    ok = '{"id": "x", "contexts": ["Q:"], "choices": [" a", " b"], "gold": 0}'
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(ok + "\n" + ok + "\n" + '{"contexts": ["Q:"], "choices": [" a"' + "\n")
    bad([str(default_model), "--no-ppl", "--tasks", str(malformed)], "malformed.jsonl:3: not valid JSON")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(ok + "\n" + ok.replace('"gold": 0', '"gold": 2') + "\n")
    bad([str(default_model), "--no-ppl", "--tasks", str(gold)], "gold.jsonl:2: gold index 2 out of range")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    bad([str(default_model), "--ppl", str(empty)], "empty.txt: the text file is empty")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("hello")
    bad([str(not_gguf), "--chunks", "1"], "model.gguf: not a GGUF file")
    bad([str(default_model), "--no-ppl", "--tasks", str(tmp_path / "none.jsonl")], "no such task file")


def test_sweep_rejects_bad_lists():
    proc = run("sweep", "default", "-o", "/tmp/unused-sweep", "--sparsity", "0.3,1.5")
    assert proc.returncode == 2 and "--sparsity" in proc.stderr
    proc = run("sweep", "default", "-o", "/tmp/unused-sweep", "--method", "chess,nope")
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_perplexity_text_from_chosen_jsonl_documents(tmp_path):
    from ggufsparse.errors import UserError
    from ggufsparse.eval.perplexity import read_text

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(5)))
    assert read_text(docs) == "\n\n".join(f"document {i}" for i in range(5))
    assert read_text(docs, slice(3, None)) == "document 3\n\ndocument 4"
    with pytest.raises(UserError, match="no text in documents 7"):
        read_text(docs, slice(7, None))
    with pytest.raises(UserError, match="needs a .jsonl"):
        read_text(WIKI, slice(0, 2))


def test_parameter_sparsity_counts_down_once_where_a_layer_has_channels_and_a_cut(default_model):
    """--down-sparsity: the cut's fraction already counts the gate's zeros at down's input."""
    from ggufsparse.format.param_sparsity import parameter_sparsity

    n = 30  # SmolLM2's layers
    channels = parameter_sparsity(default_model, {"ffn": {"layers": [0.4] * n}})
    both = parameter_sparsity(default_model, {"ffn": {"layers": [0.4] * n}, "ffn_down_in": {"layers": [0.6] * n}})
    # channels alone: 0.4 of up and of down; with the cut: 0.4 of up and 0.6 of down
    assert both == pytest.approx(channels * (0.4 + 0.6) / (2 * 0.4))
    # a layer without the cut keeps counting its channels for up and down
    mixed = parameter_sparsity(default_model, {"ffn": {"layers": [0.4] * n},
                                               "ffn_down_in": {"layers": [0.6] + [None] * (n - 1)}})
    assert mixed == pytest.approx(channels + (channels / n) * (0.6 - 0.4) / (2 * 0.4))
