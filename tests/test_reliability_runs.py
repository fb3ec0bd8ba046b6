"""A run folder read back is checked before use (issue 16, class 2): random JSON of the wrong shape
in config.json, metrics.json, history.jsonl or the checkpoint's tree is one line on stderr and exit
2 on `evaluate`, `predict`, `report` and `train --resume` -- or works, where the change is harmless
-- never a KeyError, TypeError, RecursionError or MemoryError. Weights that do not fit the model
(names, shapes, dtypes) are refused, not cast. One tiny image run is trained for the session
(reliability_helpers); rendering a report is slow, so the random cases run `evaluate`, `predict`
and `train --resume`, which check every file at open, and `report` has its own cases."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cli_helpers import cli, user_error
from reliability_helpers import copy_run, digits_run

CHECKED = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with the session's digits run (``run``) and an 8x8 image to predict (``digit.png``)."""
    root = tmp_path_factory.mktemp("reliability-runs")
    shutil.copytree(digits_run(tmp_path_factory), root / "run")
    Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)).save(root / "digit.png")
    return root


def fresh(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run to damage."""
    return copy_run(trained / "run", tmp_path)


def command(name: str, run: Path, trained: Path) -> list[str]:
    return {"evaluate": ["evaluate", run], "predict": ["predict", run, trained / "digit.png"],
            "report": ["report", run], "resume": ["train", "--resume", run]}[name]


def contract(capsys, args) -> tuple[int, str]:
    """Exit 0, or exit 2 with exactly one 'error:' line; never a traceback."""
    rc, out, err = cli(capsys, *args)
    assert "Traceback" not in out + err
    assert rc in (0, 2), (rc, err[-2000:])
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    return rc, err


# --- random JSON of the wrong shape ----------------------------------------------------------

def kind(value) -> str:
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False)
                    | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)


def tree_paths(tree, prefix=()):
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from tree_paths(value, prefix + (key,))


def at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def mutation(draw, tree):
    """(path, None) to delete the value at path, or (path, value): a value of another kind."""
    path = draw(st.sampled_from(list(tree_paths(tree))))
    if draw(st.integers(0, 4)) == 0:
        return path, None, True
    original = at(tree, path)
    return path, draw(JSON.filter(lambda v: kind(v) != kind(original))), False


def mutated(tree, path, value, delete):
    tree = json.loads(json.dumps(tree))
    parent = at(tree, path[:-1])
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return tree


DATA_INFO_READ = {"classes", "channels", "image_size", "mean", "std"}


def must_refuse(file: str, path: tuple, original, delete: bool, value=None) -> bool:
    """The changes the checks must refuse whatever the command (others may be harmless; null is
    a valid 'unset' for many settings and measurements)."""
    if not delete and value is None:
        return False
    if file == "config.json":
        if delete:
            return path in {("task",), ("settings",), ("model_config",), ("settings", "model"), ("settings", "data")} \
                or (path[0] == "data_info" and len(path) == 2 and path[1] in DATA_INFO_READ) \
                or path[:2] in {("data_info", "classes"), ("data_info", "mean"), ("data_info", "std")}
        return original is not None and (path[0] in {"task", "settings", "model_config", "flops_per_example"}
                                         or (path[0] == "data_info" and path[1] in DATA_INFO_READ))
    if file == "metrics.json":
        return (original is not None and not delete) or path in {("epochs",), ("train_seconds",), ("test_accuracy",)} \
            or (delete and path[0] == "confusion_matrix" and len(path) == 3)
    return original is not None and not delete or path[-1] == "epoch"       # a history line


@pytest.mark.parametrize("file", ["config.json", "metrics.json"])
@pytest.mark.parametrize("name", ["evaluate", "predict"])
def test_wrong_shape_in_a_json_file_is_one_line(trained, tmp_path, capsys, file, name):
    tree = json.loads((trained / "run" / file).read_text())

    @CHECKED
    @given(mutation(tree))
    def check(change):
        path, value, delete = change
        run = fresh(trained, tmp_path)
        (run / file).write_text(json.dumps(mutated(tree, path, value, delete)))
        rc, err = contract(capsys, command(name, run, trained))
        if must_refuse(file, path, at(tree, path), delete, value):
            assert rc == 2 and file in err, (path, value, delete, err)
        shutil.rmtree(run)
    check()


def test_wrong_shape_in_history_is_one_line(trained, tmp_path, capsys):
    line = json.loads((trained / "run" / "history.jsonl").read_text().splitlines()[0])

    @CHECKED
    @given(mutation(line), st.sampled_from(["predict", "evaluate"]))
    def check(change, name):
        path, value, delete = change
        run = fresh(trained, tmp_path)
        (run / "history.jsonl").write_text(json.dumps(mutated(line, path, value, delete)) + "\n")
        rc, err = contract(capsys, command(name, run, trained))
        if must_refuse("history.jsonl", path, at(line, path), delete, value):
            assert rc == 2 and "history.jsonl" in err, (path, value, err)
        shutil.rmtree(run)
    check()


def read_checkpoint(run: Path) -> tuple[dict, dict]:
    data = (run / "checkpoint" / "state.safetensors").read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return st_load(data), json.loads(header["__metadata__"]["tree"])


def write_checkpoint(run: Path, tensors: dict, tree) -> None:
    (run / "checkpoint" / "state.safetensors").write_bytes(st_save(tensors, metadata={"tree": json.dumps(tree)}))


def test_wrong_shape_in_the_checkpoint_tree_is_one_line(trained, tmp_path, capsys):
    tensors, tree = read_checkpoint(trained / "run")

    @settings(CHECKED, max_examples=8)
    @given(mutation(tree))
    def check(change):
        path, value, delete = change
        run = fresh(trained, tmp_path)
        (run / "metrics.json").unlink()
        write_checkpoint(run, tensors, mutated(tree, path, value, delete))
        rc, err = contract(capsys, command("resume", run, trained))
        original = at(tree, path)
        is_key = path[-1] == 0 and isinstance(original, (str, int)) and len(at(tree, path[:-1])) == 2
        if not delete and original is not None and not is_key:
            assert rc == 2 and "checkpoint" in err, (path, value, err)
        assert not (run / ".lock").exists()
        shutil.rmtree(run)
    check()


# --- whole files replaced --------------------------------------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize("file", ["config.json", "metrics.json", "history.jsonl"])
@pytest.mark.parametrize("content", [DEEP, "[1, 2]", "null", '"text"', "{\"a\": 1e999}", "\xff\xfe not json",
                                     '{"epoch": ' + DEEP + "}"])
def test_a_file_replaced_by_other_json_is_one_line(trained, tmp_path, capsys, file, content):
    run = fresh(trained, tmp_path)
    (run / file).write_bytes(content.encode("utf-8", "surrogateescape") if "\xff" not in content
                             else b"\xff\xfe not json")
    user_error(capsys, "report" if file == "history.jsonl" else "evaluate", run, match=file)


def test_report_names_the_file_of_a_key_it_misses(trained, tmp_path, capsys):
    """Keys no schema lists are read through FileDicts: their absence is one line naming the file."""
    run = fresh(trained, tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["confusion_matrix"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    user_error(capsys, "report", run, match=r"metrics\.json has no confusion_matrix")


def test_a_checkpoint_tree_nested_absurdly_deep_is_one_line(trained, tmp_path, capsys):
    run = fresh(trained, tmp_path)
    (run / "metrics.json").unlink()
    tensors, _ = read_checkpoint(run)
    (run / "checkpoint" / "state.safetensors").write_bytes(st_save(tensors, metadata={"tree": DEEP}))
    user_error(capsys, "train", "--resume", run, match=r"checkpoint .*nested more than")
    (run / "checkpoint" / "state.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"not json")
    user_error(capsys, "train", "--resume", run, match=r"checkpoint .*corrupt")
    assert not (run / ".lock").exists()


# --- names and sizes that do not fit ---------------------------------------------------------

def edit_config(run: Path, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, match", [
    (lambda c: c["settings"].update(model="resnet"), r"config\.json names a model 'resnet'"),
    (lambda c: c.update(task="painting"), r"config\.json names an unknown task 'painting'"),
    (lambda c: c["model_config"].update(image_size=10**6), r"config\.json .*parameters"),
    (lambda c: c["model_config"].update(widths=[4]), r"config\.json .*model_config"),
    (lambda c: c["data_info"].update(image_size=100_000), r"config\.json .*data_info\.image_size"),
    (lambda c: c["data_info"].update(classes=["a", "b"]), r"data_info\.classes \(2\) and model_config\.num_classes"),
    (lambda c: c["data_info"].update(mean=[0.1, 0.2]), r"data_info\.mean has 2 value\(s\) for 1 channel"),
    (lambda c: c["model_config"].update(in_channels=3), r"data_info\.channels \(1\) and model_config\.in_channels"),
    (lambda c: c["settings"].update(seed=2**70), r"config\.json .*settings\.seed"),
    (lambda c: c["settings"].update(label_smoothing=float("nan")), r"config\.json .*label_smoothing"),
    (lambda c: c["settings"].update(warmup=1.5), r"config\.json .*settings\.warmup"),
])
def test_config_that_does_not_fit_the_registry_is_one_line(trained, tmp_path, capsys, change, match):
    run = fresh(trained, tmp_path)
    edit_config(run, change)
    user_error(capsys, "evaluate", run, match=match)


@pytest.mark.parametrize("change, match", [
    (lambda t: t.update({"model.1.weight": t["model.1.weight"].double()}),
     r"1\.weight is float64, the model's float32"),
    (lambda t: t.update({"model.1.weight": t["model.1.weight"][:, :32].contiguous()}),
     r"1\.weight is shaped \(10, 32\)"),
    (lambda t: t.pop("model.1.bias"), r"missing, e\.g\. model\.1\.bias"),
    (lambda t: t.update({"extra": torch.zeros(2)}), r"unexpected tensor"),
])
def test_weights_that_do_not_fit_the_model_are_refused(trained, tmp_path, capsys, change, match):
    run = fresh(trained, tmp_path)
    tensors = st_load((run / "model.safetensors").read_bytes())
    change(tensors)
    (run / "model.safetensors").write_bytes(st_save(tensors))
    user_error(capsys, "evaluate", run, match=r"model\.safetensors .*" + match)
    (run / "model.safetensors").write_bytes(b"garbage")
    user_error(capsys, "predict", run, trained / "digit.png", match=r"model\.safetensors is corrupt")


def test_checkpoint_state_that_does_not_fit_the_modules_is_refused(tmp_path):
    """checkpoint.restore: what the engine's resume loads modules and optimizers through."""
    from deepskeptic.checkpoint import restore
    from deepskeptic.errors import UserError
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    restore(module, dict(module.state_dict()), "module model", tmp_path / "state.safetensors")
    with pytest.raises(UserError, match=r"weight is float64, the model's float32"):
        restore(module, {**module.state_dict(), "weight": module.weight.double()}, "module model", "ck")
    with pytest.raises(UserError, match=r"parameter group 0: lr is 2 values"):
        restore(optimizer, {"state": {}, "param_groups": [{**optimizer.param_groups[0], "lr": [1, 2],
                                                            "params": [0, 1]}]}, "optimizer main", "ck")
    with pytest.raises(UserError, match=r"1 parameter group\(s\), the optimizer has 1|another number"):
        restore(optimizer, {"state": {}, "param_groups": [{**optimizer.param_groups[0], "params": [0]}]},
                "optimizer main", "ck")


def test_a_fifo_or_folder_as_a_run_file_is_one_line(trained, tmp_path, capsys):
    import os
    run = fresh(trained, tmp_path)
    (run / "metrics.json").unlink()
    os.mkfifo(run / "metrics.json")            # reading it would block forever
    user_error(capsys, "evaluate", run, match=r"metrics\.json is a FIFO")
    (run / "history.jsonl").unlink()
    (run / "history.jsonl").mkdir()
    (run / "metrics.json").unlink()
    shutil.copy(trained / "run" / "metrics.json", run / "metrics.json")
    user_error(capsys, "report", run, match=r"history\.jsonl is a folder")
