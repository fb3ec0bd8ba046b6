"""Every registered image model: forward and backward at several input sizes, and the AlexNet
variant chosen from the input size (recorded in config.json)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepskeptic.cli import main
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.image import AlexNetConfig, alexnet_variant
from deepskeptic.tasks import get_task

IMAGE_MODELS = registry.names("image")
SIZES = [(8, 1), (28, 3), (64, 1)]  # (pixels per side, channels)


def test_registry_has_the_models_the_task_promises():
    assert {"logreg", "mlp", "cnn", "alexnet"} <= set(IMAGE_MODELS)
    roles = {name: registry.spec("image", name).role for name in IMAGE_MODELS}
    assert roles["cnn"] == roles["alexnet"] == "deep" and roles["mlp"] == roles["logreg"] == "baseline"


@pytest.mark.parametrize("size,channels", SIZES, ids=[f"{s}px" for s, _ in SIZES])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_and_backward(name, size, channels):
    torch.manual_seed(0)
    task = get_task("image")
    shape = {"channels": channels, "image_size": size, "num_classes": 7}
    try:
        model = task.example_model(name, shape)
    except UserError as exc:  # a model may refuse images too small for it, but only with a clear message
        assert f"{size} px" in str(exc) and name in str(exc)
        pytest.skip(str(exc))
    x = torch.randn(3, channels, size, size, requires_grad=True)
    model.train()
    logits = model(x)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 6])).backward()
    params = list(model.parameters())
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():  # eval mode is deterministic (dropout off, BN running statistics)
        assert torch.equal(model(x), model(x))
        assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_unknown_model_setting_is_refused(name):
    with pytest.raises(UserError, match="unknown setting.*no_such_key"):
        registry.make_config("image", name, no_such_key=1)


def test_model_settings_of_the_wrong_kind_are_refused():
    for key, bad, kind in (("dropout", "0.1", "a number"), ("dropout", True, "a number"),
                           ("hidden", [64, "x"], "a list of numbers"), ("hidden", 3, "a list of numbers")):
        with pytest.raises(UserError, match=f"model setting {key} of 'mlp' must be {kind}"):
            registry.make_config("image", "mlp", **{key: bad})
    assert registry.make_config("image", "mlp", dropout=0, hidden=[32, 16]).dropout == 0   # an int is a number


def test_alexnet_variant_follows_the_input_size():
    assert alexnet_variant(AlexNetConfig(image_size=8)) == "small"
    assert alexnet_variant(AlexNetConfig(image_size=63)) == "small"
    assert alexnet_variant(AlexNetConfig(image_size=64)) == "original"
    assert alexnet_variant(AlexNetConfig(image_size=224)) == "original"
    assert alexnet_variant(AlexNetConfig(image_size=224, variant="small")) == "small"
    original = registry.create("image", "alexnet", in_channels=3, image_size=224, num_classes=1000)
    # the 2012 network: ~62 million parameters, 11x11 stride-4 first convolution, 4096-wide FC layers
    assert 60e6 < registry.count_params(original) < 63e6
    convs = [m for m in original.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5 and convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    fcs = [m for m in original.modules() if isinstance(m, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [4096, 4096, 1000]


def _folder(root, size, n=6):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 100, (size, size), dtype=np.uint8) + (120 if c == "b" else 0)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("image_size,variant", [(16, "small"), (64, "original")])
def test_alexnet_variant_recorded_in_config_json(tmp_path, capsys, image_size, variant):
    data = _folder(tmp_path / "data", 64)
    out = tmp_path / "run"
    rc = main(["train", "image", "--data", str(data), "--model", "alexnet", "--epochs", "1",
               "--image-size", str(image_size), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["variant"] == variant
    assert config["model_config"]["image_size"] == image_size and config["model_config"]["in_channels"] == 1
    assert config["data_info"]["image_size"] == image_size
