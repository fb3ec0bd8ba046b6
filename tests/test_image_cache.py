"""The image-folder cache: a folder is decoded once into a memory-mapped file in the data cache,
reused while its files are unchanged, rebuilt when one changes, never used when torn; training
reads batches from it and gives the numbers the in-memory path gives."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import without_time
from deepskeptic.data import cache, images
from deepskeptic.data.images import load_image_data, load_image_files
from deepskeptic.tasks import get_task
from deepskeptic.tasks.common.pixels import channel_stats
from deepskeptic.tasks.image import data as image_data
from deepskeptic.training import resolve_settings, train


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


@pytest.fixture
def folder(tmp_path):
    """3 classes of 40 digits each as 8x8 PNGs (the digits set, so a network learns something)."""
    digits = load_image_data("digits", val_split=0)
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    root = tmp_path / "digits-png"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i, j in enumerate(np.flatnonzero(y == c)[:40]):
            Image.fromarray(x[j, 0]).save(root / f"class{c}" / f"{i:03d}.png")
    return root


def decodes(monkeypatch) -> list[int]:
    """Counts the folder decodes from now on (each appends the number of files)."""
    calls: list[int] = []
    original = images._decode_folder

    def counting(root, paths, *args):
        calls.append(len(paths))
        return original(root, paths, *args)
    monkeypatch.setattr(images, "_decode_folder", counting)
    return calls


def everything(d) -> list[np.ndarray]:
    return [np.asarray(a) for a in (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test)]


def test_decoded_once_then_reused_and_equal_to_the_file_decoder(folder, cache_dir, monkeypatch):
    calls = decodes(monkeypatch)
    first = load_image_data(str(folder), val_split=0.25)
    assert calls == [120] and len(list(cache_dir.glob("*.u8"))) == 1
    again = load_image_data(str(folder), val_split=0.25)
    mapped = load_image_data(str(folder), val_split=0.25, mapped=True)
    assert calls == [120]  # both from the cache
    for a, b in zip(everything(first), everything(again)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(mapped.x_train, cache.MappedImages) and mapped.x_train.shape == first.x_train.shape
    np.testing.assert_array_equal(mapped.x_train.numpy(), first.x_train.numpy())
    np.testing.assert_array_equal(mapped.x_test[torch.tensor([3, 0, 7])].numpy(), first.x_test[[3, 0, 7]].numpy())
    np.testing.assert_array_equal(mapped.x_val[2].numpy(), first.x_val[2].numpy())
    # every pixel as the per-file decoder (predict's) reads it
    files = sorted(str(p) for p in folder.rglob("*.png"))
    reference, _ = load_image_files(files, image_size=8, channels=1)
    cached = np.concatenate([first.x_train.numpy(), first.x_val.numpy(), first.x_test.numpy()])
    assert sorted(map(bytes, cached)) == sorted(map(bytes, reference.numpy()))
    # a view pickles as its file and rows (a worker process reopens it)
    view = pickle.loads(pickle.dumps(mapped.x_test))
    np.testing.assert_array_equal(view.numpy(), mapped.x_test.numpy())
    # another --image-size is another cache file
    load_image_data(str(folder), image_size=6)
    assert calls == [120, 120] and len(list(cache_dir.glob("*.u8"))) == 2


def test_rebuilt_after_a_file_changes(folder, cache_dir, monkeypatch):
    calls = decodes(monkeypatch)
    before = load_image_data(str(folder), val_split=0)
    changed = folder / "class1" / "005.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = load_image_data(str(folder), val_split=0)
    assert calls == [120, 120] and len(list(cache_dir.glob("*.u8"))) == 1  # replaced, not added
    white = lambda d: int((np.concatenate([d.x_train.numpy(), d.x_test.numpy()]) == 255).all(axis=(1, 2, 3)).sum())
    assert white(before) == 0 and white(after) == 1
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "class2" / "new.png")  # a file added
    grown = load_image_data(str(folder), val_split=0)
    assert calls == [120, 120, 121] and len(grown.y_train) + len(grown.y_test) == 121


def test_a_torn_cache_is_never_used(folder, cache_dir, monkeypatch):
    reference = everything(load_image_data(str(folder)))
    calls = decodes(monkeypatch)
    (path,) = cache_dir.glob("*.u8")
    size = path.stat().st_size
    for tear in (lambda f: f.truncate(size - 7),            # the end (its description) cut off
                 lambda f: f.truncate(size // 2),            # half the pixels missing
                 lambda f: (f.seek(0), f.write(b"\0" * 8))):  # the header zeroed
        with open(path, "r+b") as f:
            tear(f)
        for a, b in zip(everything(load_image_data(str(folder))), reference):
            np.testing.assert_array_equal(a, b)
    assert calls == [120] * 3
    # A build that dies half-way leaves no cache (and no temporary file) behind.
    path.unlink()
    monkeypatch.setattr(images, "_decode_rows", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        load_image_data(str(folder))
    assert list(cache_dir.iterdir()) == []


def test_unreadable_files_are_remembered_with_the_cache(folder, capsys):
    (folder / "class0" / "broken.png").write_bytes(b"not a png")
    seen = []
    for _ in range(2):  # decoded, then from the cache: the same warning and the same skipped list
        d = load_image_data(str(folder))
        # PIL's reason names the file (cut at 120 characters: long temporary paths are shortened)
        reason = "cannot identify image file '" + str(folder / "class0" / "broken.png") + "'"
        assert d.skipped == ["class0/broken.png (" + reason[:120] + ")"]
        seen.append(d.skipped)
        assert "warning: skipped 1 unreadable image(s): class0/broken.png" in capsys.readouterr().err
        assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 120
    assert seen[0] == seen[1]


def test_decoding_in_worker_processes_equals_one_process(folder, monkeypatch, tmp_path):
    serial = everything(load_image_data(str(folder)))
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(images, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(images, "CHUNK_FILES", 16)   # 8 chunks over the pool
    monkeypatch.setattr(cache, "pool_workers", lambda items, least: 2)
    for a, b in zip(everything(load_image_data(str(folder))), serial):
        np.testing.assert_array_equal(a, b)


def test_a_folder_run_reads_the_memory_map_and_equals_the_in_memory_run(folder, tmp_path, one_thread):
    task = get_task("image")
    settings = resolve_settings(task, {"data": str(folder), "model": "mlp", "epochs": 2, "progress": False}, None)
    mapped = image_data.prepare(dict(settings))
    assert isinstance(mapped.data.x_train, cache.MappedImages)
    in_memory = load_image_data(str(folder), val_split=settings["val_split"])
    assert isinstance(in_memory.x_train, torch.Tensor)
    memory = image_data.Prepared(in_memory, *channel_stats(in_memory.x_train))
    assert mapped.mean == pytest.approx(memory.mean, rel=1e-6) and mapped.std == pytest.approx(memory.std, rel=1e-6)
    a = train(task, dict(settings), prepared=mapped, out=tmp_path / "mapped").metrics
    b = train(task, dict(settings), prepared=memory, out=tmp_path / "memory").metrics
    assert a["test_accuracy"] > 0.6
    a, b = without_time(a), without_time(b)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == (pytest.approx(b[k], rel=1e-5) if isinstance(b[k], float) else b[k]), k
