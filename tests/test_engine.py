"""Behaviour tests for the shared core: the training loop's schedule and budget, divergence,
checkpoints (round trip of nested state, atomic writes) and settings files."""
from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from deepskeptic import fileio
from deepskeptic.checkpoint import CHECKPOINT_FILE, load_state, save_state
from deepskeptic.engine import BestWeights, Diverged, Job, LoopSettings, fit, lr_factor
from deepskeptic.errors import UserError
from deepskeptic.runs import Run


class TinyJob(Job):
    """y = 2x with one weight; records the LR multiplier of every step."""

    def __init__(self, steps_per_epoch=5, step_sleep=0.0, val_sleep=0.0, nan_at_step=None):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.modules = {"model": self.model}
        self.optimizers = {"main": torch.optim.SGD(self.model.parameters(), lr=0.1)}
        self.steps_per_epoch, self.step_sleep, self.val_sleep = steps_per_epoch, step_sleep, val_sleep
        self.nan_at_step, self.steps, self.lrs = nan_at_step, 0, []

    def epoch_batches(self, epoch, generator):
        return [torch.rand(4, 1, generator=generator) for _ in range(self.steps_per_epoch)]

    def train_step(self, x, ctx):
        self.lrs.append(ctx.optimizers["main"].param_groups[0]["lr"] / 0.1)
        if self.step_sleep:
            time.sleep(self.step_sleep)
        loss = ((self.model(x) - 2 * x) ** 2).mean()
        ctx.backward_step(loss)
        self.steps += 1
        if self.nan_at_step is not None and self.steps >= self.nan_at_step:
            loss = torch.tensor(float("nan"))
        return len(x), {"loss": loss.detach()}

    def validate(self, epoch):
        if self.val_sleep:
            time.sleep(self.val_sleep)
        return {"loss": 0.0}


def _fit(job, tmp_path, **settings):
    return fit(job, LoopSettings(progress=False, **settings), seed=0, device=torch.device("cpu"),
               checkpoint_dir=tmp_path / "checkpoint")


# ------------------------------------------------------------------ LR schedule

def test_lr_factor_warms_up_then_decays_linearly_to_zero():
    s = LoopSettings(epochs=1, warmup=0.1)
    assert lr_factor(0.0, s) == 0.0
    assert lr_factor(0.05, s) == pytest.approx(0.5)
    assert lr_factor(0.1, s) == pytest.approx(1.0)
    assert lr_factor(0.55, s) == pytest.approx(0.5)
    assert lr_factor(1.0, s) == pytest.approx(0.0)
    assert lr_factor(1.5, s) == 0.0 and lr_factor(-1, s) == 0.0  # clamped
    assert lr_factor(0.5, LoopSettings(epochs=1, warmup=0.0, schedule="cosine")) == pytest.approx(0.5)
    assert lr_factor(0.9, LoopSettings(epochs=1, warmup=0.1, schedule="constant")) == 1.0


def test_epoch_schedule_spans_all_steps(tmp_path):
    job = TinyJob(steps_per_epoch=10)
    history = _fit(job, tmp_path, epochs=4, warmup=0.1)
    assert len(history) == 4 and [h["epoch"] for h in history] == [1, 2, 3, 4]
    expected = [lr_factor(i / 40, LoopSettings(epochs=4, warmup=0.1)) for i in range(40)]
    assert job.lrs == pytest.approx(expected)
    assert max(job.lrs) == pytest.approx(1.0) and job.lrs[-1] < 0.05
    assert history[-1]["lr_factor"] == 0.0  # the schedule ended exactly at the last step


