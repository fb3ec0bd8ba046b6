"""The Python API end to end: the same code path as the CLI, in-memory data equal to the same data
from files, UserError for bad keywords and data."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import deepskeptic
from cli_helpers import cli


@pytest.fixture(scope="module")
def digits_subset():
    d = load_digits()
    keep = np.concatenate([np.flatnonzero(d.target == k)[:30] for k in range(3)])   # 90 images, 3 classes
    images = (d.images[keep] * (255 / 16)).round().astype(np.uint8)                  # (90, 8, 8)
    labels = np.array(["zero", "one", "two"])[d.target[keep]]
    return images, labels


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, digits_subset):
    out = tmp_path_factory.mktemp("api") / "run"
    monkey_cache = tmp_path_factory.mktemp("cache")
    import os
    os.environ["DEEPSKEPTIC_CACHE"] = str(monkey_cache)
    return deepskeptic.train("image", data=digits_subset, model="cnn", epochs=2, out=str(out), progress=False)


def test_train_returns_a_complete_run_that_load_finds_again(api_run):
    assert api_run.metrics["epochs"] == 2 and 0 <= api_run.metrics["test_accuracy"] <= 1
    again = deepskeptic.load(api_run.path)
    assert again.config["settings"]["model"] == "cnn" and again.metrics == api_run.metrics
    assert again.report_path.is_file()


def test_in_memory_images_equal_the_same_images_from_a_folder(tmp_path, api_run, digits_subset, capsys):
    images, labels = digits_subset
    folder = tmp_path / "digits3"
    for i, (img, label) in enumerate(zip(images, labels)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / label / f"{i:06d}.png")
    rc, _, _ = cli(capsys, "train", "image", "--data", folder, "--model", "cnn", "--epochs", 2,
                   "--out", tmp_path / "from-files", "--no-progress")
    assert rc == 0
    files = json.loads((tmp_path / "from-files" / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "confusion_matrix", "per_class_accuracy"):
        assert files[key] == api_run.metrics[key], key


def test_predict_on_arrays_equals_the_cli_json(tmp_path, api_run, digits_subset, capsys):
    images, _ = digits_subset
    paths = []
    for i in (0, 31, 62):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    rc, out, _ = cli(capsys, "predict", api_run.path, *paths, "--json")
    assert rc == 0
    expected = json.loads(out)
    got = api_run.predict([images[i] for i in (0, 31, 62)], names=[str(p) for p in paths])
    assert got == expected
    assert api_run.predict([str(p) for p in paths]) == expected          # paths go through read()
    assert api_run.predict(paths[0])[0]["top"] == expected[0]["top"]


def test_evaluate_equals_the_cli(api_run, capsys):
    rc, out, _ = cli(capsys, "evaluate", api_run.path)
    assert rc == 0
    assert api_run.evaluate() == json.loads(out)


def test_unknown_keyword_names_the_closest_setting():
    with pytest.raises(deepskeptic.UserError, match="did you mean 'time_budget'"):
        deepskeptic.train("image", data="digits", model="cnn", time_budgt=5)


def test_bad_data_and_bad_values_are_user_errors(digits_subset):
    images, labels = digits_subset
    with pytest.raises(deepskeptic.UserError, match="labels"):
        deepskeptic.train("image", data=(images, labels[:5]), model="cnn", epochs=1)
    with pytest.raises(deepskeptic.UserError, match="epochs"):
        deepskeptic.train("image", data="digits", model="cnn", epochs=-1)
    with pytest.raises(deepskeptic.UserError, match="unknown task"):
        deepskeptic.train("imag", data="digits", model="cnn")
    with pytest.raises(deepskeptic.UserError):
        deepskeptic.load("/nonexistent/run")


def test_compare_returns_summary_verdicts_and_a_table(tmp_path):
    cmp = deepskeptic.compare("image", data="digits", models=["logreg", "cnn"], seeds=2, epochs=1,
                              limit=200, out=tmp_path / "cmp", progress=False)
    table = cmp.table()
    assert list(table["model"]) == ["logreg", "cnn"]
    assert {"mean", "std", "params", "flops", "seconds"} <= set(table.columns)
    assert cmp.verdicts and cmp.summary["models"]["cnn"]["role"] == "deep"
    assert cmp.run("cnn", 1).metrics["seed"] == 1


def test_compare_jobs_2_equals_jobs_1(tmp_path, capsys):
    """``compare(..., jobs=2)`` trains the runs in two local processes (``compare --jobs 2``) and gives
    the numbers of the sequential comparison: each run trains on one thread either way."""
    from conftest import without_time
    kwargs = dict(data="digits", models=["mlp"], seeds=2, epochs=1, limit=200, threads=1, progress=False)
    one = deepskeptic.compare("image", out=tmp_path / "jobs1", **kwargs)
    two = deepskeptic.compare("image", out=tmp_path / "jobs2", jobs=2, **kwargs)
    assert "2 run(s) in 2 processes" in capsys.readouterr().out
    for seed in (0, 1):
        a, b = one.run("mlp", seed), two.run("mlp", seed)
        assert without_time(a.metrics) == without_time(b.metrics)
        assert [without_time(h) for h in a.history] == [without_time(h) for h in b.history]
    assert one.table()[["mean", "std", "params"]].equals(two.table()[["mean", "std", "params"]])
    assert one.verdicts == two.verdicts


def test_compare_bad_jobs_and_ray_are_user_errors(tmp_path):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(deepskeptic.UserError, match="jobs must be a whole number"):
            deepskeptic.compare("image", data="digits", models=["logreg"], jobs=bad, out=tmp_path / "x")
    with pytest.raises(deepskeptic.UserError, match="ray must be the address"):
        deepskeptic.compare("image", data="digits", models=["logreg"], ray=6379, out=tmp_path / "x")
    with pytest.raises(deepskeptic.UserError, match="cannot be combined"):
        deepskeptic.compare("image", data="digits", models=["logreg"], jobs=2, ray="auto", out=tmp_path / "x")
    with pytest.raises(deepskeptic.UserError, match="did you mean 'jobs'"):
        deepskeptic.compare("image", data="digits", models=["logreg"], job=2, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_textgen_corpus_in_a_string_equals_the_same_corpus_from_a_file(tmp_path):
    from conftest import without_time
    corpus = "\n".join(f"line {i % 7}: the cat sat on the mat" for i in range(120)) + "\n"
    (tmp_path / "corpus.txt").write_text(corpus)
    tiny = dict(model="lstm", hidden=8, embed=8, seq_len=16, batch_size=4, epochs=1, threads=1, progress=False)
    in_memory = deepskeptic.train("textgen", data=corpus, out=tmp_path / "memory", **tiny)
    from_file = deepskeptic.train("textgen", data=tmp_path / "corpus.txt", out=tmp_path / "file", **tiny)
    def numbers(run):            # without what measures time or names the data's folder
        return {k: v for k, v in without_time(run.metrics).items() if k != "data" and not k.endswith("per_second")}
    assert numbers(in_memory) == numbers(from_file) and "test_bpc" in numbers(in_memory)
    gates = in_memory.explain("the cat", cells=[0, 1])                 # gates per character
    assert gates["cells"] == [0, 1] and gates["forget"].shape == (7, 2)
    with pytest.raises(deepskeptic.UserError):                         # one line, no break: a name or path
        deepskeptic.train("textgen", data="no-such-corpus", out=tmp_path / "x", **tiny)
