"""Threads are chosen, not inherited: the rule on faked cores, quotas and load; what config.json
records; an explicit --threads (or OMP_NUM_THREADS) wins; one warning when oversubscribed."""
from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import cli, user_error
from deepskeptic import threads


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Every test here changes torch's pool; put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("affinity,quota,load,chosen", [
    (4, None, 0.0, 4),     # a quiet machine: every core
    (4, None, 1.2, 3),     # one busy core's worth taken by others: the rest
    (4, None, 1.6, 2),     # rounded to the nearest whole core
    (2, None, 5.0, 1),     # oversubscribed: never fewer than one
    (16, 2.0, 0.0, 2),     # a container's cgroup quota caps the affinity
    (16, 1.5, 0.0, 2),     # a fractional quota rounds to the nearest core
    (16, 0.3, 0.0, 1),     # ... and never below one
])
def test_the_rule_on_faked_cores_quota_and_load(affinity, quota, load, chosen):
    choice = threads.choose_threads(None, affinity=affinity, quota=quota, load=load, environ={})
    assert choice.chosen == chosen and choice.requested is None
    assert choice.usable_cores == threads.usable_cores(affinity, quota)
    assert f"{load:.2f}" in choice.reason


def test_oversubscribed_means_more_work_than_usable_cores():
    busy = threads.choose_threads(None, affinity=2, load=2.0, environ={})
    quiet = threads.choose_threads(None, affinity=2, load=0.9, environ={})
    assert busy.oversubscribed and not quiet.oversubscribed


def test_an_explicit_count_and_the_environment_win_over_the_rule():
    explicit = threads.choose_threads(3, affinity=2, load=5.0, environ={"OMP_NUM_THREADS": "1"})
    assert (explicit.chosen, explicit.requested, explicit.reason) == (3, 3, "set by --threads")
    env = threads.choose_threads(None, affinity=8, load=0.0, environ={"OMP_NUM_THREADS": "1"})
    assert env.chosen == 1 and "OMP_NUM_THREADS=1" in env.reason


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "self2").write_text("0::/job\n")
    assert threads.cgroup_cpu_quota(v2, tmp_path / "self2") == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "job").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu,cpuacct" / "job" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self1").write_text("4:memory:/job\n3:cpu,cpuacct:/job\n")
    assert threads.cgroup_cpu_quota(v1, tmp_path / "self1") == 2.0
    (tmp_path / "none").write_text("0::/\n")
    assert threads.cgroup_cpu_quota(tmp_path / "empty", tmp_path / "none") is None


def test_measured_load_is_a_number_of_cores():
    load = threads.other_load(0.05)
    assert load is None or 0 <= load < 10_000


def test_applied_to_torch_and_one_warning_per_process(monkeypatch, capsys):
    monkeypatch.setattr(threads, "_warned", False)
    record = threads.apply_threads(None, affinity=2, load=4.0, environ={})
    assert torch.get_num_threads() == 1 and record["chosen"] == 1 and record["oversubscribed"]
    threads.apply_threads(None, affinity=2, load=4.0, environ={})
    err = capsys.readouterr().err
    assert err.count("oversubscribed") == 1 and "--threads" in err
    resumed = threads.apply_threads(None, previous={"chosen": 2, "reason": "x"})
    assert torch.get_num_threads() == 2 and resumed["reason"].startswith("as when the run started")


def test_an_explicit_threads_wins_and_is_recorded_in_config_json(tmp_path, capsys):
    # the rule's own record in config.json (requested None) is checked by tests/test_starved.py's comparison
    base = ["train", "image", "--data", "digits", "--model", "logreg", "--limit", "200", "--no-progress"]
    rc, out, err = cli(capsys, *base, "--threads", "1", "--out", tmp_path / "one")
    assert rc == 0, err
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    assert config["threads"]["chosen"] == 1 and config["threads"]["reason"] == "set by --threads"
    assert config["settings"]["threads"] == 1 and "1 threads" in config["device_name"]
    user_error(capsys, *base, "--threads", "0", "--out", tmp_path / "zero", match="threads")
