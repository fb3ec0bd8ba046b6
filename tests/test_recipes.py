"""Recipes sized to the data and the budget: smaller models for smaller budgets, never over an
explicit setting, recorded with the reason; the image hook on real models, leaving the RNG alone."""
from __future__ import annotations

import pytest
import torch

from deepskeptic import recipes
from deepskeptic.recipes import Rung
from deepskeptic.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")  # as training runs them on a busy machine

LADDER = [Rung("big", {"widths": [16, 32, 64]}), Rung("medium", {"widths": [8, 16, 32]}),
          Rung("small", {"widths": [4, 8, 16], "hidden": 64})]
COST = {"big": 4e-3, "medium": 1e-3, "small": 2.5e-4}   # seconds per example, as a probe would measure


def choose(examples, budget, explicit=()):
    probed = []

    def measure(rung):
        probed.append(rung.name)
        return COST[rung.name]
    return recipes.choose(LADDER, examples=examples, time_budget=budget, seconds_per_example=measure,
                          explicit=explicit), probed


@pytest.mark.parametrize("examples,budget,chosen", [
    (1_000, 100.0, "big"),       # 4 s an epoch: 25 epochs fit
    (10_000, 100.0, "medium"),   # big: 2.5 epochs; medium: 10
    (60_000, 100.0, "small"),    # medium: 1.7; small: 6.7
    (60_000, 20.0, "small"),     # nothing fits 5 epochs: the fastest, and the reason says so
    (60_000, 1000.0, "medium"),  # a larger budget affords a larger model on the same data
])
def test_smaller_budgets_and_larger_data_get_smaller_models(examples, budget, chosen):
    record, probed = choose(examples, budget)
    assert record["chosen"] == chosen and record["model_config"] == next(r.model_config for r in LADDER if r.name == chosen)
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
    record, probed = choose(60_000, 100.0, explicit={"widths"})
    assert record["chosen"] is None and probed == [] and "kept as set: widths" in record["reason"]
    record, probed = choose(60_000, 100.0, explicit={"hidden"})  # the rungs that do not touch it stay open
    assert probed == ["big", "medium"] and record["chosen"] == "medium"


def image_batch(n=64, size=8):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8), torch.randint(0, 10, (n,))


def test_the_image_hook_measures_real_models_writes_the_choice_and_leaves_the_rng_alone():
    task = get_task("image")
    shape = {"channels": 1, "image_size": 8, "num_classes": 10}
    x, y = image_batch()
    settings = {"model": "cnn", "model_config": {}, "time_budget": 1e9}
    before = torch.get_rng_state()
    record = recipes.fit_to_budget(task, settings, shape, 1000, x, y, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)
    assert record["chosen"].startswith("widths 16-32-64") and settings["model_config"] == {"widths": [16, 32, 64]}
    assert record["probes"][0]["seconds_per_example"] > 0
    starved = {"model": "cnn", "model_config": {}, "time_budget": 1e-6}
    record = recipes.fit_to_budget(task, starved, shape, 1000, x, y, torch.device("cpu"))
    assert len(record["probes"]) == 3 and "only" in record["reason"]  # nothing fits: the fastest measured
    rung = next(r for r in recipes.ladder("image", "cnn") if r.name == record["chosen"])
    assert starved["model_config"] == rung.model_config
    chosen_widths = starved["model_config"]["widths"]
    again = recipes.fit_to_budget(task, starved, shape, 1000, x, y, torch.device("cpu"))  # a resumed run
    assert again["chosen"] is None and again["probes"] == [] and starved["model_config"]["widths"] == chosen_widths


def test_a_layout_the_images_are_too_small_for_is_never_chosen():
    task = get_task("image")
    x, y = image_batch()
    settings = {"model": "alexnet", "model_config": {}, "time_budget": 1e9}
    record = recipes.fit_to_budget(task, settings, {"channels": 1, "image_size": 8, "num_classes": 10}, 500, x, y,
                                   torch.device("cpu"))
    assert record["probes"][0]["seconds_per_example"] is None and settings["model_config"] == {"variant": "small"}
