"""Behaviour tests for IDX files and image data sets (digits, Fashion-MNIST, folders)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepskeptic.data.idx import read_idx, write_idx
from deepskeptic.data.images import image_datasets, load_image_data, load_image_files
from deepskeptic.errors import UserError


# ------------------------------------------------------------------ IDX

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16])
def test_idx_round_trip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 4) * 7 - 20).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / "a.idx"
    write_idx(p, a, gzip=gz)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == gz
    b = read_idx(p)
    assert b.dtype == a.dtype and b.shape == a.shape and b.flags.writeable
    np.testing.assert_array_equal(a, b)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    p = tmp_path / "labels.gz"
    write_idx(p, np.array([1, 2, 3], dtype=np.uint8), gzip=False)
    np.testing.assert_array_equal(read_idx(p), [1, 2, 3])


def test_idx_corrupt_files_name_the_file(tmp_path):
    a = np.zeros((10, 5, 5), dtype=np.uint8)
    raw = tmp_path / "raw"
    write_idx(raw, a, gzip=False)
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(UserError, match=r"raw.*truncated"):
        read_idx(raw)
    gz = tmp_path / "img.gz"
    write_idx(gz, a, gzip=True)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(UserError, match="img.gz"):
        read_idx(gz)
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(UserError, match="bad.*magic"):
        read_idx(bad)
    with pytest.raises(UserError, match="missing"):
        read_idx(tmp_path / "missing")


# ------------------------------------------------------------------ Fashion-MNIST

def _fake_fashion(root: Path, n_train=50, n_test=20):
    d = root / "fashion-mnist"
    rng = np.random.default_rng(0)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte.gz", (np.arange(n_train) % 10).astype(np.uint8))
    # the test set is recognisable: every pixel is 7; stored raw (no .gz) on purpose
    write_idx(d / "t10k-images-idx3-ubyte", np.full((n_test, 28, 28), 7, dtype=np.uint8), gzip=False)
    write_idx(d / "t10k-labels-idx1-ubyte", (np.arange(n_test) % 10).astype(np.uint8), gzip=False)
    return d


def test_fashion_mnist_from_data_dir(tmp_path, monkeypatch):
    d = _fake_fashion(tmp_path)
    monkeypatch.setenv("DEEPSKEPTIC_DATA", str(tmp_path))
    data = load_image_data("fashion-mnist", val_split=0.2)
    assert data.classes[0] == "t-shirt" and data.classes[-1] == "ankle-boot" and data.num_classes == 10
    assert data.x_train.shape == (40, 1, 28, 28) and data.x_val.shape == (10, 1, 28, 28)
    assert data.x_test.shape == (20, 1, 28, 28) and bool((data.x_test == 7).all())
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert data.source == str(d)
    fm = next(x for x in image_datasets() if x["name"] == "fashion-mnist")
    assert fm["available"] and fm["location"] == str(d)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    import deepskeptic.data.images as images

    monkeypatch.setattr(images, "_fashion_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_image_data("fashion-mnist")
    assert not next(x for x in image_datasets() if x["name"] == "fashion-mnist")["available"]


# ------------------------------------------------------------------ digits

def test_digits_shapes_and_fixed_split():
    a = load_image_data("digits", seed=0)
    b = load_image_data("digits", seed=123)
    assert a.classes == [str(i) for i in range(10)] and a.channels == 1 and a.image_size == 8
    assert a.x_test.shape == (360, 1, 8, 8)
    assert len(a.y_train) + len(a.y_val) == 1437 and len(a.y_val) == 144
    assert int(a.x_train.max()) == 255
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_digits_no_validation_limit_and_resize():
    d = load_image_data("digits", val_split=0, limit=50, image_size=16)
    assert d.x_val.shape == (0, 1, 16, 16) and d.y_val.shape == (0,)
    assert d.x_train.shape == (50, 1, 16, 16) and d.x_test.shape == (360, 1, 16, 16)
    assert set(d.y_train.tolist()) == set(range(10))  # limit is stratified
    for bad in (1.0, -0.1):
        with pytest.raises(UserError, match="validation split"):
            load_image_data("digits", val_split=bad)


# ------------------------------------------------------------------ folders

def _gray(v=128, size=(10, 10)):
    return Image.new("L", size, v)


def _make(folder: Path, classes: dict[str, list[tuple[str, Image.Image]]]):
    for cls, items in classes.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for name, im in items:
            im.save(folder / cls / name)


def test_folder_all_modes_and_formats(tmp_path):
    i16 = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    assert i16.mode == "I;16"
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent -> white
    _make(tmp_path, {
        "a": [("l.png", _gray(10)), ("i16.png", i16), ("rgb.png", Image.new("RGB", (10, 10), (0, 0, 255))),
              ("rgba.png", rgba), ("one.png", Image.new("1", (10, 10), 1))],
        "b": [("p.png", _gray(50).convert("P")), ("g.gif", _gray(60)), ("b.BMP", _gray(70)),
              ("t.tiff", _gray(80)), ("j.jpg", Image.new("RGB", (10, 10), (200, 100, 0)))],
    })
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    d = load_image_data(str(tmp_path), val_split=0)
    assert d.classes == ["a", "b"] and d.channels == 3 and d.image_size == 10
    assert len(d.y_train) + len(d.y_test) == 10 and d.skipped == []
    x, files = load_image_files([str(tmp_path / "a")], image_size=10, channels=3)
    px = {Path(f).name: x[i, :, 5, 5].tolist() for i, f in enumerate(files)}
    assert px["i16.png"] == [255, 255, 255]  # 16-bit 65535 -> 255
    assert px["rgba.png"] == [255, 255, 255]  # transparent on white
    assert px["rgb.png"] == [0, 0, 255] and px["l.png"] == [10, 10, 10] and px["one.png"] == [255] * 3


def test_folder_all_gray_is_one_channel_and_resized(tmp_path):
    i16 = Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16))
    _make(tmp_path, {"x": [(f"{i}.png", _gray(i, (12, 12))) for i in range(4)] + [("w.png", i16)],
                     "y": [(f"{i}.png", Image.new("1", (12, 12), 1)) for i in range(5)]})
    d = load_image_data(str(tmp_path), val_split=0)
    assert d.channels == 1 and d.image_size == 12  # median of max(h, w)
    assert int(d.x_train.max()) == 255
    d = load_image_data(str(tmp_path), image_size=7, val_split=0)
    assert d.x_train.shape[1:] == (1, 7, 7) and d.x_test.shape[1:] == (1, 7, 7)


def test_folder_train_test_layout(tmp_path):
    _make(tmp_path / "train", {c: [(f"{i}.png", _gray(i)) for i in range(6)] for c in "pq"})
    _make(tmp_path / "test", {c: [(f"{i}.png", _gray(200)) for i in range(2)] for c in "pq"})
    d = load_image_data(str(tmp_path), val_split=0.25)
    assert d.classes == ["p", "q"] and d.x_test.shape == (4, 1, 10, 10) and bool((d.x_test == 200).all())
    assert len(d.y_train) == 9 and len(d.y_val) == 3
    (tmp_path / "test" / "r").mkdir()
    _gray().save(tmp_path / "test" / "r" / "0.png")
    with pytest.raises(UserError, match="different classes"):
        load_image_data(str(tmp_path))


def test_folder_stratified_validation_keeps_every_class(tmp_path):
    _make(tmp_path, {c: [(f"{i}.png", _gray(i)) for i in range(10)] for c in "abcde"})
    a = load_image_data(str(tmp_path), val_split=0.2, seed=1)
    b = load_image_data(str(tmp_path), val_split=0.2, seed=2)
    assert len(a.y_val) == 8 and set(a.y_val.tolist()) == set(range(5))
    assert sorted(a.y_test.tolist()) == sorted(list(range(5)) * 2)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="empty"):
        load_image_data(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        load_image_data(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="did you mean 'fashion-mnist'"):
        load_image_data("fashion-mnst")
    _gray().save(tmp_path / "loose.png")
    with pytest.raises(UserError, match="no class subfolders"):
        load_image_data(str(tmp_path))
    _make(tmp_path, {"cat": [("0.png", _gray())]})
    with pytest.raises(UserError, match="at least 2"):
        load_image_data(str(tmp_path))
    (tmp_path / "dog").mkdir()
    with pytest.raises(UserError, match="'.*dog' has no images"):
        load_image_data(str(tmp_path))


def _corrupt(path: Path):
    _gray(size=(40, 40)).save(path)
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG


def test_one_corrupt_among_200_is_skipped_with_warning(tmp_path, capsys):
    _make(tmp_path, {c: [(f"{i:03d}.png", _gray(i, (6, 6))) for i in range(100)] for c in "ab"})
    _corrupt(tmp_path / "a" / "050.png")
    d = load_image_data(str(tmp_path), val_split=0)
    assert len(d.skipped) == 1 and d.skipped[0].startswith("a/050.png")
    assert len(d.y_train) + len(d.y_test) == 199
    assert "warning: skipped 1 unreadable image(s): a/050.png" in capsys.readouterr().err


def test_one_corrupt_among_5_is_an_error(tmp_path):
    _make(tmp_path, {"a": [(f"{i}.png", _gray()) for i in range(2)], "b": [(f"{i}.png", _gray()) for i in range(2)]})
    _corrupt(tmp_path / "b" / "bad.png")
    with pytest.raises(UserError, match=r"1 of 5 .*b/bad.png"):
        load_image_data(str(tmp_path))


def test_load_image_files(tmp_path):
    _gray(30, (20, 10)).save(tmp_path / "b.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.jpg")
    (tmp_path / "readme.txt").write_text("x")
    x, files = load_image_files([str(tmp_path)], image_size=16, channels=1)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.uint8
    assert [Path(f).name for f in files] == ["a.jpg", "b.png"]
    assert int(x[1, 0, 8, 8]) == 30 and 60 < int(x[0, 0, 4, 4]) < 90  # red -> luma ~76
    with pytest.raises(UserError, match="missing.png"):
        load_image_files([str(tmp_path / "missing.png")], image_size=16, channels=1)
    _corrupt(tmp_path / "c.png")
    with pytest.raises(UserError, match="c.png"):
        load_image_files([str(tmp_path / "c.png")], image_size=16, channels=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_image_files([str(tmp_path / "empty")], image_size=16, channels=1)


def test_an_image_over_the_pixel_bound_is_never_decoded(tmp_path, monkeypatch):
    """The bound is read from the header, before decoding: an over-large image (a decompression
    bomb) is one line at predict time (a training folder counts it among its unreadable files)."""
    import numpy as np
    from PIL import Image
    from deepskeptic.data import images
    from deepskeptic.errors import UserError
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match=r"big.png.*60x60 pixels is over the"):
        images.load_image_files([str(tmp_path / "big.png")], image_size=8, channels=1)
    x, files = images.load_image_files([str(tmp_path / "small.png")], image_size=8, channels=1)
    assert x.shape == (1, 1, 8, 8)
