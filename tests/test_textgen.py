"""Behaviour tests for character language models (task textgen), on small texts the tests write."""
from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import assert_ctrl_c_resume_is_exact
from conftest import TIME_FIELDS
from deepskeptic.cli import main
from deepskeptic.data.text import UNK, Vocab, hash_side, load_corpus
from deepskeptic.errors import UserError
from deepskeptic.models.text import CharLM, CharLMConfig
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.textgen.baselines import NGramLM, conditional_bpc
from deepskeptic.tasks.textgen.data import Prepared
from deepskeptic.tasks.textgen.jobs import TextGenJob
from deepskeptic.tasks.textgen.lm import sample, stream_bpc

TINY = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--no-progress"]
TIME_KEYS = TIME_FIELDS | {"chars_per_second"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds waiting


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran far away from home".split()
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(150)) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    assert main(["train", "textgen", "--data", str(corpus), "--model", "lstm", "--epochs", "2", "--lr", "0.01",
                 "--out", str(out), *TINY]) == 0
    return out


# ------------------------------------------------------------------ vocabulary and data

def test_vocab_round_trip_and_unknown_symbol():
    v = Vocab.from_text("hello world", min_count=1)
    assert v.decode(v.encode("hello world")) == "hello world"
    assert v.decode(v.encode("hex!")) == "he" + UNK + UNK          # unseen characters -> unknown
    assert int(v.encode("z")[0]) == v.unk == 0
    again = Vocab.from_json(json.loads(json.dumps(v.to_json())))
    assert again.itos == v.itos and torch.equal(again.encode("low"), v.encode("low"))
    rare = Vocab.from_text("aaab", min_count=2)                      # 'b' is seen once: unknown
    assert rare.decode(rare.encode("ab")) == "a" + UNK
    pad = Vocab.from_text("ab", pad=True)
    assert pad.unk == 1 and pad.decode(pad.encode("abc")) == "ab" + UNK and set(pad.encode("ab").tolist()) == {2, 3}
    assert v.decode(v.encode("é€😀")) == UNK * 3                       # beyond ASCII, one id per character


def test_contiguous_split_and_hash_split(corpus):
    c = load_corpus(str(corpus), val_split=0.1, test_split=0.2)
    text = corpus.read_text()
    assert c.train + c.val + c.test == text and abs(len(c.test) - 0.2 * len(text)) <= 1
    assert hash_side("same text", 0.1, 0.1) == hash_side("same text", 0.1, 0.1)


# ------------------------------------------------------------------ truncated BPTT

def _job(text: str, batch: int = 3, seq_len: int = 5, hidden: int = 6):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    prepared = Prepared(None, vocab, ids, ids[:20], ids[:20])
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=len(vocab), embed=4, hidden=hidden, layers=1, dropout=0.0), "lstm")
    settings = {"compile": False, "weight_decay": 0.0, "lr": 1e-2, "seq_len": seq_len, "batch_size": batch,
                "clip": 1.0, "epoch_chars": 10 ** 9, "keep_best": True}
    return TextGenJob(model, prepared, settings, torch.device("cpu")), ids


