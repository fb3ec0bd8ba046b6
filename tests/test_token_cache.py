"""The textgen token file: a corpus file or folder is encoded once, chunk by chunk, into a
memory-mapped file of character ids in the data cache; reused while its files are unchanged,
rebuilt when one changes, never used torn; its ids, vocabulary and split equal the in-memory
path's, and a run on it gives the in-memory run's numbers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import mapped_file, without_time
from deepskeptic.data import text_tokens
from deepskeptic.data.text import Vocab, load_corpus
from deepskeptic.errors import UserError
from deepskeptic.tasks import get_task
from deepskeptic.tasks.textgen import data as textgen_data
from deepskeptic.training import resolve_settings, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds waiting
SETTINGS = {"encoding": None, "val_split": 0.05, "test_split": 0.1, "min_char_count": 2}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "textgen"


def _text(n: int, alphabet: str, seed: int = 0) -> str:
    return "".join(np.random.default_rng(seed).choice(list(alphabet), n))


@pytest.fixture
def corpus(tmp_path):
    """A file with a byte-order mark, CRLF line ends, multi-byte and rare characters."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(("\ufeff" + _text(6000, "abcdef gh\r\n\tÄé€😀") + "\r\nend\r").encode("utf-8"))
    return path


@pytest.fixture
def folder(tmp_path):
    """Documents in subfolders, one without a final newline, an empty one, a binary and a hidden file."""
    root = tmp_path / "docs"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text(_text(3000, "xyz \n", 1))
    (root / "b" / "c.txt").write_text(_text(2000, "xyzw\n", 2) + "\n")
    (root / "b" / "empty.txt").write_text("")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\xff\xfe")
    (root / ".hidden").write_text("never read")
    return root


def in_memory(path, **settings):
    """What the in-memory path makes of ``path``: the corpus, the vocabulary, the ids."""
    s = {**SETTINGS, **settings}
    c = load_corpus(str(path), encoding=s["encoding"], val_split=s["val_split"], test_split=s["test_split"])
    vocab = Vocab.from_text(c.train, min_count=max(1, s["min_char_count"]))
    return c, vocab, [vocab.encode(t) for t in (c.train, c.val, c.test)]


def cached(path, **settings):
    return textgen_data.prepare({**SETTINGS, **settings, "data": str(path)})


def builds(monkeypatch) -> list[str]:
    """Counts the token-file builds from now on."""
    calls: list[str] = []
    original = text_tokens._build

    def counting(source, *args):
        calls.append(source.path.name)
        return original(source, *args)
    monkeypatch.setattr(text_tokens, "_build", counting)
    return calls


def assert_same_as_in_memory(path, **settings):
    c, vocab, ids = in_memory(path, **settings)
    p = cached(path, **settings)
    assert p.vocab.chars == vocab.chars
    for got, want in zip((p.train, p.val, p.test), ids):
        assert got.dtype in (torch.uint8, torch.uint16) and torch.equal(got.long(), want)
    for split in ("train", "val", "test"):
        text = getattr(p.corpus, split)
        assert len(text) == len(getattr(c, split)) and str(text) == getattr(c, split)
    assert p.corpus.test[:40] == c.test[:40] and p.corpus.val[5:17] == c.val[5:17]
    assert (p.corpus.name, p.corpus.source, p.corpus.split) == (c.name, c.source, c.split)
    return p


# ------------------------------------------------------------------ the ids

@pytest.mark.parametrize("chunk", [1 << 22, 5, 1])   # a chunk boundary inside a CRLF, a character, a BOM
def test_ids_vocabulary_and_split_equal_the_in_memory_path(corpus, folder, monkeypatch, chunk):
    monkeypatch.setattr(text_tokens, "CHUNK_BYTES", chunk)
    p = assert_same_as_in_memory(corpus)
    assert p.train.dtype == torch.uint8 and mapped_file(p.test).suffix == ".ids"   # read from the token file
    assert_same_as_in_memory(folder)
    assert_same_as_in_memory(corpus, min_char_count=0, val_split=0.2, test_split=0.3)


def test_more_than_255_characters_take_uint16_ids(tmp_path):
    path = tmp_path / "greek-and-more.txt"
    path.write_text(_text(20000, "".join(map(chr, range(0x391, 0x391 + 300)))))
    assert assert_same_as_in_memory(path, min_char_count=1).train.dtype == torch.uint16


