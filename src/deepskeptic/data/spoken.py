"""Built-in spoken data sets, synthesised offline with the espeak-ng command-line program.

``spoken-digits``: the words zero ... nine, one per utterance. ``spoken-digit-strings``: 3 to 7
digit words per utterance. A *voice* is an espeak-ng voice variant (its formants, breathiness and
pitch range: "f3", "klatt2", "Alicia", ...); each utterance of a voice draws an English accent
(en-us, en-gb-scotland, en-029, ...), a speed, a pitch, a word gap, a level, leading and trailing
silence, and a background noise (white, pink or brown) at a signal-to-noise ratio, or none.

The split is by voice: test voices and validation voices are never heard in training, in any
accent. Everything is drawn from NumPy generators seeded by (seed, utterance number), so a seed
gives the same files on a given espeak-ng install, whatever the number of worker threads.

The set is written once, as 16 kHz 16-bit FLAC files plus ``manifest.csv`` (path, transcript,
speaker, split, and how it was made), into $DEEPSKEPTIC_DATA/<name> or ~/.cache/deepskeptic/<name>;
it is then read by the same manifest loader as a user's own recordings.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepskeptic.data.audio import SAMPLE_RATE, resample
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_json, atomic_write_text, read_json

GENERATOR_VERSION = 1  # bump when a change makes the files differ; old caches are then rebuilt
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# English accents of espeak-ng 1.51 (gmw/en*); a voice speaks each utterance in one of them.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-029", "en-us-nyc")
NOISES = ("white", "pink", "brown")
SNRS_DB = (None, 30.0, 20.0, 15.0, 10.0, 5.0)  # None: no noise; the rest in dB, drawn uniformly
SPEED_WPM = (120, 220)    # espeak-ng -s range in words per minute (its default is 175)
PITCH = (15, 85)          # espeak-ng -p range, 0..99 (default 50)
GAP_10MS = (0, 8)         # espeak-ng -g: extra pause between words in 10 ms units (strings only)
GAIN_DB = (-18.0, 0.0)    # recording level relative to a 0.5 peak
PAD_SECONDS = (0.05, 0.3)  # silence (or noise) added before and after the speech
ESPEAK_HOW = "install it with 'apt-get install espeak-ng' (Debian/Ubuntu) or your system's package manager"


@dataclass(frozen=True)
class SpokenSpec:
    name: str
    words: tuple[str, ...] = DIGITS
    words_per_utterance: tuple[int, int] = (1, 1)  # inclusive range
    takes: int = 5             # per voice: takes of each word (single words) or utterances (strings)
    test_voices: int = 20      # held out for testing: never heard in training or validation
    val_voices: int = 10       # held out for validation
    voices: tuple[str, ...] | None = None  # espeak-ng variants; None: every installed one

    @property
    def single_words(self) -> bool:
        return self.words_per_utterance == (1, 1)


SPECS = {
    # 100 voices x 10 digits x 5 takes = 5,000 utterances, about 80 minutes of audio.
    "spoken-digits": SpokenSpec("spoken-digits", takes=5),
    # 100 voices x 24 strings of 3-7 digits = 2,400 utterances, about 2 hours of audio.
    "spoken-digit-strings": SpokenSpec("spoken-digit-strings", words_per_utterance=(3, 7), takes=24),
}
DESCRIPTIONS = {
    "spoken-digits": "the words zero..nine, ~5,000 utterances by ~100 synthetic voices with noise (espeak-ng)",
    "spoken-digit-strings": "3-7 spoken digits per utterance, ~2,400 utterances by ~100 synthetic voices (espeak-ng)",
}


def espeak() -> str:
    """Path of the espeak-ng program, or a UserError that says how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise UserError(f"espeak-ng is not installed; the spoken data sets are synthesised with it: {ESPEAK_HOW}")
    return path


