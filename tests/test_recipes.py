"""Recipes sized to the data and the budget, and the learning-rate check: smaller models for smaller
budgets, never over an explicit setting, recorded with the reason, kept on resume; a default rate
lowered where it diverges on the data and left alone where it does not."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic import recipes
from deepskeptic.engine import Job
from deepskeptic.models import registry
from deepskeptic.recipes import Rung
from deepskeptic.tasks import get_task
from deepskeptic.training import resolve_settings, train

pytestmark = pytest.mark.usefixtures("one_thread")  # as training runs them on a busy machine
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_decisions():
    recipes.forget()       # each test measures for itself
    yield
    recipes.forget()


# ------------------------------------------------------------------ the rule, on measured costs

LADDER = [Rung("big"), Rung("medium", {"widths": [8, 16, 32]}),
          Rung("small", {"widths": [4, 8, 16], "hidden": 64}, {"max_len": 128})]
COST = {"big": 4e-3, "medium": 1e-3, "small": 2.5e-4}   # seconds per example, as a probe would measure


def choose(examples, budget, explicit=()):
    probed = []

    def measure(rung):
        probed.append(rung.name)
        return COST[rung.name], examples
    return recipes.choose(LADDER, time_budget=budget, measure=measure, explicit=explicit), probed


@pytest.mark.parametrize("examples,budget,chosen", [
    (1_000, 100.0, "big"),       # 4 s an epoch: 25 epochs fit
    (10_000, 100.0, "medium"),   # big: 2.5 epochs; medium: 10
    (60_000, 100.0, "small"),    # medium: 1.7; small: 6.7
    (60_000, 20.0, "small"),     # nothing fits 5 epochs: the fastest, and the reason says so
    (60_000, 1000.0, "medium"),  # a larger budget affords a larger model on the same data
])
def test_smaller_budgets_and_larger_data_get_smaller_models(examples, budget, chosen):
    record, probed = choose(examples, budget)
    rung = next(r for r in LADDER if r.name == chosen)
    assert record["chosen"] == chosen
    assert (record["model_config"], record["settings"]) == (rung.model_config, rung.settings)
    assert probed == [r.name for r in LADDER][:len(probed)] and probed[-1] == chosen  # stops at the first that fits
    assert [p["recipe"] for p in record["probes"]] == probed
    assert record["reason"].startswith(chosen) and f"{budget:g} s" in record["reason"]
    if budget == 20.0:
        assert "only" in record["reason"] and "--time-budget" in record["reason"]


def test_without_a_budget_the_model_keeps_its_recipe_and_nothing_is_probed():
    record, probed = choose(60_000, None)
    assert record["chosen"] is None and record["model_config"] == {} and probed == []
    assert "no time budget" in record["reason"]


def test_an_explicit_setting_always_wins():
    record, probed = choose(60_000, 100.0, explicit={"widths"})   # every cheaper rung changes it
    assert record["chosen"] is None and probed == [] and "widths set by the user" in record["reason"]
    record, probed = choose(60_000, 100.0, explicit={"max_len"})  # the rungs that leave it alone stay open
    assert probed == ["big", "medium"] and record["chosen"] == "medium"


# ------------------------------------------------------------------ wired into the tasks

def build(task_name, flags, prepared=None):
    task = get_task(task_name)
    settings = resolve_settings(task, flags, None)
    prepared = prepared if prepared is not None else task.prepare(settings)
    job, info = task.build(settings, prepared, CPU)
    return task, settings, prepared, job, info


DIGITS = {"data": "digits", "model": "cnn", "limit": 400}


def test_the_image_cnn_gets_a_smaller_recipe_for_a_smaller_budget_recorded_with_its_reason():
    _, roomy, _, job, info = build("image", {**DIGITS, "time_budget": 1e6})
    assert info["recipe"]["chosen"].startswith("widths 16-32-64") and roomy["model_config"] == {}
    assert info["model_config"]["widths"] == (16, 32, 64) and info["recipe"]["probes"][0]["seconds_per_example"] > 0
    _, tight, _, job, info = build("image", {**DIGITS, "time_budget": 1e-4})
    smallest = recipes.ladder("image", "cnn")[-1]
    assert info["recipe"]["chosen"] == smallest.name and "only" in info["recipe"]["reason"]
    assert len(info["recipe"]["probes"]) == 3 and tight["model_config"] == smallest.model_config
    assert tight["decided_by_recipe"] == ["model_config.widths", "model_config.hidden"]
    assert [m.out_channels for m in job.model.modules() if isinstance(m, nn.Conv2d)] == [4, 8, 16]


def test_an_explicit_model_setting_is_never_overridden_and_epochs_runs_keep_their_recipe():
    _, settings, _, job, info = build("image", {**DIGITS, "time_budget": 1e-4, "model_config": {"widths": [16, 32, 64]}})
    rungs = recipes.ladder("image", "cnn")
    assert info["recipe"]["chosen"] is None and info["recipe"]["probes"] == []
    assert "widths set by the user" in info["recipe"]["reason"] and settings["model_config"] == {"widths": [16, 32, 64]}
    assert all("widths" in r.model_config for r in rungs[1:])   # hence nothing left to choose
    _, settings, _, _, info = build("image", {**DIGITS, "epochs": 1})
    assert info["recipe"]["probes"] == [] and "no time budget" in info["recipe"]["reason"] and settings["model_config"] == {}


def test_the_probe_leaves_the_runs_random_numbers_alone():
    task = get_task("image")
    settings = resolve_settings(task, {**DIGITS, "time_budget": 1e6}, None)
    prepared = task.prepare(settings)
    torch.manual_seed(3)
    job, _ = task.build(settings, prepared, CPU)
    torch.manual_seed(3)
    fresh = task.create_model("cnn", {}, task.shape_of(prepared))
    assert all(torch.equal(a, b) for a, b in zip(job.model.state_dict().values(), fresh.state_dict().values()))


def test_the_seeds_of_a_comparison_share_one_decision():
    _, _, prepared, _, first = build("image", {**DIGITS, "time_budget": 1e-4})
    _, settings, _, _, again = build("image", {**DIGITS, "time_budget": 1e-4, "seed": 1}, prepared)
    assert again["recipe"]["chosen"] == first["recipe"]["chosen"] and "earlier run of this process" in again["recipe"]["reason"]
    assert settings["model_config"] == first["recipe"]["model_config"] and settings["model_config"]


def test_a_resumed_run_keeps_the_recorded_choice_and_probes_nothing(tmp_path, monkeypatch):
    task = get_task("image")
    settings = resolve_settings(task, {**DIGITS, "time_budget": 0.2, "progress": False}, None)
    run = train(task, settings, out=tmp_path / "run")
    config = json.loads((run.path / "config.json").read_text())
    assert config["recipe"]["reason"] and config["settings"]["decided_by_recipe"] == config["recipe"]["decided"]
    assert "Recipe: " in (run.path / "report.html").read_text()

    def no_probe(*args, **kwargs):
        raise AssertionError("a resumed run probed again")
    monkeypatch.setattr(recipes, "run_steps", no_probe)
    recipes.forget()
    resumed = dict(config["settings"])                      # what resume_run hands to train
    _, _, _, job, info = build_from(task, resumed)
    assert info["recipe"]["resumed"] and resumed["model_config"] == config["settings"]["model_config"]
    assert resumed["lr"] == config["settings"]["lr"]
    widths = [m.out_channels for m in job.model.modules() if isinstance(m, nn.Conv2d)]
    assert widths == list(config["model_config"]["widths"])


def build_from(task, settings):
    prepared = task.prepare(settings)
    job, info = task.build(settings, prepared, CPU)
    return task, settings, prepared, job, info


def test_the_text_lstm_reads_less_and_is_smaller_on_a_tight_budget(tmp_path):
    rows = ["text,label"] + [f"{'good fine great ' * (i % 7 + 3)}{i},pos" if i % 2 else
                             f"{'bad poor awful ' * (i % 5 + 3)}{i},neg" for i in range(120)]
    (tmp_path / "docs.csv").write_text("\n".join(rows) + "\n")
    flags = {"data": str(tmp_path / "docs.csv"), "model": "lstm", "time_budget": 1e-4}
    _, settings, prepared, job, info = build("text", flags)
    smallest = recipes.ladder("text", "lstm")[-1]
    assert info["recipe"]["chosen"] == smallest.name and settings["max_len"] == 128
    assert info["model_config"]["hidden"] == 64 and int(job.train.lengths.max()) <= 128
    assert prepared.settings["max_len"] == 128    # finish, predict and the vocabulary read as training did
    _, settings, _, _, info = build("text", {**flags, "max_len": 100})   # the user's reading length stays
    assert settings["max_len"] == 100
    assert info["recipe"]["chosen"] is None and "max_len set by the user" in info["recipe"]["reason"]


def test_the_textgen_model_shrinks_for_a_tight_budget_and_keeps_a_given_size(tmp_path):
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 400)
    flags = {"data": str(tmp_path / "corpus.txt"), "model": "lstm", "time_budget": 1e-4}
    _, settings, _, job, info = build("textgen", flags)
    assert info["recipe"]["chosen"].startswith("128 units") and settings["seq_len"] == 64
    assert info["model_config"]["hidden"] == 128 and job.seq_len == 64
    _, settings, _, _, info = build("textgen", {**flags, "hidden": 512})
    assert info["model_config"]["hidden"] == 512 and "hidden set by the user" in info["recipe"]["reason"]
    _, _, _, _, info = build("textgen", {**flags, "model": "ngram"})
    assert info.get("recipe") is None        # fitted in one step: nothing to size or to check


# ------------------------------------------------------------------ the learning-rate check

class Inputs(Job):
    """A plain 3-layer network on 16 features, one of which decides the class; ``scale`` multiplies
    the inputs (a user's unnormalised data)."""

    def __init__(self, lr: float, scale: float):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(512, 16, generator=g)
        self.x, self.y = x * scale, (x[:, 0] > 0).long()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        self.modules = {"model": self.model}
        self.optimizers = {"main": torch.optim.AdamW(self.model.parameters(), lr=lr)}

    def epoch_batches(self, epoch, generator):
        return list(torch.randperm(len(self.x), generator=generator).view(16, 32))

    def train_step(self, index, ctx):
        loss = F.cross_entropy(self.model(self.x[index]), self.y[index])
        ctx.backward_step(loss)
        return len(index), {"loss": loss.detach()}


def test_a_default_rate_that_diverges_on_huge_inputs_is_lowered_and_recorded():
    default = registry.spec("image", "mlp").train_defaults["lr"]
    settings = {"model": "mlp", "model_config": {}, "lr": default, "amp": True, "cpu_bf16": False}
    factor = 0.05 / default       # the default of this network: 0.05, safe on inputs of unit scale

    def on(scale):
        return recipes.check_lr(get_task("image"), settings, lambda s: Inputs(s["lr"] * factor, scale), CPU)
    calm = on(1.0)
    assert not calm["changed"] and calm["lr"] == default and len(calm["trials"]) == 1 and "safe" in calm["reason"]
    huge = on(1000.0)
    assert huge["changed"] and huge["lr"] == pytest.approx(default / 10)
    assert huge["trials"][0]["diverged"] and not huge["trials"][1]["diverged"]
    assert huge["trials"][0]["end_loss"] > 2 * huge["trials"][0]["start_loss"] and "diverged" in huge["reason"]


def test_the_image_task_lowers_a_diverging_default_rate_but_never_a_given_one(monkeypatch):
    spec = registry.spec("image", "mlp")
    _, settings, _, job, info = build("image", {**DIGITS, "model": "mlp", "epochs": 1})
    assert not info["recipe"]["lr_check"]["changed"] and settings["lr"] == spec.train_defaults["lr"]
    monkeypatch.setitem(spec.train_defaults, "lr", 1.0)     # a default far too high for these images
    _, settings, _, job, info = build("image", {**DIGITS, "model": "mlp", "epochs": 1})
    lr_check = info["recipe"]["lr_check"]
    assert lr_check["changed"] and settings["lr"] < 1.0 and settings["decided_by_recipe"] == ["lr"]
    assert job.optimizers["main"].param_groups[0]["lr"] == settings["lr"]
    assert "Learning rate" in recipes.sentence({"recipe": info["recipe"]})
    _, settings, _, _, info = build("image", {**DIGITS, "model": "mlp", "epochs": 1, "lr": 3.0})
    assert settings["lr"] == 3.0 and info["recipe"]["lr_check"]["trials"] == []
    assert "as the user set it" in info["recipe"]["lr_check"]["reason"]