def test_encoded_once_then_reused_and_rebuilt_when_a_file_changes(corpus, folder, cache_dir, monkeypatch):
    calls = builds(monkeypatch)
    first = cached(corpus)
    again = cached(corpus)
    assert calls == ["corpus.txt"] and len(list(cache_dir.glob("*.ids"))) == 1
    assert torch.equal(first.train, again.train)
    cached(corpus, val_split=0.1)                         # other settings: another token file
    assert calls == ["corpus.txt"] * 2 and len(list(cache_dir.glob("*.ids"))) == 2
    corpus.write_text("changed " * 500)
    st = corpus.stat()
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = cached(corpus)
    assert calls == ["corpus.txt"] * 3 and len(list(cache_dir.glob("*.ids"))) == 2  # replaced, not added
    assert str(changed.corpus.train).startswith("changed changed") and len(changed.vocab) < len(first.vocab)
    cached(folder)
    (folder / "b" / "new.txt").write_text("a new document\n")            # a file added to a folder
    grown = cached(folder)
    assert calls[-2:] == ["docs", "docs"]
    assert "a new document" in "".join(str(getattr(grown.corpus, s)) for s in ("train", "val", "test"))


def test_a_torn_cache_is_never_used(corpus, cache_dir, monkeypatch):
    reference = cached(corpus)
    calls = builds(monkeypatch)
    (path,) = cache_dir.glob("*.ids")
    size = path.stat().st_size
    for tear in (lambda f: f.truncate(size - 5),             # the end (its description) cut off
                 lambda f: f.truncate(size // 2),             # half the ids missing
                 lambda f: (f.seek(0), f.write(b"\0" * 8))):   # the header zeroed
        with open(path, "r+b") as f:
            tear(f)
        p = cached(corpus)
        assert torch.equal(p.train, reference.train) and torch.equal(p.test, reference.test)
    assert calls == ["corpus.txt"] * 3
    # A build that dies half-way leaves no token file (and no temporary file) behind.
    path.unlink()
    monkeypatch.setattr(text_tokens, "encode_into", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        cached(corpus)
    assert list(cache_dir.iterdir()) == []


def test_a_text_that_changes_after_encoding_is_not_read_as_the_old_one(corpus):
    p = cached(corpus)
    corpus.write_text("something else entirely\n" * 100)
    with pytest.raises(UserError, match="changed since its token file was made"):
        str(p.corpus.train)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b" \n\t\n", "is empty"),
    (b"abc\xffdef" * 10 + b"\x00", "binary"),                     # a NUL after an undecodable byte
    ("caf\u00e9 ".encode("latin-1") * 200, "not valid UTF-8: byte 0xe9 at byte offset 3"),
    ("ab€".encode("utf-8")[:-1], "byte 0xe2 at byte offset 2"),   # cut inside the last character
])
def test_bad_texts_give_the_in_memory_paths_one_line_errors(tmp_path, monkeypatch, content, message):
    monkeypatch.setattr(text_tokens, "CHUNK_BYTES", 2)
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as streamed:
        cached(path)
    with pytest.raises(UserError) as read_whole:
        in_memory(path)
    assert str(streamed.value) == str(read_whole.value)


def test_a_fifo_is_refused_not_read_forever(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="pipe.txt is a FIFO"):
        cached(fifo)


# ------------------------------------------------------------------ training from it

def test_a_run_on_a_file_gives_the_same_numbers_cold_warm_and_in_memory(corpus, tmp_path, cache_dir):
    task = get_task("textgen")
    corpus.write_text(_text(4000, "the cat sat on a mat\n", 3))
    for model in ("lstm", "ngram", "zlib"):
        settings = resolve_settings(task, {"data": str(corpus), "model": model, "epochs": 2, "progress": False,
                                           "hidden": 16, "embed": 8, "seq_len": 16, "batch_size": 4}, None)
        for f in cache_dir.glob("*.ids"):
            f.unlink()
        c, vocab, ids = in_memory(corpus)
        memory = textgen_data.Prepared(c, vocab, *ids)
        results = [train(task, dict(settings), prepared=memory, out=tmp_path / f"{model}-memory").metrics,
                   train(task, dict(settings), out=tmp_path / f"{model}-cold").metrics,    # builds the token file
                   train(task, dict(settings), out=tmp_path / f"{model}-warm").metrics]    # reads it
        assert len(list(cache_dir.glob("*.ids"))) == 1
        a, b, w = (without_time(r) for r in results)
        a.pop("chars_per_second", None), b.pop("chars_per_second", None), w.pop("chars_per_second", None)
        assert a == b == w, model
        assert 0 < a["test_bpc"] < 5
