"""The `speech` task: recognise spoken words (lstm, cnn against mlp on pooled features) and
transcripts of several words (lstm-ctc against mlp-ctc), on voices never heard in training.

The primary metric is the word error rate, for both kinds of model: for one-word utterances it
equals 1 - accuracy, so classifiers and CTC recognisers rank on the same scale.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks import speech_eval
from deepskeptic.tasks.base import Task
from deepskeptic.tasks.speech_text import VOCAB_SIZE, check_vocabulary, encode


@dataclass
class Prepared:
    data: Any  # deepskeptic.data.audio_sets.SpeechData


def output_kind(model: str) -> str:
    """'class' (one label per utterance) or 'ctc' (a transcript) for a registered speech model."""
    return registry.spec("speech", model).config_cls.output


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_fraction: float = 0.1) -> torch.Tensor:
    """SpecAugment's masking (Park et al. 2019) on a padded batch (B, T, F), from torch's RNG.

    Per utterance: ``freq_masks`` bands of 0..freq_width mel channels and ``time_masks`` spans of
    0..time_fraction of its length are set to 0 (the utterance mean after normalisation).
    """
    b, t, f = x.shape
    keep = torch.ones(b, t, f, dtype=torch.bool, device=x.device)
    bands = torch.arange(f, device=x.device)[None, :]
    steps = torch.arange(t, device=x.device)[None, :]
    for _ in range(freq_masks):
        width = (torch.rand(b, device=x.device) * (min(freq_width, f) + 1)).floor()[:, None]
        start = (torch.rand(b, device=x.device)[:, None] * (f - width + 1)).floor()
        keep &= ~((bands >= start) & (bands < start + width))[:, None, :]
    longest = (lengths.to(x.device).float() * time_fraction).floor()[:, None]
    for _ in range(time_masks):
        width = (torch.rand(b, 1, device=x.device) * (longest + 1)).floor()
        start = (torch.rand(b, 1, device=x.device) * (lengths.to(x.device)[:, None] - width + 1)).floor()
        keep &= ~((steps >= start) & (steps < start + width))[:, :, None]
    return x * keep


class SpeechJob(Job):
    unit = "utt"

    def __init__(self, model: nn.Module, data, settings: dict[str, Any], device: torch.device,
                 labels: list[str] | None):
        self.model = model
        self.train_model = torch.compile(model, dynamic=True) if settings["compile"] else model
        self.modules = {"model": model}
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        self.optimizers = {"main": torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings["lr"])}
        self.device = device
        self.data = data
        self.kind = "class" if labels is not None else "ctc"
        self.labels = labels
        self.feats = data.feats.to(device)                     # (total frames, F)
        self.offsets, self.lengths = data.offsets.to(device), data.lengths.to(device)
        self.lengths_cpu = data.lengths
        self.train_index = data.splits["train"]
        self.batch_size = settings["batch_size"]
        self.augment = settings["augment"]
        self.clip = settings["clip"]
        self.label_smoothing = settings["label_smoothing"]
        if labels is not None:
            lookup = {w: k for k, w in enumerate(labels)}
            self.targets = torch.tensor([lookup.get(t, -100) for t in data.transcripts], device=device)
        else:
            encoded = [encode(t) for t in data.transcripts]
            self.target_lengths = torch.tensor([len(e) for e in encoded], device=device)
            padded = torch.zeros(len(encoded), max(map(len, encoded)), dtype=torch.long)
            for i, e in enumerate(encoded):
                padded[i, :len(e)] = torch.tensor(e)
            self.targets = padded.to(device)                   # (N, longest transcript)

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Shuffled batches of similar lengths (less padding): chunks of 50 batches sorted by length."""
        index = self.train_index[torch.randperm(len(self.train_index), generator=generator)]
        chunk = self.batch_size * 50
        batches: list[torch.Tensor] = []
        for start in range(0, len(index), chunk):
            part = index[start:start + chunk]
            part = part[torch.argsort(self.lengths_cpu[part], stable=True)]
            batches += list(part.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded features (B, T, F) and lengths (B,) of utterances ``index``, on the device."""
        index = index.to(self.device)
        lengths = self.lengths[index]
        steps = torch.arange(int(lengths.max()), device=self.device)
        pos = self.offsets[index][:, None] + torch.minimum(steps[None, :], lengths[:, None] - 1)  # (B, T)
        x = self.feats[pos] * (steps[None, :] < lengths[:, None])[..., None]
        return x, lengths

    def loss(self, output, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.device)
        if self.kind == "class":
            return F.cross_entropy(output.float(), self.targets[index], label_smoothing=self.label_smoothing)
        log_probs, out_lengths = output
        return F.ctc_loss(log_probs.float().transpose(0, 1), self.targets[index], out_lengths,
                          self.target_lengths[index], blank=0, reduction="mean", zero_infinity=True)

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        x, lengths = self.gather(index)
        if self.augment:
            x = spec_augment(x, lengths)
        with ctx.autocast():
            output = self.train_model(x, lengths)
        loss = self.loss(output, index)
        ctx.backward_step(loss, clip=self.clip)
        stats = {"loss": loss.detach()}
        if self.kind == "class":
            stats["accuracy"] = (output.detach().argmax(1) == self.targets[index.to(self.device)]).float().mean()
        return len(index), stats

    def validate(self, epoch: int) -> dict[str, float]:
        index = self.data.splits["val"]
        if len(index) == 0:
            return {}
        result = speech_eval.score(self.model, self.data, index, self.device, self.labels, beam=0)
        return {k[len("test_"):]: v for k, v in result.items()
                if k in ("test_loss", "test_accuracy", "test_wer", "test_cer")}


class SpeechTask(Task):
    name = "speech"
    description = "recognise speech: lstm, cnn and lstm-ctc against mlp on pooled features and mlp-ctc"
    primary_metric = "test_wer"
    higher_is_better = False
    default_epochs = 30
    default_models = ("mlp", "cnn", "lstm")
    task_defaults = {
        "n_mels": 40,             # log-mel bands per 10 ms frame
        "val_split": 0.1,         # fraction held out for validation (of speakers, when the data names them)
        "test_split": 0.2,        # fraction held out for testing, when the data does not say which
        "limit": None,            # use at most this many training utterances (quick tries)
        "augment": True,          # SpecAugment time and frequency masking during training
        "bidirectional": None,    # lstm: also read the frames backwards (the model's default: no)
        "label_smoothing": 0.1,   # classifiers: softens one-hot targets; helps unseen voices
        "beam": 8,                # CTC prefix beam width for test decoding (0: greedy only)
        "clip": 5.0,              # max gradient norm: LSTM gradients spike on long utterances
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n-mels", type=int, help="log-mel bands (40)")
        parser.add_argument("--val-split", type=float, help="fraction held out for validation (0.1)")
        parser.add_argument("--test-split", type=float, help="fraction held out for testing when the data has no split (0.2)")
        parser.add_argument("--limit", type=int, help="use at most this many training utterances")
        parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                            help="SpecAugment time and frequency masking (default: on)")
        parser.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                            help="lstm: also read the frames backwards (default: off)")
        parser.add_argument("--label-smoothing", type=float, help="classifiers' label smoothing (0.1)")
        parser.add_argument("--beam", type=int, help="CTC beam width for test decoding (8; 0: greedy)")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        import sys

        from deepskeptic.data.audio_sets import load_speech_data
        if settings.get("beam") is not None and settings["beam"] < 0:
            raise UserError(f"--beam must be 0 (greedy) or a positive width, got {settings['beam']}")
        data = load_speech_data(str(settings["data"]), n_mels=settings["n_mels"], val_split=settings["val_split"],
                                test_split=settings["test_split"], limit=settings["limit"],
                                progress=settings.get("progress", True) and sys.stderr.isatty())
        return Prepared(data)

    def labels_for(self, model: str, data) -> list[str] | None:
        """The classifier's classes (sorted training transcripts), or None for CTC models; checks
        that the data suits the model."""
        if output_kind(model) == "ctc":
            check_vocabulary(data.transcripts, data.origins)
            return None
        train = {data.transcripts[i] for i in data.splits["train"].tolist()}
        if len(train) < 2:
            raise UserError(f"the training utterances of {data.name} all say '{next(iter(train))}': "
                            f"a word classifier needs at least 2 different words")
        for part in ("val", "test"):
            unseen = sorted({data.transcripts[i] for i in data.splits[part].tolist()} - train)
            if unseen:
                raise UserError(f"model '{model}' answers one of the {len(train)} transcripts heard in training, but "
                                f"{len(unseen)} {part} transcript(s) never occur there (e.g. '{unseen[0]}'): "
                                f"use --model lstm-ctc or mlp-ctc for open transcripts")
        return sorted(train)

    def model_config(self, settings: dict[str, Any], n_mels: int, num_classes: int | None) -> Any:
        cls = registry.spec(self.name, settings["model"]).config_cls
        fields = {f.name for f in dataclasses.fields(cls)}
        extra: dict[str, Any] = {"n_mels": n_mels}
        extra.update({"num_classes": num_classes} if cls.output == "class" else {"vocab": VOCAB_SIZE})
        if settings.get("bidirectional") is not None and "bidirectional" in fields:
            extra["bidirectional"] = settings["bidirectional"]
        return registry.make_config(self.name, settings["model"], **{**settings.get("model_config", {}), **extra})

    def create_model(self, settings: dict[str, Any], n_mels: int, num_classes: int | None) -> nn.Module:
        cfg = self.model_config(settings, n_mels, num_classes)
        try:
            return registry.spec(self.name, settings["model"]).build(cfg)
        except ValueError as exc:
            raise UserError(f"model '{settings['model']}' cannot be built for {n_mels} mel bands: {exc}; "
                            f"change its settings or --n-mels, or choose another --model") from None

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        labels = self.labels_for(settings["model"], data)
        # Small data sets still need several steps per epoch: at most 1/8 of the utterances per batch.
        settings["batch_size"] = min(settings["batch_size"], max(8, len(data.splits["train"]) // 8))
        n_mels = data.features.n_mels
        model = self.create_model(settings, n_mels, len(labels) if labels else None)
        flops = speech_eval.flops_per_second_of_audio(model, n_mels)
        info = {"model_config": dataclasses.asdict(self.model_config(settings, n_mels, len(labels) if labels else None)),
                "flops_per_example": flops,
                "data_info": {**data.info(), "output": "class" if labels else "ctc", "labels": labels}}
        return SpeechJob(model.to(device), data, settings, device, labels), info

    def finish(self, run, job: SpeechJob, prepared: Prepared, settings, device):
        data = prepared.data
        metrics, predictions = speech_eval.test_metrics(job.model, data, device, job.labels, beam=settings["beam"])
        from deepskeptic.fileio import atomic_write_json
        atomic_write_json(run.path / "test_predictions.json", predictions)
        return metrics

    # --- using a finished run ---
    def load_model(self, run: Run, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
        config = run.config
        name = config["settings"]["model"]
        model = registry.spec(self.name, name).build(registry.make_config(self.name, name, **config["model_config"]))
        run.load_weights({"model": model})
        return model.to(device).eval(), config["data_info"]

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.speech_report import write_speech_report
        write_speech_report(self, run, metrics)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.spoken import spoken_datasets
        return spoken_datasets()

    def fetch(self, name: str) -> str:
        from deepskeptic.data import spoken
        if name not in spoken.SPECS:
            return super().fetch(name)
        return str(spoken.ensure(name).parent)

    def models_for(self, data: str | None) -> tuple[str, ...]:
        """Default `compare` models: classifiers for one-word data, CTC models for longer transcripts."""
        if data is None:
            return self.default_models
        from deepskeptic.data import spoken
        from deepskeptic.data.audio_sets import read_utterances
        if data in spoken.SPECS:
            words = spoken.SPECS[data].words_per_utterance[1]
        else:
            words = max(len(u.transcript.split()) for u in read_utterances(data)[0])
        return self.default_models if words == 1 else ("mlp-ctc", "lstm-ctc")

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"n_mels": 40, "num_classes": 10,
                    "description": "40 log-mel bands, 10 words (spoken-digits); CTC models: 29 symbols"}
        from deepskeptic.data.audio_sets import read_utterances
        words = sorted({u.transcript for u in read_utterances(data)[0]})
        return {"n_mels": 40, "num_classes": len(words),
                "description": f"40 log-mel bands, {len(words)} distinct transcripts ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        return self.create_model({"model": name, "model_config": {}}, shape["n_mels"], shape["num_classes"])

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks import speech_use
        return speech_use.evaluate(self, run, data)

    def predict(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import speech_use
        return speech_use.predict(self, run, args)
