"""The `text` task: classify documents; a character LSTM on trial against mlp and logreg on n-grams.

Inputs, by model:
- ``lstm`` reads characters, not words: no tokenizer to choose, no out-of-vocabulary words (a
  misspelling or a name still reaches the model letter by letter), any language and source code
  alike, and the same reading as ``textgen`` -- so ``explain`` can show its gates. Documents are
  cut to their first ``max_len`` characters; batches group documents of similar length.
- ``mlp`` and ``logreg`` read bag-of-n-gram counts: scikit-learn's CountVectorizer over lower-cased
  word 1- and 2-grams seen in at least 2 training documents (at most ``max_features``), then
  log(1 + count) and unit length per document. The n-gram vocabulary is saved in the run folder
  (features.json), never pickled.
Documents are split by a hash of their text (data/text.py), so duplicates never straddle the split.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from deepskeptic import recipes
from deepskeptic.data.text import fetch_text_dataset, load_labelled, text_datasets
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_json
from deepskeptic.models import registry
from deepskeptic.models.text import TextLSTM
from deepskeptic.runs import Run
from deepskeptic.settings import Setting
from deepskeptic.tasks.base import ExplainOptions, PredictOptions, Task
from deepskeptic.tasks.common import gates
from deepskeptic.tasks.common.classification import classification_metrics
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.text import report
from deepskeptic.tasks.text.data import READING_NAMES, READINGS, Prepared, predict_logits, reads
from deepskeptic.tasks.text.jobs import TextJob
from deepskeptic.tasks.text.predict import TextPredictor


class TextTask(Task):
    name = "text"
    description = "classify texts: character lstm against mlp and logreg on bag-of-n-gram counts"
    primary_metric = "test_accuracy"
    higher_is_better = True
    default_epochs = 5
    default_models = ("logreg", "mlp", "lstm")
    declared_settings = (
        Setting("text_col", "text", "str", "CSV column with the text (text)"),     # CSV column holding the document
        Setting("label_col", "label", "str", "CSV column with the label (label)"),  # CSV column holding its class
        Setting("encoding", None, "str", "the files' encoding (default: UTF-8, strictly)"),  # None: strict UTF-8
        # fraction of documents (by hash of their text) for validation
        Setting("val_split", 0.1, "float", "fraction of documents for validation (0.1)",
                low=0, high=1, low_open=True, high_open=True),
        # fraction of documents (by hash of their text) held out for testing
        Setting("test_split", 0.15, "float", "fraction of documents held out for testing (0.15)",
                low=0, high=1, low_open=True, high_open=True),
        # characters of each document the lstm reads (longer ones are cut)
        Setting("max_len", 512, "int", "characters per document the lstm reads (512)", low=1),
        Setting("min_char_count", 2, "int", low=0),     # rarer characters become the unknown symbol (lstm)
        Setting("ngram_max", 2, "int", "longest word n-gram for mlp/logreg (2)", low=1),  # word n-grams 1..ngram_max
        # the most frequent n-grams kept (seen in >= 2 training documents); the mlp's first layer
        # and its optimizer step grow with it
        Setting("max_features", 20_000, "int", "n-grams kept for mlp/logreg (20000)", low=1),
        Setting("clip", 1.0, "float", low=0, low_open=True),  # gradient-norm clipping (the LSTM needs it; harmless elsewhere)
    )
    commands = frozenset({"explain"})
    predictor_class = TextPredictor

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        data = load_labelled(str(settings["data"]), text_col=settings["text_col"], label_col=settings["label_col"],
                             encoding=settings["encoding"], val_split=settings["val_split"],
                             test_split=settings["test_split"])
        return Prepared(data, settings)

    def shape_of(self, prepared: Prepared, readings: tuple[str, ...] = READINGS) -> dict[str, Any]:
        """{num_classes, vocab_size (characters, with padding and unknown), num_features (n-grams)}:
        the sizes of the ``readings`` asked for (each built on first use; the default: both)."""
        shape = {}
        if "chars" in readings:
            shape["vocab_size"] = len(prepared.inputs("chars")["vocab"])
        if "ngram-counts" in readings:
            shape["num_features"] = len(prepared.inputs("ngram-counts")["vectorizer"].vocabulary_)
        return {**shape, "num_classes": len(prepared.data.classes)}


    def build(self, settings, prepared: Prepared, device):
        reading = reads(settings["model"])
        data = prepared.data
        settings["batch_size"] = min(settings["batch_size"], max(8, len(data.texts["train"]) // 16))
        readings: dict[int, Prepared] = {}   # the documents read at each max_len a probe tries
        prepared.settings = dict(prepared.settings)   # what its cache was read with, apart from the run's

        def read_at(max_len: int) -> Prepared:
            if reading != "chars" or prepared.settings["max_len"] == max_len:
                return prepared
            if max_len not in readings:       # its own cache: the shared one stays as it is
                readings[max_len] = Prepared(data, {**prepared.settings, "max_len": max_len})
            return readings[max_len]

        def make_job(s: dict[str, Any]) -> TextJob:   # the recipe rule's probes train these
            read = read_at(s["max_len"])
            probe = self.create_model(s["model"], s["model_config"], self.shape_of(read, (reading,)))
            return TextJob(probe.to(device), read, reading, s, device)

        # reading length and size sized to the budget, the learning rate checked: before the model exists
        recipe = recipes.decide(self, settings, make_job, device, data_key=[len(data.texts["train"]), reading])
        if read_at(settings["max_len"]) is not prepared:   # the run reads as its recipe says; finish,
            chosen = read_at(settings["max_len"])          # predict and the vocabulary follow it
            prepared.settings, prepared.cache["chars"] = chosen.settings, chosen.inputs("chars")
        inputs = prepared.inputs(reading)
        cfg = self.model_config(settings["model"], settings["model_config"], self.shape_of(prepared, (reading,)))
        model = registry.spec(self.name, settings["model"]).build(cfg)
        if isinstance(model, TextLSTM):  # per document: ~its mean length in characters, through the LSTM
            mean_len = float(inputs["train"].lengths.float().mean())
            flops = int(mean_len * 2 * 4 * cfg.hidden * (cfg.embed + cfg.hidden) * cfg.layers)
        else:
            flops = 2 * registry.count_params(model)
        info = {"model_config": dataclasses.asdict(cfg), "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "reading": READING_NAMES[reading], "skipped": data.skipped,
                              **{split: len(v) for split, v in data.texts.items()}},
                "recipe": recipe}
        if "vocab" in inputs:
            info["data_info"]["vocab"] = inputs["vocab"].to_json()
        return TextJob(model.to(device), prepared, reading, settings, device), info

    def finish(self, run, job: TextJob, prepared: Prepared, settings, device):
        inputs = prepared.inputs(reads(settings["model"]))
        if "vectorizer" in inputs:  # the n-gram vocabulary: predict and evaluate read texts with it
            vocabulary = {k: int(v) for k, v in inputs["vectorizer"].vocabulary_.items()}
            atomic_write_json(run.path / "features.json", {"ngram_max": settings["ngram_max"], "vocabulary": vocabulary})
        logits = predict_logits(job.model, inputs["test"], device)
        return prefixed(classification_metrics(logits, prepared.y("test"), prepared.data.classes), "test")

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        report.write_report(self, run, prepared, metrics)

    def datasets(self) -> list[dict[str, Any]]:
        return [d for d in text_datasets() if d["task"] == self.name]

    def fetch(self, name: str) -> str:
        return fetch_text_dataset(name)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"vocab_size": 100, "num_features": 20_000, "num_classes": 10,
                    "description": "100 characters or 20,000 n-grams, 10 classes; --data for yours"}
        shape = self.shape_of(self.prepare({**self.task_defaults, "data": data}))
        return {**shape, "description": f"{shape['vocab_size']} characters or {shape['num_features']:,} n-grams, "
                                        f"{shape['num_classes']} classes ({data})"}

    # --- using a finished run ---
    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.text.export import graphs
        return graphs(self, run)

    def predict(self, run: Run, options: PredictOptions) -> int:
        predictor = self.predictor(run)
        results = predictor.predict_command(options)
        print(json.dumps(results, indent=2, ensure_ascii=False) if options.as_json else predictor.format(results))
        return 0

    def explain(self, run: Run, options: ExplainOptions) -> int:
        model = run.config["settings"]["model"]
        if reads(model) != "chars":
            raise UserError(f"model '{model}' reads n-gram counts and has no gates; explain an lstm run")
        predictor = self.predictor(run)
        return gates.explain(run, predictor.model, predictor.reader, options, self.write_report)
