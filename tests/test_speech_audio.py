"""Speech data and decoding: audio files of every format and rate the tests synthesise, log-mel
features, the espeak-ng data sets (deterministic, split by voice), CTC decoding, WER and CER,
SpecAugment and the speech models' shapes."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import chirp

from deepskeptic.data import spoken
from deepskeptic.data.audio import (FeatureSettings, features_of_files, features_of_waveforms, load_audio, log_mel,
                                    waveform_samples)
from deepskeptic.data.audio_sets import load_speech_data, read_manifest
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.tasks.speech.jobs import spec_augment
from deepskeptic.tasks.speech.text import (SYMBOLS, VOCAB_SIZE, beam_decode, cer, check_vocabulary, edit_distance,
                                           greedy_decode, wer)
from conftest import tiny_speech_spec

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
TINY = tiny_speech_spec()
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds waiting


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * rate / len(x))


# ------------------------------------------------------------------ decoding

@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac"), ("OGG", "ogg")])
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_every_format_and_rate_decodes_to_16k_mono(tmp_path, fmt, ext, rate):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(1000.0, 0.5, rate), rate, format=fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 8000) <= 2                      # 0.5 s at 16 kHz
    assert abs(_peak_hz(x) - 1000.0) < 5                 # the tone survives resampling
    assert np.abs(x).max() <= 1.0


def test_stereo_is_averaged_and_sweep_keeps_its_length(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    sweep = chirp(t, f0=100, t1=1.0, f1=6000).astype(np.float32) * 0.4
    left_only = np.stack([sweep, np.zeros_like(sweep)], axis=1)
    sf.write(tmp_path / "stereo.wav", left_only, rate)
    x = load_audio(tmp_path / "stereo.wav")
    assert abs(len(x) - 16000) <= 2
    assert 0.18 < np.abs(x).max() < 0.22                 # (left + right) / 2


def test_silence_gives_finite_features(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    feats = log_mel(load_audio(tmp_path / "silence.wav"))
    assert feats.shape == (101, 40) and torch.isfinite(feats).all()


@pytest.mark.parametrize("samples,frames", [(16000, 101), (8000, 51), (100, 3), (560, 4)])
def test_feature_shapes(samples, frames):
    feats = log_mel(np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1,
                    FeatureSettings(n_mels=24))
    assert feats.shape == (frames, 24)
    if frames > 1:  # per-utterance normalisation: one mean and one std over all frames and bands
        assert abs(float(feats.mean())) < 1e-4 and abs(float(feats.std(unbiased=False)) - 1) < 1e-3


def test_louder_recording_gives_the_same_features():
    x = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.05
    assert torch.allclose(log_mel(x), log_mel(x * 10), atol=2e-2)  # up to the log floor


def test_bad_audio_files_are_named(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(UserError, match=r"zero\.wav.*empty"):
        load_audio(tmp_path / "zero.wav")
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match=r"nosamples\.wav.*empty"):
        load_audio(tmp_path / "nosamples.wav")
    (tmp_path / "text.wav").write_text("not audio at all\n")
    with pytest.raises(UserError, match=r"text\.wav.*not readable audio"):
        load_audio(tmp_path / "text.wav")
    with pytest.raises(UserError, match="does not exist"):
        load_audio(tmp_path / "missing.flac")


def test_waveform_in_memory_goes_the_way_of_its_file(tmp_path):
    rate = 22050
    x = _tone(300.0, 0.4, rate)
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.25 * x], axis=1), rate, subtype="FLOAT")
    samples, file_rate = sf.read(tmp_path / "stereo.wav", dtype="float32")       # (S, 2), 22050
    assert np.array_equal(waveform_samples(samples, file_rate), load_audio(tmp_path / "stereo.wav"))
    (from_memory,) = features_of_waveforms([(samples, file_rate)], FeatureSettings(n_mels=24))
    (from_file,), _ = features_of_files([tmp_path / "stereo.wav"], FeatureSettings(n_mels=24))
    assert torch.equal(from_memory, from_file)
    with pytest.raises(UserError, match=r"waveform 0 has int16 samples: give floats"):
        features_of_waveforms([((x * 3000).astype(np.int16), rate)])
    with pytest.raises(UserError, match=r"waveform 'quiet' is empty \(0 samples\)"):
        features_of_waveforms([(np.zeros(0, np.float32), rate)], names=["quiet"])
    with pytest.raises(UserError, match="holds NaN or infinite samples"):
        waveform_samples(np.full(100, np.nan, np.float32), rate)
    with pytest.raises(UserError, match="sample rate 0"):
        waveform_samples(x, 0)


# ------------------------------------------------------------------ spoken sets

@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    return spoken.synthesise(tmp_path_factory.mktemp("spoken") / "tiny", TINY, seed=0, progress=False)


def _rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


@needs_espeak
def test_synthesis_is_deterministic_for_a_seed(tiny_set, tmp_path):
    again = spoken.synthesise(tmp_path / "again", TINY, seed=0, progress=False)
    other = spoken.synthesise(tmp_path / "other", TINY, seed=1, progress=False)
    assert _rows(again) == _rows(tiny_set)
    first = _rows(tiny_set)[0]["path"]
    assert (again.parent / first).read_bytes() == (tiny_set.parent / first).read_bytes()
    assert _rows(other) != _rows(tiny_set)


@needs_espeak
def test_spoken_set_is_split_by_voice_and_never_leaks(tiny_set):
    rows = _rows(tiny_set)
    assert len(rows) == 4 * 3 * 2 and {r["transcript"] for r in rows} == {"zero", "one", "two"}
    voices = {part: {r["speaker"] for r in rows if r["split"] == part} for part in ("train", "val", "test")}
    assert all(voices.values()) and sum(map(len, voices.values())) == 4
    assert not (voices["train"] & voices["test"]) and not (voices["train"] & voices["val"])
    assert not (voices["val"] & voices["test"])
    data = load_speech_data(str(tiny_set), progress=False)
    assert data.split_by == "manifest"
    heard = {data.speakers[i] for i in data.splits["train"].tolist()}
    assert heard.isdisjoint(data.speakers[i] for i in data.splits["test"].tolist())
    assert data.feats.shape[1] == 40 and int(data.lengths.sum()) == len(data.feats)
    x = load_audio(tiny_set.parent / rows[0]["path"])
    assert 0.3 < len(x) / 16000 < 3


@needs_espeak
def test_manifest_with_speakers_is_split_by_speaker(tiny_set, tmp_path):
    rows = _rows(tiny_set)
    manifest = tmp_path / "mine.csv"
    manifest.write_text("path,transcript,speaker\n" + "".join(
        f"{tiny_set.parent / r['path']},{r['transcript']},{r['speaker']}\n" for r in rows))
    data = load_speech_data(str(manifest), val_split=0.25, test_split=0.25, progress=False)
    assert data.split_by == "speaker"
    parts = {k: {data.speakers[i] for i in v.tolist()} for k, v in data.splits.items()}
    assert parts["train"] and parts["val"] and parts["test"]
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"])


def test_headerless_manifest_and_bad_rows(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(440, 0.3, 16000), 16000)
    (tmp_path / "plain.csv").write_text("a.wav,hello there\n")
    (u,) = read_manifest(tmp_path / "plain.csv")
    assert u.transcript == "hello there" and u.path == tmp_path / "a.wav"
    (tmp_path / "nowhere.csv").write_text("path,transcript\na.wav,yes\nmissing.wav,no\n")
    with pytest.raises(UserError, match=r"row 3 points to 'missing.wav', which does not exist"):
        read_manifest(tmp_path / "nowhere.csv")
    (tmp_path / "empty.csv").write_text("path,transcript\n")
    with pytest.raises(UserError, match="lists no recordings"):
        read_manifest(tmp_path / "empty.csv")


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(spoken.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="espeak-ng is not installed.*apt-get install espeak-ng"):
        spoken.espeak()


# ------------------------------------------------------------------ CTC decoding, WER, CER

def _table(rows: list[list[float]], symbols: str = "_a") -> torch.Tensor:
    """(T, 29) log-probabilities from rows over ``symbols`` ('_' the blank, letters a-z)."""
    p = torch.full((len(rows), VOCAB_SIZE), 1e-12)
    for t, row in enumerate(rows):
        for s, value in zip(symbols, row):
            p[t, 0 if s == "_" else SYMBOLS[s]] = value
    return (p / p.sum(1, keepdim=True)).log()


def test_greedy_merges_repeats_and_drops_blanks():
    table = _table([[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], "_lo")
    assert greedy_decode(table) == "llo"
    assert greedy_decode(table, length=2) == "l"


def test_beam_search_sums_paths_that_greedy_misses():
    # Greedy takes the blank twice -> "". But P("a") = .4*.4 + .4*.6 + .6*.4 = .64 > P("") = .36.
    table = _table([[0.6, 0.4], [0.6, 0.4]])
    assert greedy_decode(table) == ""
    text, confidence = beam_decode(table, beam=4)
    assert text == "a" and confidence == pytest.approx(0.64, abs=1e-6)


def test_beam_search_needs_a_blank_between_repeated_letters():
    table = _table([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]], "_lo")
    assert beam_decode(table, beam=8)[0] == "llo"
    assert beam_decode(_table([[0.05, 0.9, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]], "_lo"))[0] == "lo"


def test_wer_and_cer_on_hand_computed_examples():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert wer(["three seven one"], ["three one"]) == pytest.approx(1 / 3)            # one deletion
    assert wer(["three seven one"], ["tree seven one one"]) == pytest.approx(2 / 3)   # substitution + insertion
    assert wer(["one two", "three"], ["one two", "four"]) == pytest.approx(1 / 3)     # corpus level: 1 of 3 words
    assert wer(["Seven  Nine"], ["seven nine"]) == 0.0                               # case and spaces normalised
    assert cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert cer(["one two"], ["one to"]) == pytest.approx(1 / 7)


def test_characters_outside_the_vocabulary_are_named():
    check_vocabulary(["it's seven"], ["row 2"])
    with pytest.raises(UserError, match=r"row 5: transcript '3 7' has character\(s\) '3' '7' outside the vocabulary"):
        check_vocabulary(["one", "3 7"], ["row 4", "row 5"])


# ------------------------------------------------------------------ SpecAugment and models

def test_spec_augment_masks_within_each_utterance_from_torch_rng():
    x = torch.ones(4, 50, 40)
    lengths = torch.tensor([50, 40, 20, 10])
    torch.manual_seed(3)
    a = spec_augment(x, lengths, time_fraction=0.2)
    torch.manual_seed(3)
    assert torch.equal(a, spec_augment(x, lengths, time_fraction=0.2))
    assert ((a == 0) | (a == 1)).all() and (a == 0).any()
    for i, n in enumerate(lengths.tolist()):
        masked_bands = (a[i, :n] == 0).all(0).sum()
        assert masked_bands <= 16
        masked_frames = (a[i, :n] == 0).all(1).sum()
        assert masked_frames <= 2 * int(n * 0.2)


@pytest.mark.parametrize("name", registry.names("speech"))
def test_every_speech_model_maps_padded_batches(name):
    spec = registry.spec("speech", name)
    kwargs = {"n_mels": 40, "num_classes": 5} if spec.config_cls.output == "class" else {"n_mels": 40}
    model = registry.create("speech", name, **kwargs).eval()
    x, lengths = torch.randn(3, 37, 40), torch.tensor([37, 20, 5])
    out = model(x, lengths)
    if spec.config_cls.output == "class":
        assert out.shape == (3, 5)
        if name != "cnn":  # packed LSTM and masked pooling ignore the padding exactly
            alone = model(x[1:2, :20], lengths[1:2])
            assert torch.allclose(out[1], alone[0], atol=1e-5)
    else:
        log_probs, out_lengths = out
        k = model.cfg.stack  # frames joined per output step
        steps = [-(-n // k) for n in (37, 20, 5)]
        assert log_probs.shape == (3, steps[0], 29) and out_lengths.tolist() == steps
        assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, steps[0]), atol=1e-4)


# ------------------------------------------------------------------ absurd headers (reliability)

def _wav(path, *, rate=16000, channels=1, data=b"\x00\x01" * 800, claimed=None):
    """A 16-bit PCM WAV file written by hand, so its header can say anything."""
    import struct
    block = (channels * 2) & 0xFFFF
    fmt = struct.pack("<HHIIHH", 1, channels, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF, block, 16)
    size = len(data) if claimed is None else claimed
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _flac_claiming(path, frames: int):
    """A real one-second FLAC file whose STREAMINFO claims ``frames`` samples."""
    sf.write(path, _tone(440.0, 1.0, 16000), 16000, format="FLAC")
    raw = bytearray(path.read_bytes())
    field = int.from_bytes(raw[18:26], "big")              # rate(20) channels(3) bits(5) samples(36)
    raw[18:26] = ((field & ~(2**36 - 1)) | frames).to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    return path


def _one_line_naming(exc_info, name: str, words: str) -> None:
    message = str(exc_info.value)
    assert name in message and words in message and "\n" not in message, message


def _peak_bytes(fn) -> int:
    """The most memory NumPy and Python held at once while ``fn`` ran (tracemalloc sees NumPy's arrays)."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
    except UserError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_header_claiming_huge_lengths_never_allocates_them(tmp_path):
    # WAV: libsndfile trusts the file's size over the header, so the frames that are there are read
    wav = _wav(tmp_path / "claims.wav", claimed=2**32 - 16)
    assert len(load_audio(wav)) == 800
    # FLAC: the header's count is believed; 2**31 frames would be 8 GiB of float32 read up front
    flac = _flac_claiming(tmp_path / "claims.flac", 2**31)
    with pytest.raises(UserError) as e:
        load_audio(flac)
    _one_line_naming(e, "claims.flac", "claims 37.3 hours of audio")
    assert _peak_bytes(lambda: load_audio(flac)) < 32 << 20
    with pytest.raises(UserError) as e:                   # a header promising 10 s of a 1 s file
        load_audio(_flac_claiming(tmp_path / "more.flac", 10 * 16000))
    _one_line_naming(e, "more.flac", "truncated or damaged: its header promises 160000 frames")


@pytest.mark.parametrize("header, words", [
    ({"rate": 0}, "not readable audio"),
    ({"rate": 10**9}, "sample rate of 1000000000 Hz"),
    ({"rate": 1}, "sample rate of 1 Hz"),
    ({"channels": 0}, "not readable audio"),
    ({"channels": 65535}, "not readable audio"),
    ({"data": b"", "claimed": 3200}, "empty (0 samples)"),   # the data cut off after the header
])
def test_absurd_wav_headers_are_one_line_naming_the_file(tmp_path, header, words):
    path = _wav(tmp_path / "odd.wav", **header)
    with pytest.raises(UserError) as e:
        load_audio(path)
    _one_line_naming(e, "odd.wav", words)
    assert _peak_bytes(lambda: load_audio(path)) < 32 << 20   # never the claimed length, never a huge filter


def test_truncated_compressed_audio_is_one_line(tmp_path):
    sf.write(tmp_path / "whole.flac", _tone(440.0, 1.0, 16000), 16000)
    raw = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(UserError) as e:
        load_audio(tmp_path / "cut.flac")
    _one_line_naming(e, "cut.flac", "truncated or damaged")
    with pytest.raises(UserError) as e:
        waveform_samples(np.zeros(100, np.float32), 10**9, what="waveform 'fast'")
    _one_line_naming(e, "waveform 'fast'", "sample rate 1000000000 Hz")


def test_fifos_and_folders_are_refused_not_read(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(UserError, match=r"audio file .*pipe\.wav is a FIFO"):
        load_audio(tmp_path / "pipe.wav")
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(UserError, match=r"folder\.wav is a folder"):
        load_audio(tmp_path / "folder.wav")
    os.mkfifo(tmp_path / "manifest.csv")                     # a manifest that would block forever
    with pytest.raises(UserError, match=r"manifest .*manifest\.csv is a FIFO"):
        load_speech_data(str(tmp_path / "manifest.csv"))
    (tmp_path / "list.csv").write_text("path,transcript\npipe.wav,yes\n")
    with pytest.raises(UserError, match=r"row 2: audio file .*pipe\.wav is a FIFO"):
        read_manifest(tmp_path / "list.csv")