def test_time_budget_stops_near_budget_and_schedule_spans_it(tmp_path):
    budget, step, val = 0.5, 0.02, 0.15
    job = TinyJob(steps_per_epoch=5, step_sleep=step, val_sleep=val)
    start = time.monotonic()
    history = _fit(job, tmp_path, time_budget=budget, warmup=0.1)
    wall = time.monotonic() - start
    trained = history[-1]["train_seconds"]
    assert budget <= trained < budget + 0.5, trained  # stops at the first step past the budget
    # validation is not counted: it took val seconds after each epoch on top of the training time
    assert wall >= trained + val * len(history) - 0.05
    assert max(job.lrs) > 0.7                      # the warm-up reached (nearly) the peak LR
    assert job.lrs[-1] < 0.3                       # and the decay ran to the end of the budget
    peak = job.lrs.index(max(job.lrs))
    after = job.lrs[peak:]
    assert all(a >= b for a, b in zip(after, after[1:]))  # monotone decay after the peak
    assert load_state(tmp_path / "checkpoint" / CHECKPOINT_FILE)["position"]["done"] is True


def test_fit_needs_exactly_one_of_epochs_and_budget(tmp_path):
    with pytest.raises(ValueError):
        _fit(TinyJob(), tmp_path)
    with pytest.raises(ValueError):
        _fit(TinyJob(), tmp_path, epochs=1, time_budget=1.0)


def test_non_finite_loss_stops_with_a_user_error(tmp_path):
    job = TinyJob(steps_per_epoch=5, nan_at_step=3)
    with pytest.raises(Diverged, match=r"diverged.*nan.*step 3.*--lr") as info:
        _fit(job, tmp_path, epochs=3)
    assert isinstance(info.value, UserError)  # -> exit code 2 with one line
    assert job.steps == 3                     # stopped at once, not at the end of the epoch


def test_fit_resume_continues_where_the_checkpoint_left_off(tmp_path):
    """A finished checkpoint resumed does no more steps; history comes back from the checkpoint."""
    job = TinyJob(steps_per_epoch=4)
    history = _fit(job, tmp_path, epochs=2)
    again = TinyJob(steps_per_epoch=4)
    resumed = fit(again, LoopSettings(epochs=2, progress=False), seed=0, device=torch.device("cpu"),
                  checkpoint_dir=tmp_path / "checkpoint", resume=True)
    assert again.steps == 0 and resumed == history
    assert torch.equal(again.model.weight, job.model.weight)


# ------------------------------------------------------------------ checkpoints

def _assert_same(a, b, where="state"):
    if isinstance(a, dict):  # an OrderedDict (state_dict) may come back as a plain dict
        assert isinstance(b, dict), where
    else:
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


def _optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    return model, opt


def test_checkpoint_round_trip_of_nested_state(tmp_path):
    model, opt = _optimizer_state()
    state = {
        "modules": {"model": model.state_dict()},
        "optimizers": {"main": opt.state_dict()},    # state keyed by int, betas a tuple
        "rng": torch.get_rng_state(), "generator": torch.Generator().manual_seed(3).get_state(),
        "position": {"epoch": 3, "batch": 7, "train_seconds": 1.25, "sums": {"loss": 2.5}, "done": False},
        "misc": {1: (2, 3.5, "s", None, True, [torch.arange(3), (torch.ones(2, dtype=torch.bfloat16),)]),
                 "nan": float("nan"), "inf": float("inf"), "empty": {}, "nested": [[], ()]},
        "history": [{"epoch": 1, "val_accuracy": 0.5}],
    }
    path = tmp_path / "ck" / CHECKPOINT_FILE
    save_state(path, state)
    loaded = load_state(path)
    _assert_same(state, loaded)
    assert list(loaded["optimizers"]["main"]["state"]) == [0, 1, 2, 3, 4, 5]   # int keys stay ints
    assert loaded["optimizers"]["main"]["param_groups"][0]["betas"] == (0.8, 0.95)
    # a fresh optimizer accepts the loaded state and continues identically
    model2, opt2 = _optimizer_state()
    opt2.load_state_dict(loaded["optimizers"]["main"])
    _assert_same(opt.state_dict(), opt2.state_dict())
    # the file is a plain safetensors file: no pickle anywhere
    assert all(isinstance(t, torch.Tensor) for t in load_file(path).values())


