"""A finished textgen run at work: generated text, and the test text's bits per character again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from deepskeptic.data.text import CORPORA, load_corpus, read_folder, read_text_file
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks.base import GENERATE_SETTINGS, PredictOptions, Predictor
from deepskeptic.tasks.textgen.data import load_vocab
from deepskeptic.tasks.textgen.jobs import ClassicalJob
from deepskeptic.tasks.textgen.lm import sample, stream_bpc


def check_generate_options(length: int, n: int, temperature: float, top_k: int, seed: int = 0) -> None:
    """The options of ``generate`` against their declarations (GENERATE_SETTINGS): what the flags
    are checked against, for callers of the Python API too."""
    for name, value in (("length", length), ("n", n), ("temperature", temperature), ("top_k", top_k), ("seed", seed)):
        GENERATE_SETTINGS[name].check(value)


class TextGenPredictor(Predictor):
    """The run's model (a CharLM, or the marker of a classical baseline) on the CPU by default,
    and its vocabulary."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.vocab = load_vocab(run)
        self.one_step = registry.spec(task.name, run.config["settings"]["model"]).one_step

    def require_network(self) -> None:
        """A UserError unless the run is a network (the classical baselines do not generate)."""
        if self.one_step:
            raise UserError(f"run {self.run.path} is the classical baseline '{self.run.config['settings']['model']}', "
                            f"which cannot generate; use an lstm or rnn run")

    def unknown_chars(self, text: str) -> int:
        """How many characters of ``text`` the run's vocabulary reads as unknown."""
        return sum(1 for c in text if self.vocab.encode(c)[0] == self.vocab.unk)

    def generate(self, prime: str = "", length: int = 500, temperature: float = 0.8, top_k: int = 0, n: int = 1,
                 seed: int = 0, *, on_sample: Callable[[int], None] | None = None,
                 on_char: Callable[[str], None] | None = None) -> list[str]:
        """``n`` samples, each ``prime`` followed by ``length`` generated characters (a newline primes
        the model when ``prime`` is empty), drawn one after another from one generator seeded with
        ``seed``: temperature 0 takes the most likely character, ``top_k`` > 0 samples among the k
        most likely. ``on_sample(i)`` is called before sample i, ``on_char(ch)`` with each
        generated character as it comes (the command line streams them)."""
        check_generate_options(length, n, temperature, top_k, seed)
        self.require_network()
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for i in range(n):
            if on_sample is not None:
                on_sample(i)
            samples.append(prime + sample(self.model, self.vocab, prime, length, temperature=temperature,
                                          top_k=top_k, generator=generator, on_char=on_char))
        return samples

    def predict_command(self, options: PredictOptions) -> Any:
        raise UserError(f"task '{self.task.name}' has no predict command")

    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """test_bpc on the run's own test text, or on all of ``data`` (a built-in corpus: its test text)."""
        settings = self.run.config["settings"]
        prepared = self.task.prepare(settings)
        vocab = self.vocab
        prepared.vocab = vocab
        for split in ("train", "val", "test"):
            setattr(prepared, split, vocab.encode(getattr(prepared.corpus, split)))
        if data is not None:
            if data in CORPORA:
                text = load_corpus(data, val_split=settings["val_split"], test_split=settings["test_split"]).test
            elif Path(data).is_dir():
                text = "".join(t for _, t in read_folder(Path(data), settings["encoding"])[0])
            elif Path(data).is_file():
                text = read_text_file(Path(data), settings["encoding"])
            else:
                raise UserError(f"--data {data} is neither a built-in corpus ({', '.join(CORPORA)}) nor a file or folder")
            if len(text) < 2:
                raise UserError(f"{data} holds fewer than 2 characters; nothing to evaluate")
            prepared.corpus.test, prepared.test = text, vocab.encode(text)
        if self.one_step:
            bpc = ClassicalJob(self.model, prepared).bpc("test")
        else:
            bpc, _ = stream_bpc(self.model, prepared.test, self.device)
        unknown = int((prepared.test == vocab.unk).sum())
        return {"data": str(data or settings["data"]), "test_chars": len(prepared.test), "test_bpc": bpc,
                "unknown_chars": unknown}