def test_streams_are_contiguous_and_state_is_carried_and_detached(monkeypatch):
    from deepskeptic.engine import StepContext
    text = "".join(random.Random(1).choice("abcdef") for _ in range(200))
    job, ids = _job(text)
    length = (len(ids) - 1) // 3
    for b in range(3):                                              # stream b is a contiguous slice
        assert torch.equal(job.inputs[b], ids[b * length:(b + 1) * length])
        assert torch.equal(job.targets[b], ids[b * length + 1:(b + 1) * length + 1])
    seen = []
    forward = job.model.forward
    monkeypatch.setattr(job, "train_model", lambda x, state: (seen.append(state), forward(x, state))[1])
    ctx = StepContext(torch.device("cpu"), job.optimizers, amp=False)
    batches = job.epoch_batches(0, torch.Generator())
    assert batches == list(range(length // 5))
    after = []
    for window in batches[:3]:
        job.train_step(window, ctx)
        after.append(job.state)
        assert all(not s.requires_grad for s in job.state)            # detached: gradients stop here
    assert all(float(s.abs().sum()) == 0 for s in seen[0])           # a pass starts from zeros
    for step in (1, 2):                                              # each window starts where the last ended
        assert all(torch.equal(a, b) for a, b in zip(seen[step], after[step - 1]))
        assert all(float(s.abs().sum()) > 0 for s in seen[step])
    # the carried state is saved and restored for resume
    state = job.extra_state()
    job2, _ = _job(text)
    job2.load_extra_state(state)
    assert all(torch.equal(a, b) for a, b in zip(job2.state, job.state))
    job.train_step(0, ctx)                                           # window 0: a new pass, zero state
    assert all(float(s.abs().sum()) == 0 for s in seen[-1])


# ------------------------------------------------------------------ bits per character

def test_bpc_of_uniform_random_text_tends_to_log2_k():
    rng = np.random.default_rng(0)
    k = 4
    train, test = rng.integers(1, k + 1, 40_000), rng.integers(1, k + 1, 5_000)
    ngram = NGramLM(k + 1, max_order=3).fit(train)
    by_order = ngram.bpc_by_order(test)
    assert abs(by_order[1] - math.log2(k)) < 0.01 and by_order[3] >= math.log2(k) - 0.01
    # a network that knows nothing predicts uniformly over its vocabulary: exactly log2(V)
    model = CharLM(CharLMConfig(vocab_size=k + 1, embed=4, hidden=4), "lstm")
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    bpc, count = stream_bpc(model, torch.from_numpy(test), torch.device("cpu"))
    assert count == len(test) - 1 and bpc == pytest.approx(math.log2(k + 1), abs=1e-5)
    # compressors cannot beat the entropy either
    chars = "".join("abcd"[i - 1] for i in train[:20_000]), "".join("abcd"[i - 1] for i in test[:3000])
    assert conditional_bpc("lzma", *chars, level=6) > math.log2(k) - 0.05


def test_ngram_kneser_ney_and_witten_bell_match_hand_computed_probabilities():
    a, b = 1, 2                                                      # vocabulary: unknown, a, b
    kn = NGramLM(3, max_order=2).fit(np.array([a, a, b]))
    p = kn.probabilities(np.array([a, b]))
    # order 1 (raw counts a:2 b:1, D = n1/(n1+2 n2) = 1/3): P(a) = (2-1/3)/3 + (1/3)(2/3)(1/3) = 17/27
    assert p[0, 0] == pytest.approx(float(Fraction(17, 27))) and p[0, 1] == pytest.approx(float(Fraction(8, 27)))
    # order 2: continuation unigrams a:1 b:1 (D = 0.5) give P1(b) = 0.25 + 1/6 = 5/12;
    # bigrams aa:1 ab:1 (D = 0.5): P(b|a) = 0.5/2 + 0.5 * 2/2 * 5/12 = 11/24
    assert p[1, 0] == pytest.approx(float(Fraction(17, 27))) and p[1, 1] == pytest.approx(float(Fraction(11, 24)))
    unseen_history = kn.probabilities(np.array([b, a]))[1, 1]        # 'b' was never followed: back off
    assert unseen_history == pytest.approx(5 / 12)
    wb = NGramLM(3, max_order=2, smoothing="witten-bell").fit(np.array([a, a, b]))
    # P1(b) = (1 + 2/3)/(3 + 2) = 1/3; P(b|a) = (1 + 2 * 1/3)/(2 + 2) = 5/12
    assert wb.probabilities(np.array([a, b]))[1, 1] == pytest.approx(5 / 12)
    # every history's distribution sums to one, at every order
    rng = np.random.default_rng(1)
    big = NGramLM(6, max_order=4).fit(rng.integers(0, 6, 3000))
    for history in ([1, 2, 3], [5, 5, 5], [0, 1, 0]):
        total = sum(big.probabilities(np.array(history + [w]))[:, -1] for w in range(6))
        assert np.allclose(total, 1.0)


# ------------------------------------------------------------------ the command line

def test_train_generate_evaluate_explain(trained, corpus, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 < metrics["test_bpc"] < 4.5 and metrics["params"] > 0
    assert {"val_bpc", "flops_per_example", "train_seconds", "chars_per_second"} <= set(metrics)
    history_bpc = [json.loads(x)["val_bpc"] for x in (trained / "history.jsonl").read_text().splitlines()]
    assert metrics["best_epoch"] == 1 + history_bpc.index(min(history_bpc))   # the weights kept and tested
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert all("train_bpc" in h and "val_bpc" in h for h in history)
    capsys.readouterr()
    args = ["generate", str(trained), "--prime", "the ", "--length", "40", "--seed", "3", "--n", "2", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first                 # reproducible with a seed
    assert len(first["samples"]) == 2 and all(s.startswith("the ") and len(s) == 44 for s in first["samples"])
    predictor = get_task("textgen").predictor(Run(trained))             # the same through the Python API
    assert predictor.generate("the ", length=40, temperature=0.8, top_k=0, n=2, seed=3) == first["samples"]
    assert main(args[:-1] + ["--seed", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] != first["samples"]
    assert main(["generate", str(trained), "--length", "30", "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out) >= 30
    assert main(["evaluate", str(trained)]) == 0
    assert json.loads(capsys.readouterr().out)["test_bpc"] == pytest.approx(metrics["test_bpc"], rel=1e-4)
    assert main(["explain", str(trained), "--text", "the cat sat", "--cells", "0,3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split("\t")[:4] == ["pos", "char", "hidden_0", "forget_0"] and len(table) == 12
    assert list((trained / "explain").glob("gates-*.png"))
    assert "gates-" in (trained / "report.html").read_text()
    assert main(["explain", str(trained), "--text", "x", "--cells", "99"]) == 2


def test_compare_lists_and_runs_the_baselines(corpus, tmp_path, capsys):
    assert main(["models", "textgen"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("lstm", "rnn", "ngram", "zlib", "bz2", "lzma"))
    out = tmp_path / "cmp"
    assert main(["compare", "textgen", "--data", str(corpus), "--models", "rnn,ngram,zlib,lzma", "--seeds", "1",
                 "--epochs", "1", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "test_bpc" and summary["higher_is_better"] is False
    assert summary["models"]["ngram"]["test_bpc_mean"] < summary["models"]["zlib"]["test_bpc_mean"]
    assert json.loads((out / "ngram-seed0" / "metrics.json").read_text())["ngram_order"] >= 2
    assert "temperature 0.8" in (out / "report.html").read_text()


def test_resume_after_interrupt_equals_uninterrupted(corpus, tmp_path, monkeypatch):
    args = ["train", "textgen", "--data", str(corpus), "--model", "lstm", "--epochs", "2", *TINY]
    # Ctrl-C in the middle of epoch 2
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args, TextGenJob, at_step=100, time_keys=TIME_KEYS)


@pytest.mark.parametrize("content, message, extra", [
    (b"", "empty", []),
    (b"a short text. " * 4, "shorter than one sequence", ["--seq-len", "64"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 40, "binary", []),
    ("caf\u00e9 ".encode("latin-1") * 200, "byte offset 3", []),
])
def test_bad_texts_are_one_line_errors(tmp_path, capsys, content, message, extra):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    assert main(["train", "textgen", "--data", str(path), "--model", "lstm", "--epochs", "1",
                 "--out", str(tmp_path / "run"), *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error:")


def test_encoding_flag_reads_other_encodings(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("caf\u00e9 au lait ".encode("latin-1") * 100)
    with pytest.raises(UserError, match="--encoding"):
        load_corpus(str(path))
    c = load_corpus(str(path), encoding="latin-1")
    assert "café" in c.train
    with pytest.raises(UserError, match="unknown --encoding"):
        load_corpus(str(path), encoding="no-such-codec")
    assert main(["train", "textgen", "--data", "fortunez", "--model", "lstm"]) == 2


def test_sampling_never_emits_unknown_and_respects_top_k():
    vocab = Vocab.from_text("abc")
    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=len(vocab), embed=4, hidden=8), "lstm")
    with torch.no_grad():
        model.head.bias[vocab.unk] = 50.0                            # the unknown symbol is the most likely
    text = sample(model, vocab, "ab", 200, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert UNK not in text and len(text) == 200
    greedy = sample(model, vocab, "ab", 20, temperature=0)
    top1 = sample(model, vocab, "ab", 20, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(5))
    assert greedy == top1