def espeak_version() -> str:
    out = subprocess.run([espeak(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def installed_voices() -> list[str]:
    """espeak-ng voice variants (sorted), e.g. ['Alex', 'Alicia', ..., 'f1', ..., 'zac']."""
    out = subprocess.run([espeak(), "--voices=variant"], capture_output=True, text=True, check=False).stdout
    names = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        files = [f for f in fields if f.startswith("!v/")]
        if files and len(files[0]) > 3 and " " not in files[0]:
            names.add(files[0][3:])
    if not names:
        raise UserError("espeak-ng lists no voice variants; reinstall it: " + ESPEAK_HOW)
    return sorted(names)


def data_root() -> Path:
    root = os.environ.get("DEEPSKEPTIC_DATA")
    return Path(root) if root else Path.home() / ".cache" / "deepskeptic"


def cached(name: str, root: Path | None = None) -> Path | None:
    """The manifest of a complete cached set, or None."""
    folder = (root or data_root()) / name
    meta = folder / "meta.json"
    if not meta.is_file() or not (folder / "manifest.csv").is_file():
        return None
    try:
        if read_json(meta).get("generator_version") != GENERATOR_VERSION:
            return None
    except ValueError:
        return None
    return folder / "manifest.csv"


def ensure(name: str, progress: bool = True) -> Path:
    """The manifest of built-in set ``name``, synthesising it into the cache first if needed."""
    found = cached(name)
    if found is not None:
        return found
    espeak()
    print(f"{name} is not in the data cache yet: synthesising it once with espeak-ng into "
          f"{data_root() / name} (a minute or two)", file=sys.stderr, flush=True)
    return synthesise(data_root() / name, SPECS[name], progress=progress)


# ------------------------------------------------------------------ the plan

def _plan(spec: SpokenSpec, voices: list[str], seed: int) -> list[dict]:
    """One dict per utterance: every random choice, drawn from generators seeded by (seed, i)."""
    order = np.random.default_rng([seed, 0]).permutation(len(voices))
    shuffled = [voices[i] for i in order]
    n_test, n_val = _held_out(spec, len(voices))
    split_of = {v: "test" if k < n_test else "val" if k < n_test + n_val else "train"
                for k, v in enumerate(shuffled)}
    jobs: list[tuple[str, list[str] | None]] = []
    for voice in voices:
        if spec.single_words:
            jobs += [(voice, [w]) for w in spec.words for _ in range(spec.takes)]
        else:
            jobs += [(voice, None)] * spec.takes
    plan = []
    for i, (voice, words) in enumerate(jobs):
        rng = np.random.default_rng([seed, 1, i])
        if words is None:
            lo, hi = spec.words_per_utterance
            words = [spec.words[k] for k in rng.integers(0, len(spec.words), int(rng.integers(lo, hi + 1)))]
        snr = SNRS_DB[int(rng.integers(0, len(SNRS_DB)))]
        plan.append({
            "path": f"audio/{voice}/{i:05d}.flac", "transcript": " ".join(words), "speaker": voice,
            "split": split_of[voice], "accent": ACCENTS[int(rng.integers(0, len(ACCENTS)))],
            "speed": int(rng.integers(SPEED_WPM[0], SPEED_WPM[1] + 1)),
            "pitch": int(rng.integers(PITCH[0], PITCH[1] + 1)),
            "gap": 0 if spec.single_words else int(rng.integers(GAP_10MS[0], GAP_10MS[1] + 1)),
            "gain_db": round(float(rng.uniform(*GAIN_DB)), 2),
            "pad_before": round(float(rng.uniform(*PAD_SECONDS)), 3),
            "pad_after": round(float(rng.uniform(*PAD_SECONDS)), 3),
            "noise": "none" if snr is None else NOISES[int(rng.integers(0, len(NOISES)))],
            "snr_db": "" if snr is None else snr,
            "noise_seed": int(rng.integers(0, 2 ** 31)),
        })
    return plan


def _held_out(spec: SpokenSpec, n_voices: int) -> tuple[int, int]:
    """(test, val) voice counts: the spec's, shrunk for small voice lists (>= 1 train voice)."""
    if n_voices < 3:
        raise UserError(f"{spec.name} needs at least 3 voices (train, validation, test); got {n_voices}")
    n_test = min(spec.test_voices, max(1, n_voices // 5))
    n_val = min(spec.val_voices, max(1, n_voices // 10))
    return n_test, n_val


# ------------------------------------------------------------------ one utterance

def _speak(item: dict) -> np.ndarray:
    """espeak-ng's rendering of one planned utterance: float32 (S,) at its native rate -> 16 kHz."""
    import soundfile as sf

    cmd = [espeak(), "-v", f"{item['accent']}+{item['speaker']}", "-s", str(item["speed"]),
           "-p", str(item["pitch"]), "-g", str(item["gap"]), "--stdout", item["transcript"]]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise UserError(f"espeak-ng failed for voice {item['accent']}+{item['speaker']} "
                        f"({result.stderr.decode(errors='replace').strip()[:120]}); reinstall it: {ESPEAK_HOW}")
    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return resample(samples, rate, SAMPLE_RATE)


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of n samples: white (flat), pink (power ~ 1/f) or brown (~ 1/f^2)."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)  # amplitude ~ f^-1/2 or f^-1
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    return (white / max(float(np.sqrt(np.mean(white ** 2))), 1e-12)).astype(np.float32)


def render(item: dict) -> np.ndarray:
    """The finished 16 kHz recording of one planned utterance: speech, level, padding, noise."""
    speech = _speak(item)
    peak = float(np.abs(speech).max()) or 1.0
    speech = speech / peak * 0.5 * 10 ** (item["gain_db"] / 20)
    before, after = (int(item[k] * SAMPLE_RATE) for k in ("pad_before", "pad_after"))
    out = np.concatenate([np.zeros(before, np.float32), speech, np.zeros(after, np.float32)])
    if item["noise"] != "none":
        voiced = speech[np.abs(speech) > 0.02 * np.abs(speech).max()]  # the power of speech, not of its pauses
        power = float(np.mean(voiced ** 2)) if voiced.size else float(np.mean(speech ** 2))
        noise = coloured_noise(item["noise"], len(out), np.random.default_rng(item["noise_seed"]))
        out = out + noise * np.sqrt(power / 10 ** (float(item["snr_db"]) / 10))
    return np.clip(out, -1.0, 1.0)


# ------------------------------------------------------------------ the set

def synthesise(dest: str | Path, spec: SpokenSpec, *, seed: int = 0, progress: bool = True,
               workers: int | None = None) -> Path:
    """Write the set into ``dest`` (built in a temporary folder beside it, then renamed); returns
    the path of its manifest.csv."""
    import soundfile as sf
    from tqdm import tqdm

    dest = Path(dest)
    voices = list(spec.voices) if spec.voices is not None else installed_voices()
    missing = sorted(set(voices) - set(installed_voices()))
    if missing:
        raise UserError(f"espeak-ng has no voice variant(s) {', '.join(missing)}; see 'espeak-ng --voices=variant'")
    plan = _plan(spec, voices, seed)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for voice in voices:
        (tmp / "audio" / voice).mkdir(parents=True, exist_ok=True)

    def work(item: dict) -> None:
        sf.write(str(tmp / item["path"]), render(item), SAMPLE_RATE, format="FLAC", subtype="PCM_16")

    workers = workers or min(8, (os.cpu_count() or 2) * 2)  # espeak-ng runs in its own process
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(work, plan), total=len(plan), desc=f"synthesising {spec.name}", unit="utt",
                      disable=not progress, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 10):
            pass
    columns = list(plan[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(plan)
    atomic_write_text(tmp / "manifest.csv", buffer.getvalue())
    atomic_write_json(tmp / "meta.json", {
        "name": spec.name, "generator_version": GENERATOR_VERSION, "seed": seed,
        "espeak_ng": espeak_version(), "spec": asdict(spec), "voices": voices,
        "utterances": len(plan), "sample_rate": SAMPLE_RATE})
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest / "manifest.csv"


def spoken_datasets() -> list[dict]:
    """`deepskeptic datasets` entries for the built-in spoken sets."""
    have_espeak = shutil.which("espeak-ng") is not None
    out = []
    for name in SPECS:
        found = cached(name)
        how = (f"'deepskeptic datasets fetch {name}' synthesises it (espeak-ng, a minute or two)" if have_espeak
               else f"espeak-ng is needed to synthesise it: {ESPEAK_HOW}")
        out.append({"name": name, "task": "speech", "available": found is not None,
                    "location": str(found.parent) if found else None,
                    "description": DESCRIPTIONS[name], "how_to_get": how})
    return out
