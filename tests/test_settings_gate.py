"""The settings gate: every setting is declared once (settings.Setting: kind, range, default), and a
value of the wrong kind, not finite or out of range is refused with one line and exit code 2 from
each source -- a flag, a config file, a Python keyword -- before anything is built or written.

Parametrised over every task's declared settings and over the model registry, so that a new
setting or model is tested the day it is declared; hypothesis draws the wrong-kind values.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import re
import tempfile
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import deepskeptic
from deepskeptic import cli as cli_mod
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.settings import COMMON_SETTINGS, MAX_IMAGE_SIZE, Setting, check_common
from deepskeptic.tasks import TASKS
from deepskeptic.tasks.base import GENERATE_SETTINGS
from deepskeptic.training import resolve_settings
from cli_helpers import user_error

_PARSER = cli_mod.build_parser()


@pytest.fixture(autouse=True)
def _one_parser(monkeypatch):
    """main() builds the whole parser (every task's flags) per call; one, reused, keeps these
    hundreds of runs quick. argparse parsers hold no state between parse_args calls."""
    monkeypatch.setattr(cli_mod, "build_parser", lambda: _PARSER)


def subparser(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def model_of(task) -> str:
    return task.model_names()[0]


def own_settings(task) -> list[Setting]:
    """The task's declared settings that are not shared ones with another default."""
    return [s for s in task.declared_settings if s.name not in COMMON_SETTINGS]


# ------------------------------------------------------------------ the bad values of a declaration

def out_of_range(s: Setting) -> list:
    """Numbers just outside the declared range (and far outside: a seed beyond 64 bits)."""
    if s.kind not in ("int", "float"):
        return []
    step = 1 if s.kind == "int" else 0.5
    values = []
    if s.low is not None:
        values.append(s.low if s.low_open else s.low - step)
    if s.high is not None:
        values += [s.high if s.high_open else s.high + step, 10 ** 30 if s.kind == "int" else 1e300]
    return [int(v) if s.kind == "int" else float(v) for v in values]


def bad_values(s: Setting) -> list[tuple[str, object]]:
    """(label, value) pairs that ``s`` must refuse from a config file or a keyword."""
    cases = {"int": [("nan", math.nan), ("fraction", 2.5), ("string", "3"), ("bool", True), ("list", [3])],
             "float": [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("string", "0.5"),
                       ("bool", True), ("list", [0.5])],
             "bool": [("string yes", "yes"), ("one", 1), ("string maybe", "maybe"), ("list", [True])],
             "str": [("number", 3), ("bool", False), ("list", ["a"])],
             "path": [("number", 3), ("bool", True), ("list", ["a"])],
             "choice": [("unknown", "maybe"), ("number", 1), ("list", ["auto"])],
             "dict": [("number", 3), ("string", "x"), ("list", [1])]}[s.kind]
    return cases + [(f"out of range {v!r}", v) for v in out_of_range(s)]


def bad_flag_texts(s: Setting) -> list[tuple[str, str, str]]:
    """(label, text, message pattern) for ``s``'s flag: the gate's or argparse's own message."""
    if s.kind not in ("int", "float"):
        return []
    gate = rf"^error: {re.escape(s.flag)} must be "
    parse = rf"argument {re.escape(s.flag)}: invalid {s.kind} value"
    cases = [("text", "abc", parse)]
    cases += [("nan", "nan", gate), ("inf", "inf", gate), ("-inf", "-inf", gate)] if s.kind == "float" \
        else [("fraction", "2.5", parse), ("nan", "nan", parse)]
    return cases + [(f"out of range {v!r}", repr(v), gate) for v in out_of_range(s)]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan" if math.isnan(value) else repr(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ------------------------------------------------------------------ every declared setting, each source

# (task, setting): each task's own settings, and the shared ones on image; the shared numeric ones
# also on every other task (they reach each task's gate the same way, but a task could shadow them)
CASES = [(t.name, s.name) for t in TASKS.values()
         for s in own_settings(t) + (list(COMMON_SETTINGS.values()) if t.name == "image" else [])]
CASES += [(t.name, name) for t in TASKS.values() if t.name != "image" for name in ("lr", "weight_decay", "warmup")]
FLAG_CASES = [(t, n) for t, n in CASES if bad_flag_texts(TASKS[t].declarations()[n])
              and (TASKS[t].declarations()[n].help is not None or n == "seed")]   # seed: a flag of train only


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate")


def _id(case) -> str:
    return "-".join(case)


@pytest.mark.parametrize("case", FLAG_CASES, ids=_id)
def test_bad_flag_values_exit_2_with_one_line(case, folder, capsys):
    task = TASKS[case[0]]
    setting = task.declarations()[case[1]]
    for _, text, pattern in bad_flag_texts(setting):
        line = user_error(capsys, "train", task.name, "--data", folder / "nowhere", "--model", model_of(task),
                          f"{setting.flag}={text}", "--out", folder / "run", match=pattern)
        assert setting.flag in line
    assert not (folder / "run").exists()


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_config_file_values_exit_2_with_one_line(case, folder, capsys):
    task = TASKS[case[0]]
    setting = task.declarations()[case[1]]
    config = folder / f"{task.name}-{setting.name}.toml"
    for _, value in bad_values(setting):
        config.write_text(f"{setting.name} = {toml_value(value)}\n")
        user_error(capsys, "train", task.name, "--data", folder / "nowhere", "--model", model_of(task),
                   "--config", config, "--out", folder / "run",
                   match=rf"^error: {setting.name} in config file .*{re.escape(config.name)} must be ")
    assert not (folder / "run").exists()


@pytest.mark.parametrize("case", [c for c in CASES if c[1] != "data"], ids=_id)
def test_bad_keyword_values_raise_one_line(case, folder):
    task = TASKS[case[0]]
    setting = task.declarations()[case[1]]
    for _, value in bad_values(setting):
        kwargs = {"model": model_of(task), "out": str(folder / "run"), setting.name: value}
        with pytest.raises(UserError, match=rf"^keyword {setting.name} must be ") as info:
            deepskeptic.train(task.name, data=str(folder / "nowhere"), **kwargs)
        assert "\n" not in str(info.value)
    assert not (folder / "run").exists()


def test_the_issues_cases(tmp_path, capsys):
    """The probe's examples, each from the source it was found through."""
    train = ["train", "image", "--data", "digits", "--model", "cnn", "--out", tmp_path / "run"]
    config = tmp_path / "c.toml"
    for body, match in (('compile = "yes"', "compile in config file .* must be true or false, got 'yes'"),
                        ('cpu_bf16 = "maybe"', "cpu_bf16 .* must be one of 'auto', true, false"),
                        ("lr = true", "lr in config file .* must be a positive number, got true"),
                        ("[model]\nwidths = [-4, 8]", "widths of 'cnn' .*must be a list of positive whole numbers")):
        config.write_text(body + "\n")
        user_error(capsys, *train, "--config", config, match=match)
    for flags, match in ((["--time-budget", "inf"], "--time-budget must be a positive finite number, got inf"),
                         (["--label-smoothing", "nan"], "--label-smoothing must be a finite number in"),
                         (["--label-smoothing", "2"], r"--label-smoothing must be a number in \[0, 1\)"),
                         (["--seed", str(2 ** 64)], "--seed must be a whole number from"),
                         (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
                         (["--image-size", "100000"], f"--image-size must be a whole number from 1 to {MAX_IMAGE_SIZE}")):
        user_error(capsys, *train, *flags, match=match)
    user_error(capsys, "train", "textgen", "--data", "x", "--model", "lstm", "--clip", "nan", match="--clip must be")
    user_error(capsys, "train", "textgen", "--data", "x", "--model", "lstm", "--min-char-count", "-1",
               match="--min-char-count must be a whole number >= 0")
    for flags, match in ((["--length", str(10 ** 12)], "--length must be a whole number from 1 to"),
                         (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
                         (["--n", str(10 ** 9)], "--n must be a whole number from 1 to"),
                         (["--seed", str(2 ** 70)], "--seed must be")):
        user_error(capsys, "generate", tmp_path / "no-such-run", *flags, match=match)
    user_error(capsys, "train", "gan", "--data", "x", "--model", "dcgan", "--fd-samples", "0",
               match="--fd-samples must be a positive whole number")      # the old name's hidden flag
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ random values of the wrong kind

def wrong_kind(s: Setting):
    """Values that are not of ``s``'s kind (or, for floats, not finite)."""
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    floats = st.floats(allow_nan=True, allow_infinity=True)
    lists = st.lists(st.one_of(st.integers(), st.booleans(), text), max_size=3)
    tables = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2)
    return {"int": st.one_of(floats, text, st.booleans(), lists, tables),
            "float": st.one_of(floats.filter(lambda f: not math.isfinite(f)), text, st.booleans(), lists, tables),
            "bool": st.one_of(st.integers(), floats, text, lists, tables),
            "str": st.one_of(st.integers(), floats, st.booleans(), lists, tables),
            "path": st.one_of(st.integers(), floats, st.booleans(), lists, tables),
            "choice": st.one_of(st.integers(), floats, text, lists).filter(
                lambda v: not any(type(v) is type(c) and v == c for c in s.choices)),
            "dict": st.one_of(st.integers(), floats, st.booleans(), text, lists)}[s.kind]


ALL_SETTINGS = [(t.name, s.name) for t in TASKS.values() for s in t.declarations().values()
                if s.name not in ("data", "model_config")]


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_wrong_kind_keywords_are_refused(data):
    task_name, name = data.draw(st.sampled_from(ALL_SETTINGS))
    task = TASKS[task_name]
    value = data.draw(wrong_kind(task.declarations()[name]))
    kwargs = {"model": model_of(task), "out": "/nonexistent/never", name: value}
    with pytest.raises(UserError, match=rf"^keyword {name} must be ") as info:
        deepskeptic.train(task_name, data="nowhere", **kwargs)
    assert "\n" not in str(info.value)


@hsettings(max_examples=80, deadline=None,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_wrong_kind_config_values_are_refused(data):
    task_name, name = data.draw(st.sampled_from([c for c in ALL_SETTINGS if c[1] != "model"]))
    task = TASKS[task_name]
    value = data.draw(wrong_kind(task.declarations()[name]))
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "c.toml"
        config.write_text(f"{name} = {toml_value(value)}\n")
        with pytest.raises(UserError, match=rf"^{name} in config file .*c\.toml must be ") as info:
            resolve_settings(task, {"data": "nowhere", "model": model_of(task)}, str(config))
    assert "\n" not in str(info.value)


NUMERIC_FLAGS = [(t.name, s.name) for t in TASKS.values() for s in t.declarations().values()
                 if s.kind in ("int", "float") and (s.help is not None or s.name == "seed")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_text_for_a_number_flag_exits_2_with_one_line(data):
    task_name, name = data.draw(st.sampled_from(NUMERIC_FLAGS))
    text = data.draw(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=10)
                     .filter(lambda t: not _is_number(t)))
    flag = TASKS[task_name].declarations()[name].flag
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli_mod.main(["train", task_name, "--data", "nowhere", "--model", model_of(TASKS[task_name]),
                           f"{flag}={text}", "--out", "/nonexistent/never"])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err.getvalue()


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_number_passes_exactly_when_it_is_finite_and_in_range(data):
    task_name, name = data.draw(st.sampled_from([c for c in NUMERIC_FLAGS]))
    s = TASKS[task_name].declarations()[name]
    value = data.draw(st.integers(-2 ** 70, 2 ** 70) if s.kind == "int" else st.floats(allow_nan=True))
    inside = math.isfinite(value) and (s.low is None or value > s.low or value == s.low and not s.low_open) \
        and (s.high is None or value < s.high or value == s.high and not s.high_open)
    if inside:
        assert s.check(value) == value
    else:
        with pytest.raises(UserError, match=rf"^{re.escape(s.flag)} must be "):
            s.check(value)


# ------------------------------------------------------------------ the declarations themselves

@pytest.mark.parametrize("task", TASKS.values(), ids=lambda t: t.name)
def test_task_defaults_and_flags_come_from_the_declarations(task):
    declared = task.declarations()
    assert task.task_defaults == {s.name: s.default for s in task.declared_settings}
    dests = {a.dest for a in subparser(_PARSER, "train", task.name)._actions}
    for s in declared.values():
        assert (s.name in dests) == (s.help is not None or s.name in ("model", "seed")), s.name
    for old, new in task.renamed_settings.items():     # the old name's flag, hidden, checked as the new one
        assert old in dests and new in declared


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda s: f"{s.task}-{s.name}")
def test_every_models_training_defaults_pass_the_declarations(spec):
    declared = TASKS[spec.task].declarations()
    for key, value in spec.train_defaults.items():
        assert declared[key].check(value) == value


@pytest.mark.parametrize("task", TASKS.values(), ids=lambda t: t.name)
def test_a_config_file_of_the_defaults_resolves_to_the_defaults(task, tmp_path):
    """Valid values pass the gate unchanged: a file holding every default resolves as no file does."""
    trained_by = registry.spec(task.name, model_of(task)).train_defaults    # these win over the defaults
    values = {s.name: s.default for s in task.declarations().values()
              if s.default is not None and s.kind != "dict" and s.name != "data" and s.name not in trained_by}
    config = tmp_path / "defaults.toml"
    config.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    flags = {"data": "somewhere", "model": model_of(task)}
    assert resolve_settings(task, flags, str(config)) == resolve_settings(task, flags, None)
    check_common(resolve_settings(task, flags, str(config)))     # what a run's config.json is read back with


def test_generate_options_are_declared_once():
    defaults = {a.dest: a.default for a in subparser(_PARSER, "generate")._actions}
    assert {name: defaults[name] for name in GENERATE_SETTINGS} == {s.name: s.default for s in GENERATE_SETTINGS.values()}


# ------------------------------------------------------------------ [model] tables: the registry's rule

def _bad_fields(spec):
    """(field, value) pairs the registry's range rule refuses for ``spec``'s config."""
    hints = typing.get_type_hints(spec.config_cls)
    for f in dataclasses.fields(spec.config_cls):
        hint = hints[f.name]
        if hint is int:
            yield f.name, -1
            if not (f.default == 0 or f.name in registry.ZERO_IS_A_VALUE):
                yield f.name, 0
        elif typing.get_origin(hint) is tuple:
            yield f.name, [-4, 8]
            yield f.name, [1.5]
        elif hint is float:
            yield f.name, math.nan
            yield f.name, math.inf
            if f.name == "dropout":
                yield f.name, 1.0


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda s: f"{s.task}-{s.name}")
def test_model_settings_out_of_range_are_refused_and_defaults_pass(spec):
    for key, value in _bad_fields(spec):
        with pytest.raises(UserError, match=rf"^model setting {key} of '{spec.name}' (is out of range: {key} )?must be"):
            registry.make_config(spec.task, spec.name, **{key: value})
    fields = {f.name: f.default for f in dataclasses.fields(spec.config_cls)}
    assert dataclasses.asdict(registry.make_config(spec.task, spec.name, **fields)) == fields


def test_a_config_file_that_is_not_a_regular_file_is_one_line(tmp_path, capsys):
    import os
    from cli_helpers import user_error
    os.mkfifo(tmp_path / "pipe.toml")     # reading it would wait for a writer forever
    user_error(capsys, "train", "image", "--data", "digits", "--model", "mlp", "--config", tmp_path / "pipe.toml",
               match="config file .*pipe.toml is a FIFO")
    user_error(capsys, "train", "image", "--data", "digits", "--model", "mlp", "--config", tmp_path,
               match="is a folder; give a regular file")
