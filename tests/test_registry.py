"""Every (task, model) of the registry, tested the day it is registered (timm's lesson): it builds
at the task's example input shape, refuses unknown settings, runs a forward pass (networks), and the
fitted-in-one-step flag is honoured by training and compare."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from deepskeptic.compare import _seeds_for
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.tasks import TASKS
from deepskeptic.training import resolve_settings

SPECS = [pytest.param(s, id=f"{s.task}-{s.name}") for s in registry.specs()]


def _config(spec, module: nn.Module) -> dict:
    """The config the module was built with (tasks fill the shape's fields)."""
    for attr in ("cfg", "config"):
        cfg = getattr(module, attr, None)
        if dataclasses.is_dataclass(cfg):
            return dataclasses.asdict(cfg)
    return dataclasses.asdict(spec.config_cls())


def example_inputs(spec, shape: dict, module: nn.Module) -> tuple:
    """A batch of two examples in the form the model reads (``spec.reads``)."""
    cfg = {**_config(spec, module), **shape}
    torch.manual_seed(0)
    b = 2
    if spec.reads == "pixels":
        return (torch.randn(b, cfg["channels"], cfg["image_size"], cfg["image_size"]),)
    if spec.reads == "latent":
        return (torch.randn(b, module.latent_dim),)
    if spec.reads == "windows":
        return (torch.randn(b, cfg.get("lookback") or 24, cfg.get("input_size") or cfg.get("features") or 1),)
    if spec.reads == "chars":
        ids = torch.randint(1, cfg["vocab_size"], (b, 16))
        return (ids, torch.tensor([16, 9])) if spec.task == "text" else (ids,)
    if spec.reads == "ngram-counts":
        return (torch.rand(b, cfg["num_features"]),)
    if spec.reads in ("log-mel", "pooled-log-mel"):
        return (torch.randn(b, 60, cfg["n_mels"]), torch.tensor([60, 41]))
    raise AssertionError(f"no example input for reads={spec.reads!r}: add one when registering a new input form")


def _finite(out) -> bool:
    if isinstance(out, torch.Tensor):
        return bool(torch.isfinite(out.float()).all()) and out.numel() > 0
    return all(_finite(o) for o in out if isinstance(o, (torch.Tensor, tuple, list)))


@pytest.mark.parametrize("spec", SPECS)
def test_every_model_builds_at_the_example_shape_and_refuses_unknown_settings(spec):
    task = TASKS[spec.task]
    shape = task.input_shape(None)
    module = task.example_model(spec.name, shape)
    assert isinstance(module, nn.Module)
    with pytest.raises(UserError, match="unknown setting"):
        task.create_model(spec.name, {"no_such_setting": 1}, shape)
    if spec.one_step:
        assert registry.count_params(module) == 0, "a model fitted in one step has no trained parameters"
        return
    assert registry.count_params(module) > 0
    module.eval()
    with torch.no_grad():
        out = module(*example_inputs(spec, shape, module))
    assert _finite(out)


@pytest.mark.parametrize("spec", SPECS)
def test_one_step_models_get_one_epoch_no_budget_and_one_seed(spec):
    task = TASKS[spec.task]
    settings = resolve_settings(task, {"data": "x", "model": spec.name, "time_budget": 30.0}, None)
    if spec.one_step:
        assert settings["epochs"] == 1 and settings["time_budget"] is None
        assert _seeds_for(task, spec.name, 3) == 1
    else:
        assert settings["time_budget"] == 30.0 and settings["epochs"] is None
        assert _seeds_for(task, spec.name, 3) == 3


def test_registration_checks_its_metadata():
    @dataclasses.dataclass
    class Cfg:
        width: int = 1
    with pytest.raises(ValueError, match="role"):
        registry.register("image", "typo-role", Cfg, description="", role="deeep", reads="pixels")
    with pytest.raises(ValueError, match="reads"):
        registry.register("image", "typo-reads", Cfg, description="", role="deep", reads="pixel")
    assert ("image", "typo-role") not in registry._REGISTRY and ("image", "typo-reads") not in registry._REGISTRY


def test_every_task_declares_its_extra_commands():
    from deepskeptic.tasks.base import EXTRA_COMMANDS
    for task in TASKS.values():
        assert task.commands <= set(EXTRA_COMMANDS), task.name
        for command in task.commands:
            assert type(task).__dict__.get(command) is not None, f"{task.name} declares {command} but has none"
