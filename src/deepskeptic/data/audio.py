"""Audio in, log-mel features out.

Decoding is libsndfile's (through soundfile: WAV, FLAC, OGG/Vorbis and more, any sample rate,
any channel count); resampling is SciPy's polyphase filter (``resample_poly``); the mel filterbank
is librosa's (``librosa.filters.mel``, Slaney-normalised); the short-time Fourier transform is
``torch.stft``. This module only glues them together:

    file -> float32 (S,) mono at 16 kHz -> power spectrogram (T, n_fft/2+1) -> mel (T, n_mels)
         -> log -> per-utterance normalisation (one mean and one std over all frames and bands)

The normalisation is one scalar pair per utterance, not one per band: it removes the recording
level but keeps the spectral shape, which the pooled-feature baseline (mean and std per band over
time) needs to see anything at all.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from deepskeptic.errors import UserError
from deepskeptic.fileio import check_regular_file
from deepskeptic.threads import one_thread

SAMPLE_RATE = 16_000  # Hz; every recording is resampled to this (speech lives below 8 kHz)
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga"}
# What a recording can be; a header outside these is damaged (or not audio), and trusting it would
# mean a huge allocation or resampling filter.
MIN_SAMPLE_RATE = 1_000     # Hz; below it no speech is left (telephone audio is 8 kHz)
MAX_SAMPLE_RATE = 768_000   # Hz; the fastest audio interfaces record at 768 kHz
MAX_SECONDS = 3_600         # of one recording: utterances last seconds; cut longer audio first
BLOCK_SAMPLES = 1 << 20     # samples (frames x channels) decoded at a time: 4 MiB of float32


@dataclass(frozen=True)
class FeatureSettings:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400         # samples per analysis window: 25 ms at 16 kHz, the usual speech frame
    hop: int = 160           # samples between frames: 10 ms, so 100 frames per second
    n_mels: int = 40         # mel bands; 40 is the classic choice for small-vocabulary recognisers
    fmin: float = 20.0       # Hz; below that is rumble, not speech
    fmax: float = 7600.0     # Hz; just under Nyquist (8 kHz) where resampling filters roll off
    log_floor: float = 1e-6  # added before the log, so silence gives a finite value

    def to_dict(self) -> dict:
        return asdict(self)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to float32 mono samples in [-1, 1] at ``sample_rate``: shape (S,).

    Stereo (or more channels) is averaged to mono. Raises UserError naming the file when it is
    missing, not a regular file, not audio, unreadable, empty or its header is absurd (a sample
    rate outside MIN..MAX_SAMPLE_RATE, a claim of more than MAX_SECONDS). The file is decoded
    BLOCK_SAMPLES at a time, so memory follows the samples that are there, never what a header
    claims (soundfile's own ``read`` allocates the claimed length up front).
    """
    import soundfile as sf

    path = Path(path)
    if not os.path.lexists(path) or not path.exists():
        raise UserError(f"audio file '{path}' does not exist")
    check_regular_file(path, "audio file")      # a FIFO would block forever, /dev/zero never end
    what = f"audio file '{path}'"
    frames, declared, opened = 0, 0, False
    try:
        with sf.SoundFile(str(path)) as f:
            rate, channels, declared = f.samplerate, f.channels, f.frames
            _check_header(what, rate, channels, declared)
            opened = True                                # from here, a failure is in the data
            block = max(1, BLOCK_SAMPLES // channels)    # frames per read
            parts = []
            while True:
                data = f.read(block, dtype="float32", always_2d=True)   # (k <= block, channels)
                if not len(data):
                    break
                frames += len(data)
                if frames > MAX_SECONDS * rate:
                    raise UserError(f"{what} holds more than {_duration(MAX_SECONDS)} of audio, longer than one "
                                    f"recording may be: cut it into utterances")
                if not np.isfinite(data).all():
                    raise UserError(f"{what} holds NaN or infinite samples: re-export it")
                parts.append(data.mean(axis=1))                             # (k,) mono
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for broken files
        if path.stat().st_size == 0:
            raise UserError(f"audio file '{path}' is empty (0 bytes): re-record or remove it") from None
        if opened:
            raise UserError(f"{what} is truncated or damaged: its header promises {declared} frames that "
                            f"cannot all be decoded ({_reason(exc)}); re-export it") from None
        raise UserError(f"'{path}' is not readable audio ({_reason(exc)}); "
                        f"give WAV, FLAC or OGG files") from None
    mono = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return waveform_samples(mono, rate, sample_rate, what=what)


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return f"{seconds / 60:.0f} minutes" if hours < 1 else "1 hour" if hours == 1 else f"{hours:,.1f} hours"


def _check_header(what: str, rate: int, channels: int, frames: int) -> None:
    """One line for a header no recording has: no channels, an absurd rate or length."""
    if channels < 1:
        raise UserError(f"{what} has {channels} channels in its header: it is damaged; re-export it")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UserError(f"{what} has a sample rate of {rate} Hz in its header, outside the "
                        f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz of recorded audio: it is damaged; re-export it")
    if frames > MAX_SECONDS * rate:
        raise UserError(f"{what} claims {_duration(frames / rate)} of audio ({frames} frames at {rate} Hz), "
                        f"more than the {_duration(MAX_SECONDS)} one recording may last: cut it into "
                        f"utterances, or re-export it if its header is damaged")


def waveform_samples(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE,
                     what: str = "the waveform") -> np.ndarray:
    """Decoded samples -> float32 mono samples at ``sample_rate``: shape (S',), what ``load_audio``
    makes of a file's samples.

    ``samples`` are floats in [-1, 1] at ``rate`` Hz, shaped (S,) or (S, channels) (soundfile's
    layout; channels are averaged). Raises UserError naming ``what`` when they are empty, not
    finite, not floats or shaped otherwise, or ``rate`` is outside MIN..MAX_SAMPLE_RATE.
    """
    data = np.asarray(samples)
    if not np.issubdtype(data.dtype, np.floating):
        raise UserError(f"{what} has {data.dtype} samples: give floats in [-1, 1] "
                        f"(soundfile.read(..., dtype='float32') reads them so)")
    if data.ndim not in (1, 2):
        raise UserError(f"{what} is shaped {data.shape}: give (samples,) or (samples, channels)")
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate < 1:
        raise UserError(f"{what} has sample rate {rate!r}: give a positive whole number of Hz")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UserError(f"{what} has sample rate {rate} Hz: give a rate from {MIN_SAMPLE_RATE} to "
                        f"{MAX_SAMPLE_RATE} Hz")
    data = data.astype(np.float32, copy=False)
    if data.ndim == 1:
        data = data[:, None]                                   # (S, 1)
    if data.shape[0] == 0:
        raise UserError(f"{what} is empty (0 samples): re-record or remove it")
    if not np.isfinite(data).all():
        raise UserError(f"{what} holds NaN or infinite samples: re-export it")
    return resample(data.mean(axis=1), rate, sample_rate)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """(S,) at ``rate`` -> (S * target / rate,) float32 at ``target``, by SciPy's polyphase filter."""
    if rate == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(samples, target // g, int(rate) // g).astype(np.float32)


@lru_cache(maxsize=8)
def _mel_matrix(settings: FeatureSettings) -> torch.Tensor:
    """(n_mels, n_fft/2 + 1) mel filterbank from librosa."""
    import librosa.filters

    return torch.from_numpy(librosa.filters.mel(sr=settings.sample_rate, n_fft=settings.n_fft,
                                                n_mels=settings.n_mels, fmin=settings.fmin,
                                                fmax=settings.fmax)).float()


def log_mel(samples: np.ndarray | torch.Tensor, settings: FeatureSettings = FeatureSettings()) -> torch.Tensor:
    """(S,) float samples at ``settings.sample_rate`` -> (T, n_mels) normalised log-mel features.

    T = 1 + max(S, n_fft) // hop (centred frames): utterances shorter than one window are zero-padded.
    """
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.numel() < settings.n_fft:
        x = torch.nn.functional.pad(x, (0, settings.n_fft - x.numel()))
    window = torch.hann_window(settings.n_fft)
    spec = torch.stft(x, settings.n_fft, settings.hop, window=window, center=True,
                      return_complex=True)                    # (n_fft/2+1, T)
    mel = _mel_matrix(settings) @ spec.abs().square()         # (n_mels, T)
    feats = torch.log(mel + settings.log_floor).T.contiguous()  # (T, n_mels)
    return normalise(feats)


def features_of_files(paths: list[Path], settings: FeatureSettings = FeatureSettings(),
                      progress: bool = False, desc: str = "features") -> tuple[list[torch.Tensor], float]:
    """Decode and featurise files: ([(T_i, n_mels)], seconds of audio). UserError names a bad file."""
    from tqdm import tqdm

    out, seconds = [], 0.0
    with one_thread():
        for path in tqdm(paths, desc=desc, unit="file", disable=not progress, leave=False):
            samples = load_audio(path, settings.sample_rate)
            seconds += len(samples) / settings.sample_rate
            out.append(log_mel(samples, settings))
    return out, seconds


def features_of_waveforms(waveforms: list[tuple[np.ndarray, int]], settings: FeatureSettings = FeatureSettings(),
                          names: list[str] | None = None) -> list[torch.Tensor]:
    """Featurise decoded audio as ``features_of_files`` does files: [(T_i, n_mels)] from
    (samples, sample rate) pairs (see ``waveform_samples``); UserError names a bad one."""
    out = []
    with one_thread():
        for i, (samples, rate) in enumerate(waveforms):
            what = f"waveform '{names[i]}'" if names is not None else f"waveform {i}"
            out.append(log_mel(waveform_samples(samples, rate, settings.sample_rate, what), settings))
    return out


def normalise(feats: torch.Tensor) -> torch.Tensor:
    """Per-utterance normalisation: one mean and one std over every frame and band of (T, F)."""
    return (feats - feats.mean()) / feats.std(unbiased=False).clamp_min(1e-5)


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted; hidden files and folders skipped)."""
    import os

    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS]
    return out
