"""Behaviour tests for text classification (task text), on small CSV files and folders the tests write."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from cli_helpers import assert_ctrl_c_resume_is_exact
from conftest import TIME_FIELDS
from deepskeptic.cli import main
from deepskeptic.data.text import fortunes_dir, hash_side, load_labelled
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks import get_task
from deepskeptic.tasks.text.jobs import TextJob

TOPICS = {"sport": "ball goal team match score player win league coach".split(),
          "food": "bread cheese apple soup cook taste salt dinner spoon".split(),
          "tech": "computer code bug server linux data chip network byte".split()}
FILLER = "the a of and to is in it very really".split()
FAST = ["--epochs", "3", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds waiting


def _docs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.choice(sorted(TOPICS))
        words = [rng.choice(TOPICS[label] if rng.random() < 0.5 else FILLER) for _ in range(rng.randint(4, 12))]
        out.append((" ".join(words) + f" {i}", label))
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "docs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "body", "topic"])
        for i, (text, label) in enumerate(_docs(300)):
            w.writerow([i, text, label])
    return path


@pytest.fixture(scope="module")
def tiny_lstm(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text("lr = 0.01\n[model]\nhidden = 16\nembed = 8\n")
    return path


def test_csv_train_predict_evaluate_and_compare(table, tiny_lstm, tmp_path, capsys):
    cols = ["--text-col", "body", "--label-col", "topic"]
    out = tmp_path / "cmp"
    assert main(["compare", "text", "--data", str(table), *cols, "--seeds", "1", "--out", str(out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"logreg", "mlp", "lstm"} and summary["metric"] == "test_accuracy"
    logreg = out / "logreg-seed0"
    metrics = json.loads((logreg / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8 and {"test_macro_f1", "confusion_matrix"} <= set(metrics)
    assert len(metrics["confusion_matrix"]) == 3 and (logreg / "features.json").is_file()
    capsys.readouterr()
    assert main(["predict", str(logreg), "the server has a bug in the code", "cheese soup", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [p["top"][0]["class"] for p in predictions] == ["tech", "food"]
    predictor = get_task("text").predictor(Run(logreg))       # the same on in-memory strings
    assert predictor.predict(["the server has a bug in the code", "cheese soup"]) == predictions
    assert main(["evaluate", str(logreg)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # the character LSTM, its prediction and its gates
    run = tmp_path / "lstm"
    assert main(["train", "text", "--data", str(table), *cols, "--model", "lstm", "--config", str(tiny_lstm),
                 "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "goal goal team"]) == 0
    assert capsys.readouterr().out.startswith("'goal goal team': ")
    assert main(["predict", str(run), "goal goal team", "cheese soup é", "--top-k", "2", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    predictor = get_task("text").predictor(Run(run))
    assert predictor.predict(["goal goal team", "cheese soup é"], top_k=2) == predictions
    (tmp_path / "doc.txt").write_text("cheese soup é")
    texts, names = predictor.read([str(tmp_path / "doc.txt")])          # text files, decoded
    assert texts == ["cheese soup é"] and predictor.predict(texts, names=names, top_k=2)[0] == {
        "name": str(tmp_path / "doc.txt"), **predictions[1]}
    assert main(["explain", str(run), "--text", "a goal"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7
    assert main(["explain", str(logreg), "--text", "a goal"]) == 2


def test_folder_per_class(tmp_path, tiny_lstm):
    root = tmp_path / "docs"
    for i, (text, label) in enumerate(_docs(120, seed=1)):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i}.txt").write_text(text)
    (root / "food" / "image.bin").write_bytes(b"\x00\x01binary")
    data = load_labelled(str(root))
    assert data.classes == ["food", "sport", "tech"] and data.skipped == 1
    assert sum(len(v) for v in data.texts.values()) == 120
    assert main(["train", "text", "--data", str(root), "--model", "mlp", "--out", str(tmp_path / "run"), *FAST]) == 0


def test_hash_split_keeps_duplicates_together(tmp_path):
    path = tmp_path / "dups.csv"
    rows = [(t, lab) for t, lab in _docs(200)] + [("the very same text", "food")] * 30
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    data = load_labelled(str(path))
    sides = {side for side in data.texts if "the very same text" in data.texts[side]}
    assert len(sides) == 1 and sides == {hash_side("the very same text", 0.1, 0.15)}
    assert data.texts == load_labelled(str(path)).texts             # the split never changes


@pytest.mark.skipif(fortunes_dir() is None, reason="Debian package fortunes not installed")
def test_fortunes_categories():
    data = load_labelled("fortunes-categories")
    assert len(data.classes) > 40 and {"art", "computers", "love", "science"} <= set(data.classes)
    n = sum(len(v) for v in data.texts.values())
    assert n > 10_000 and 0.1 < len(data.texts["test"]) / n < 0.2


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.parametrize("rows, flags, message", [
    ([["text", "label"]] + [[f"doc {i}", "only"] for i in range(20)], [], "single class"),
    ([["text", "label"], ["a", "b"]], ["--text-col", "body"], "unknown column (--text-col)"),
    (None, [], "empty"),
    ("binary", [], "binary"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, rows, flags, message):
    path = tmp_path / "bad.csv"
    if rows is None:
        path.write_bytes(b"")
    elif rows == "binary":
        path.write_bytes(b"PK\x03\x04\x00\x00" * 50)
    else:
        _write_csv(path, rows)
    assert main(["train", "text", "--data", str(path), "--model", "logreg", *flags, "--out", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    with pytest.raises(UserError, match="val-split"):
        load_labelled(str(path), val_split=1.5)


def test_resume_after_interrupt_equals_uninterrupted(table, tmp_path, monkeypatch):
    args = ["train", "text", "--data", str(table), "--text-col", "body", "--label-col", "topic", "--model", "mlp",
            "--batch-size", "16", *FAST]
    # Ctrl-C in the middle of epoch 2
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args, TextJob, at_step=20,
                                  time_keys=set(TIME_FIELDS))


def test_time_segments_are_the_cheapest_cuts():
    from itertools import combinations

    from deepskeptic.models.text import time_segments

    def cost(lengths, ends, per_segment):
        total, start = 0, 0
        for end in ends:
            total += sum(1 for n in lengths if n > start) * (end - start) + per_segment
            start = end
        return total

    rng = random.Random(0)
    for _ in range(40):
        lengths = sorted((rng.randint(1, 30) for _ in range(rng.randint(1, 9))), reverse=True)
        per_segment = rng.choice([0, 3, 20, 1000])
        ends = time_segments(lengths, per_segment)
        assert ends[-1] == lengths[0] and ends == sorted(set(ends))
        cuts = sorted(set(lengths))[:-1]
        brute = min(cost(lengths, [*c, lengths[0]], per_segment)
                    for k in range(len(cuts) + 1) for c in combinations(cuts, k))
        assert cost(lengths, ends, per_segment) == brute
    assert time_segments([7, 7, 7], 0) == [7] and time_segments([9, 2, 2], 0) == [2, 9]


@pytest.mark.parametrize("layers", [1, 2])
def test_packed_lstm_computes_what_the_padded_batch_does(layers):
    import torch

    from deepskeptic.models.text import TextLSTM, TextLSTMConfig
    torch.manual_seed(layers)
    model = TextLSTM(TextLSTMConfig(vocab_size=30, num_classes=4, embed=8, hidden=16, layers=layers,
                                    dropout=0.0)).double()
    lengths = torch.tensor([1, 40, 3, 17, 17, 2, 39, 8, 25, 1, 12])       # unsorted, ties, ones
    x = torch.randint(1, 30, (len(lengths), 40))
    x[torch.arange(40)[None, :] >= lengths[:, None]] = 0
    outputs, grads = [], []
    for packed in (False, True):
        model.packed = packed
        model.zero_grad()
        out = model(x, lengths)
        out.pow(2).sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-12) and torch.allclose(grads[0], grads[1], atol=1e-12)


def test_bucketed_predictions_equal_one_document_at_a_time(table, tiny_lstm, tmp_path):
    import torch

    from deepskeptic.tasks.text.data import predict_logits, read_texts
    run = tmp_path / "lstm"
    assert main(["train", "text", "--data", str(table), "--text-col", "body", "--label-col", "topic",
                 "--model", "lstm", "--config", str(tiny_lstm), "--max-len", "40", "--out", str(run), *FAST]) == 0
    predictor = get_task("text").predictor(Run(run))
    rng = random.Random(1)
    texts = [t for t, _ in _docs(150, seed=2)] + ["", "x", "goal " * 30]       # empty, one character, cut at 40
    rng.shuffle(texts)
    inputs = read_texts(predictor.run, predictor.reader, texts)
    bucketed = predictor.logits(texts)                                    # sorted by length, batches, packed
    alone = torch.cat([predictor.logits([t]) for t in texts])            # one document at a time
    small = predict_logits(predictor.model, inputs, predictor.device, batch_size=7)
    predictor.model.packed = False
    padded = predict_logits(predictor.model, inputs, predictor.device, bucketing=False)  # the path before
    for other in (alone, small, padded):
        assert (bucketed - other).abs().max().item() < 1e-5
    assert bucketed.argmax(1).tolist() == padded.argmax(1).tolist()


def test_lstm_resume_after_interrupt_equals_uninterrupted(table, tiny_lstm, tmp_path, monkeypatch):
    args = ["train", "text", "--data", str(table), "--text-col", "body", "--label-col", "topic", "--model", "lstm",
            "--config", str(tiny_lstm), "--batch-size", "16", *FAST]
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args, TextJob, at_step=20, time_keys=set(TIME_FIELDS))
