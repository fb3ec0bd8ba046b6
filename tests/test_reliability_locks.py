"""One process writes a run folder at a time (issue 16, classes 6 and 3): a second `train` into the
same --out or a second `--resume` of a run is refused with one line naming the holder; a lock left
by a dead process (kill -9), or by another machine, is taken over with a note; the lock goes on
exit, on errors and on Ctrl-C. Atomic writes keep the user's umask and make the rename durable; a
full disk is one line naming the file, with the old file intact; so are the other OS faults, and a
broken pipe (`| head`) ends quietly."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli, user_error
from deepskeptic import fileio
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from reliability_helpers import TRAIN_DIGITS, copy_run, digits_run, quiet_threads


def _hold(folder: str, ready, release) -> None:  # in a forked child
    with Run(folder).lock():
        ready.send("locked")
        release.recv()


@pytest.fixture
def holder():
    """``holder(folder)``: another process holding ``folder``'s lock, until ``.kill()`` (SIGKILL:
    no cleanup) or the end of the test."""
    children = []

    def start(folder: Path):
        ctx = multiprocessing.get_context("fork")
        ready_recv, ready_send = ctx.Pipe(duplex=False)
        release_recv, release_send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_hold, args=(str(folder), ready_send, release_recv), daemon=True)
        child.start()
        assert ready_recv.poll(30) and ready_recv.recv() == "locked"
        child.release = release_send
        children.append(child)
        return child
    yield start
    for child in children:
        if child.is_alive():
            child.kill()
        child.join(10)


@pytest.fixture
def fast_report(monkeypatch):
    """Reports are slow to render and not what these tests are about."""
    from deepskeptic.tasks.image import ImageTask
    monkeypatch.setattr(ImageTask, "write_report", lambda self, run, prepared=None, metrics=None:
                        run.write_report("<html></html>"))


def incomplete_copy(tmp_path_factory, tmp_path) -> Path:
    run = copy_run(digits_run(tmp_path_factory), tmp_path)
    (run / "metrics.json").unlink()
    return run


def test_a_second_train_into_the_same_out_is_refused(tmp_path, capsys, monkeypatch, holder, fast_report):
    quiet_threads(monkeypatch)
    out = tmp_path / "out"
    child = holder(out)
    line = user_error(capsys, *TRAIN_DIGITS, "--out", out, match=r"run folder .*out is in use by process")
    assert str(child.pid) in line and socket.gethostname() in line
    assert not (out / "config.json").exists()
    child.kill()                                   # kill -9: its lock file stays, its lock does not
    child.join(10)
    assert (out / ".lock").exists()
    rc, _, err = cli(capsys, *TRAIN_DIGITS, "--out", out)
    assert rc == 0, err
    assert f"locked by process {child.pid}" in err and "taking the lock over" in err
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


def test_a_second_resume_of_one_run_is_refused(tmp_path_factory, tmp_path, capsys, holder, fast_report):
    run = incomplete_copy(tmp_path_factory, tmp_path)
    child = holder(run)
    user_error(capsys, "train", "--resume", run, match=rf"{run.name} is in use by process {child.pid}")
    child.release.send("done")                     # a clean exit removes its lock
    child.join(10)
    assert not (run / ".lock").exists()
    rc, _, err = cli(capsys, "train", "--resume", run)
    assert rc == 0 and "lock" not in err, err
    user_error(capsys, "train", "--resume", run, match="already complete")


COMPARE_DIGITS = ["compare", "image", "--data", "digits", "--models", "logreg", "--seeds", "1", "--epochs", "1",
                  "--no-progress"]


def test_a_second_compare_into_the_same_out_is_refused(tmp_path, capsys, monkeypatch, holder, fast_report):
    """Two `compare`s into one folder would interleave their runs and summaries: the second is
    refused with one line, and writes nothing; once the first is killed (-9), the same compare
    takes the stale lock over and completes."""
    quiet_threads(monkeypatch)
    out = tmp_path / "cmp"
    child = holder(out)                            # a compare at work in the folder
    line = user_error(capsys, *COMPARE_DIGITS, "--out", out,
                      match=rf"comparison folder .*cmp is in use by process {child.pid} on ")
    assert "wait for it to finish" in line
    assert [p.name for p in out.iterdir()] == [fileio.LOCK_NAME]
    child.kill()
    child.join(10)
    rc, stdout, err = cli(capsys, *COMPARE_DIGITS, "--out", out)
    assert rc == 0, err
    assert f"locked by process {child.pid}" in err and "taking the lock over" in err
    assert (out / "summary.json").is_file() and (out / "logreg-seed0" / "metrics.json").is_file()
    assert not (out / fileio.LOCK_NAME).exists() and not (out / "logreg-seed0" / fileio.LOCK_NAME).exists()


def test_a_compare_that_fails_leaves_no_empty_folder(tmp_path, capsys):
    out = tmp_path / "cmp"
    user_error(capsys, "compare", "image", "--data", tmp_path / "nowhere", "--models", "logreg", "--out", out,
               match="does not exist")
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    user_error(capsys, *COMPARE_DIGITS, "--out", tmp_path / "file", match="exists and is a file")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, **info) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / fileio.LOCK_NAME).write_text(json.dumps(info))


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "pid-only file system"])
def test_stale_locks_are_taken_over_and_live_ones_refused(tmp_path, capsys, monkeypatch, flock):
    if not flock:       # a file system without flock: the pid and host in the file decide
        monkeypatch.setattr(fileio, "_try_flock", lambda fd: None)
    here = socket.gethostname()
    write_lock(tmp_path / "dead", pid=dead_pid(), host=here)
    with Run(tmp_path / "dead").lock():
        info = json.loads((tmp_path / "dead" / fileio.LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == here
    assert "is not running any more; taking the lock over" in capsys.readouterr().err
    assert not (tmp_path / "dead" / fileio.LOCK_NAME).exists()
    write_lock(tmp_path / "away", pid=os.getpid(), host="another-host.example")
    with Run(tmp_path / "away").lock():
        pass
    err = capsys.readouterr().err
    assert "on another-host.example" in err and "taking the lock over" in err
    write_lock(tmp_path / "garbage")
    (tmp_path / "garbage" / fileio.LOCK_NAME).write_bytes(b"\x00not json")
    with Run(tmp_path / "garbage").lock():
        pass
    if not flock:       # a live process of this host, without flock to ask: refused
        write_lock(tmp_path / "live", pid=os.getppid(), host=here)
        with pytest.raises(UserError, match=rf"in use by process {os.getppid()} on {here}"):
            with Run(tmp_path / "live").lock():
                pass


def test_the_lock_is_released_on_errors_and_ctrl_c(tmp_path_factory, tmp_path, capsys, monkeypatch, fast_report):
    for exc in (UserError("no"), KeyboardInterrupt(), RuntimeError("bug")):
        with pytest.raises(type(exc)):
            with Run(tmp_path / "f").lock():
                assert (tmp_path / "f" / fileio.LOCK_NAME).exists()
                raise exc
        assert not (tmp_path / "f" / fileio.LOCK_NAME).exists()
    from deepskeptic.tasks.image import ImageTask
    run = incomplete_copy(tmp_path_factory, tmp_path)

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)      # Ctrl-C while the run's folder is written
    monkeypatch.setattr(ImageTask, "finish", interrupted)
    rc, _, err = cli(capsys, "train", "--resume", run)
    assert rc == 130 and not (run / ".lock").exists(), err
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))


def test_a_symlink_as_lock_file_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / fileio.LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="symbolic link"):
        with Run(tmp_path / "run").lock():
            pass
    assert not (tmp_path / "elsewhere").exists()


# --- atomic writes -------------------------------------------------------------------------

def test_atomic_writes_keep_the_umask_and_existing_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write_text(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o640
        os.chmod(tmp_path / "new.json", 0o604)
        fileio.atomic_write_text(tmp_path / "new.json", "{}\n")
        assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o604
        os.umask(0o002)
        fileio.atomic_write_bytes(tmp_path / "sub" / "w.bin", b"x")
        assert stat.S_IMODE(os.stat(tmp_path / "sub" / "w.bin").st_mode) == 0o664
    finally:
        os.umask(old)


def test_a_run_folder_is_written_with_the_umask(tmp_path_factory):
    run = digits_run(tmp_path_factory)
    expected = 0o666 & ~fileio.current_umask()
    for name in ("config.json", "metrics.json", "history.jsonl", "model.safetensors", "checkpoint/state.safetensors"):
        assert stat.S_IMODE(os.stat(run / name).st_mode) == expected, name


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    fileio.atomic_write_text(tmp_path / "a.txt", "a")
    assert synced == [False, True]           # the file's data, then the folder's entry


def test_no_space_left_is_one_line_naming_the_file_and_the_old_file_is_intact(tmp_path_factory, tmp_path,
                                                                              capsys, monkeypatch, fast_report):
    target = tmp_path / "keep.json"
    target.write_text("old")
    real = os.fsync

    def full(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"no space left on the device to write .*keep\.json"):
        fileio.atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.json"]
    run = incomplete_copy(tmp_path_factory, tmp_path)
    before = (run / "model.safetensors").read_bytes()
    user_error(capsys, "train", "--resume", run, match=r"no space left on the device to write .*run\d+/")
    assert (run / "model.safetensors").read_bytes() == before and not (run / ".lock").exists()


# --- operating-system faults at the command line ------------------------------------------------

def test_a_broken_pipe_ends_quietly(capsys, monkeypatch):
    """`deepskeptic datasets | head -1`: stdout closes early; no traceback, no message."""
    import io

    from deepskeptic.cli import main

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["datasets"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fault, match", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/set/a.png"), r"permission denied: /data/set/a\.png"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/model.safetensors"), r"no space left .*/runs/x/"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), r"read-only file system: /ro/out"),
    (OSError(errno.EIO, "Input/output error", "/dev/bad\nerror: forged"), r"Input/output error: /dev/bad\\nerror"),
    (MemoryError(), r"out of memory"),
])
def test_os_faults_are_one_line_naming_the_file(capsys, monkeypatch, fault, match):
    from deepskeptic import cli as cli_module

    def failing(args):
        raise fault
    monkeypatch.setitem(cli_module.COMMANDS, "datasets", failing)
    user_error(capsys, "datasets", match=match)