def test_checkpoint_of_tied_weights(tmp_path):
    """Modules that share a tensor (tied embeddings) can be checkpointed and restored."""
    emb, head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    whole = torch.arange(10.0)
    state = {"modules": {"emb": emb.state_dict(), "head": head.state_dict()},
             "views": [whole[:4], whole[4:], whole]}        # views into one storage
    save_state(tmp_path / CHECKPOINT_FILE, state)
    loaded = load_state(tmp_path / CHECKPOINT_FILE)
    _assert_same(state, loaded)
    emb2, head2 = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    head2.weight = emb2.weight
    emb2.load_state_dict(loaded["modules"]["emb"])
    head2.load_state_dict(loaded["modules"]["head"])
    assert torch.equal(head2.weight, emb.weight) and head2.weight is emb2.weight


def test_run_weights_of_tied_modules(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
            self.head.weight = self.emb.weight

    model = Tied()
    run = Run.create(tmp_path / "run")
    run.save_weights({"model": model, "other": nn.Linear(2, 2)})
    assert set(load_file(run.model_path)) == {"model.emb.weight", "model.head.weight", "other.weight", "other.bias"}
    again = Tied()
    run.load_weights({"model": again, "other": nn.Linear(2, 2)})
    assert torch.equal(again.emb.weight, model.emb.weight) and again.head.weight is again.emb.weight
    with pytest.raises(UserError, match="do not fit the model.*train it again"):   # e.g. a run of an older version
        run.load_weights({"model": nn.Linear(3, 5), "other": nn.Linear(2, 2)})


def test_checkpoint_write_killed_midway_leaves_previous_valid(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint" / CHECKPOINT_FILE
    save_state(path, {"position": {"epoch": 1}, "w": torch.ones(3)})
    # a kill -9 during a write leaves a torn temporary file beside the checkpoint
    (path.parent / f".{CHECKPOINT_FILE}.x1y2z3.tmp").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\":")
    # and an exception raised in the middle of a write (here: before the rename) changes nothing
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(fileio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, {"position": {"epoch": 2}, "w": torch.zeros(3)})
    monkeypatch.undo()
    loaded = load_state(path)
    assert loaded["position"] == {"epoch": 1} and torch.equal(loaded["w"], torch.ones(3))
    # the failed write cleaned up after itself; only the torn file of the 'kill' is left over
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{CHECKPOINT_FILE}.x1y2z3.tmp", CHECKPOINT_FILE]
    save_state(path, {"position": {"epoch": 3}})       # and the next write works
    assert load_state(path)["position"] == {"epoch": 3}


def test_corrupt_or_missing_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / CHECKPOINT_FILE
    with pytest.raises(UserError, match="no checkpoint"):
        load_state(path)
    save_state(path, {"w": torch.ones(100)})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(UserError, match="corrupt"):
        load_state(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="corrupt"):
        load_state(path)


def test_checkpoint_refuses_objects_it_cannot_store_safely(tmp_path):
    with pytest.raises(TypeError, match="cannot checkpoint"):
        save_state(tmp_path / CHECKPOINT_FILE, {"f": lambda: 0})
    assert not (tmp_path / CHECKPOINT_FILE).exists()


def test_best_weights_keep_the_lowest_score_and_survive_a_checkpoint():
    layer = nn.Linear(2, 1)
    best = BestWeights(layer)
    assert best.restore() is None                     # nothing offered: nothing to restore
    for epoch, score in enumerate([3.0, 1.0, 2.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(float(epoch))
        best.offer(score, epoch)
    copy = BestWeights(layer)
    copy.load(best.state(), torch.device("cpu"))      # as a resumed run would
    assert copy.restore() == 2 and torch.all(layer.weight == 2.0) and copy.score == 1.0
    off = BestWeights(layer, enabled=False)
    off.offer(0.0, 1)
    assert off.restore() is None
