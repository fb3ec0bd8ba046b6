"""The `speech` task: recognise spoken words (lstm, cnn against mlp on pooled features) and
transcripts of several words (lstm-ctc against mlp-ctc), on voices never heard in training.

The primary metric is the word error rate, for both kinds of model: for one-word utterances it
equals 1 - accuracy, so classifiers and CTC recognisers rank on the same scale.

The package: text.py (CTC symbols, decoding, WER and CER) < eval.py (running a model over
utterances, the metrics, FLOPs) < data.py (the prepared data, classes or vocabulary) < jobs.py
(SpecAugment, the engine job) < predict.py (the predictor) < report.py; this file holds the Task only.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

from deepskeptic import recipes
from deepskeptic.data import spoken
from deepskeptic.data.audio_sets import load_speech_data, read_utterances
from deepskeptic.fileio import atomic_write_json
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.settings import Setting
from deepskeptic.tasks.base import Task
from deepskeptic.tasks.speech.data import Prepared, labels_for
from deepskeptic.tasks.speech.data import shape_of as data_shape
from deepskeptic.tasks.speech.eval import flops_per_second_of_audio, test_metrics
from deepskeptic.tasks.speech.jobs import SpeechJob
from deepskeptic.tasks.speech.predict import SpeechPredictor
from deepskeptic.tasks.speech.report import write_speech_report
from deepskeptic.tasks.speech.text import VOCAB_SIZE


class SpeechTask(Task):
    """Recognise speech; the rest of the package holds the pieces (see the module docstring)."""
    name = "speech"
    description = "recognise speech: lstm, cnn and lstm-ctc against mlp on pooled features and mlp-ctc"
    primary_metric = "test_wer"
    higher_is_better = False
    default_epochs = 30
    default_models = ("mlp", "cnn", "lstm")
    predictor_class = SpeechPredictor
    declared_settings = (
        # log-mel bands per 10 ms frame; 8..128, the range the audio loader accepts (its 400-point
        # STFT has 201 frequency bins to share out)
        Setting("n_mels", 40, "int", "log-mel bands (40)", low=8, high=128),
        # fraction held out for validation (of speakers, when the data names them)
        Setting("val_split", 0.1, "float", "fraction held out for validation (0.1)", low=0, high=1, high_open=True),
        # fraction held out for testing, when the data does not say which
        Setting("test_split", 0.2, "float", "fraction held out for testing when the data has no split (0.2)",
                low=0, high=1, high_open=True),
        # use at most this many training utterances (quick tries)
        Setting("limit", None, "int", "use at most this many training utterances", low=1),
        # SpecAugment time and frequency masking during training
        Setting("augment", True, "bool", "SpecAugment time and frequency masking (default: on)"),
        # lstm: also read the frames backwards (the model's default: no)
        Setting("bidirectional", None, "bool", "lstm: also read the frames backwards (default: off)"),
        # classifiers: softens one-hot targets; helps unseen voices
        Setting("label_smoothing", 0.1, "float", "classifiers' label smoothing (0.1)", low=0, high=1, high_open=True),
        # CTC prefix beam width for test decoding (0: greedy only)
        Setting("beam", 8, "int", "CTC beam width for test decoding (8; 0: greedy)", low=0),
        Setting("clip", 5.0, "float", low=0, low_open=True),  # max gradient norm: LSTM gradients spike on long utterances
    )

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        data = load_speech_data(str(settings["data"]), n_mels=settings["n_mels"], val_split=settings["val_split"],
                                test_split=settings["test_split"], limit=settings["limit"],
                                progress=settings.get("progress", True) and sys.stderr.isatty())
        return Prepared(data)

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        return data_shape(prepared.data)

    # build's name for it: the [model] settings, overridden by the data's shape (mel bands, classes
    # or vocabulary: the keys the model's config has)

    def misfit_message(self, model: str, shape: dict[str, Any], error: ValueError) -> str:
        return (f"model '{model}' cannot be built for {shape['n_mels']} mel bands: {error}; "
                f"change its settings or --n-mels, or choose another --model")

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        labels = labels_for(settings["model"], data)
        # Small data sets still need several steps per epoch: at most 1/8 of the utterances per batch.
        settings["batch_size"] = min(settings["batch_size"], max(8, len(data.splits["train"]) // 8))
        fields = {f.name for f in dataclasses.fields(registry.spec(self.name, settings["model"]).config_cls)}
        shape = self.shape_of(prepared)

        def with_flags(s: dict[str, Any]) -> dict[str, Any]:
            model_config = dict(s.get("model_config", {}))
            if s.get("bidirectional") is not None and "bidirectional" in fields:
                model_config["bidirectional"] = s["bidirectional"]   # the flag over the [model] table
            return model_config

        def make_job(s: dict[str, Any]) -> SpeechJob:   # the learning-rate check trains these
            return SpeechJob(self.create_model(s["model"], with_flags(s), shape).to(device), data, s, device, labels)

        recipe = recipes.decide(self, settings, make_job, device, data_key=[len(data.splits["train"]), shape])
        model_config = with_flags(settings)
        model = self.create_model(settings["model"], model_config, shape)
        flops = flops_per_second_of_audio(model, shape["n_mels"])
        info = {"model_config": dataclasses.asdict(self.model_config(settings["model"], model_config, shape)),
                "flops_per_example": flops,
                "data_info": {**data.info(), "output": "class" if labels else "ctc", "labels": labels},
                "recipe": recipe}
        return SpeechJob(model.to(device), data, settings, device, labels), info

    def finish(self, run, job: SpeechJob, prepared: Prepared, settings, device):
        metrics, predictions = test_metrics(job.model, prepared.data, device, job.labels, beam=settings["beam"])
        atomic_write_json(run.path / "test_predictions.json", predictions)
        return metrics

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_speech_report(run, metrics)

    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.speech.export import graphs
        return graphs(self, run)

    def datasets(self) -> list[dict[str, Any]]:
        return spoken.spoken_datasets()

    def fetch(self, name: str) -> str:
        if name not in spoken.SPECS:
            return super().fetch(name)
        return str(spoken.ensure(name).parent)

    def models_for(self, data: str | None) -> tuple[str, ...]:
        """Default `compare` models: classifiers for one-word data, CTC models for longer transcripts."""
        if data is None:
            return self.default_models
        if data in spoken.SPECS:
            words = spoken.SPECS[data].words_per_utterance[1]
        else:
            words = max(len(u.transcript.split()) for u in read_utterances(data)[0])
        return self.default_models if words == 1 else ("mlp-ctc", "lstm-ctc")

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"n_mels": 40, "num_classes": 10, "vocab": VOCAB_SIZE,
                    "description": "40 log-mel bands, 10 words (spoken-digits); CTC models: 29 symbols"}
        words = sorted({u.transcript for u in read_utterances(data)[0]})
        return {"n_mels": 40, "num_classes": len(words), "vocab": VOCAB_SIZE,
                "description": f"40 log-mel bands, {len(words)} distinct transcripts ({data})"}
