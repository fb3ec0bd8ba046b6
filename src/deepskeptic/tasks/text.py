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

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.text import TextLSTM
from deepskeptic.runs import Run
from deepskeptic.tasks.base import Task

BUCKET = 50  # batches per length bucket: documents of similar length share a batch (less padding)


class CharInputs:
    """Documents as padded character ids: ids (N, max_len) int32 with 0 = padding, lengths (N,)."""

    def __init__(self, texts: list[str], vocab, max_len: int):
        self.lengths = torch.tensor([max(1, min(len(t), max_len)) for t in texts], dtype=torch.long)
        self.ids = torch.zeros(len(texts), max(1, int(self.lengths.max()) if len(texts) else 1), dtype=torch.int32)
        for i, t in enumerate(texts):
            encoded = vocab.encode(t[:max_len])
            self.ids[i, :len(encoded)] = encoded.int()

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        lengths = self.lengths[index]
        ids = self.ids[index, :int(lengths.max())].long()             # (B, longest in batch)
        return ids.to(device), lengths.to(device)


class BagInputs:
    """Documents as rows of a sparse n-gram count matrix, scaled by log(1 + count), unit length."""

    def __init__(self, matrix):
        from sklearn.preprocessing import normalize
        matrix = matrix.astype(np.float32)
        matrix.data = np.log1p(matrix.data)
        self.matrix = normalize(matrix, norm="l2").tocsr()
        self.lengths = torch.ones(self.matrix.shape[0], dtype=torch.long)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        rows = self.matrix[index.cpu().numpy()].toarray()              # (B, features)
        return (torch.from_numpy(rows).to(device),)


def make_vectorizer(ngram_max: int, max_features: int | None, vocabulary: dict | None = None, min_df: int = 2):
    from sklearn.feature_extraction.text import CountVectorizer
    return CountVectorizer(ngram_range=(1, ngram_max), lowercase=True, dtype=np.float32,
                           min_df=1 if vocabulary else min_df, max_features=None if vocabulary else max_features,
                           vocabulary=vocabulary)


@dataclass
class Prepared:
    data: Any                                   # deepskeptic.data.text.LabelledTexts
    settings: dict[str, Any]
    cache: dict = field(default_factory=dict)   # inputs per reading ('chars' / 'bag'), built once

    def y(self, split: str) -> torch.Tensor:
        return torch.tensor(self.data.labels[split], dtype=torch.long)

    def inputs(self, kind: str) -> dict[str, Any]:
        """{'train'/'val'/'test': inputs, 'vocab' or 'vectorizer': how texts were read}."""
        if kind not in self.cache:
            from deepskeptic.data.text import Vocab
            texts, s = self.data.texts, self.settings
            if kind == "chars":
                vocab = Vocab.from_text("".join(t[:s["max_len"]] for t in texts["train"]),
                                        min_count=max(1, s["min_char_count"]), pad=True)
                out = {split: CharInputs(texts[split], vocab, s["max_len"]) for split in texts}
                out["vocab"] = vocab
            else:
                vectorizer = make_vectorizer(s["ngram_max"], s["max_features"])
                try:
                    train = vectorizer.fit_transform(texts["train"])
                except ValueError:  # every n-gram is too rare (tiny data): keep all of them
                    vectorizer = make_vectorizer(s["ngram_max"], s["max_features"], min_df=1)
                    train = vectorizer.fit_transform(texts["train"])
                out = {"train": BagInputs(train), "vectorizer": vectorizer,
                       **{split: BagInputs(vectorizer.transform(texts[split])) for split in ("val", "test")}}
            self.cache[kind] = out
        return self.cache[kind]


def reading(model_name: str) -> str:
    return "chars" if model_name == "lstm" else "bag"


@torch.no_grad()
def predict_logits(model: nn.Module, inputs, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """(N, classes) logits in eval mode, in batches."""
    was_training = model.training
    model.eval()
    out = [model(*inputs.batch(torch.arange(a, min(a + batch_size, len(inputs))), device)).float().cpu()
           for a in range(0, len(inputs), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


class TextJob(Job):
    unit = "doc"

    def __init__(self, model: nn.Module, prepared: Prepared, kind: str, settings: dict[str, Any], device):
        self.model = model
        self.train_model = torch.compile(model) if settings["compile"] else model
        self.modules = {"model": model}
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "embed" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "embed" not in n)]
        self.optimizers = {"main": torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
            lr=settings["lr"])}
        inputs = prepared.inputs(kind)
        self.train, self.val = inputs["train"], inputs["val"]
        self.y_train, self.y_val = prepared.y("train"), prepared.y("val")
        self.batch_size, self.clip, self.device = settings["batch_size"], settings["clip"], device

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Random batches; within each bucket of BUCKET batches, documents of similar length."""
        n = len(self.train)
        order = torch.randperm(n, generator=generator)
        size = self.batch_size * BUCKET
        batches = []
        for a in range(0, n, size):
            chunk = order[a:a + size]
            chunk = chunk[self.train.lengths[chunk].argsort(stable=True)]
            batches += list(chunk.split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        y = self.y_train[index].to(self.device)
        with ctx.autocast():
            logits = self.train_model(*self.train.batch(index, self.device))
        loss = F.cross_entropy(logits.float(), y)
        ctx.backward_step(loss, clip=self.clip)
        return len(index), {"loss": loss.detach(), "accuracy": (logits.detach().argmax(1) == y).float().mean()}

    def validate(self, epoch: int) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        logits = predict_logits(self.model, self.val, self.device)
        return {"loss": F.cross_entropy(logits, self.y_val).item(),
                "accuracy": (logits.argmax(1) == self.y_val).float().mean().item()}


class TextTask(Task):
    name = "text"
    description = "classify texts: character lstm against mlp and logreg on bag-of-n-gram counts"
    primary_metric = "test_accuracy"
    higher_is_better = True
    default_epochs = 5
    default_models = ("logreg", "mlp", "lstm")
    task_defaults = {
        "text_col": "text",       # CSV column holding the document
        "label_col": "label",     # CSV column holding its class
        "encoding": None,         # None: strict UTF-8
        "val_split": 0.1,         # fraction of documents (by hash of their text) for validation
        "test_split": 0.15,       # fraction of documents (by hash of their text) held out for testing
        "max_len": 512,           # characters of each document the lstm reads (longer ones are cut)
        "min_char_count": 2,      # rarer characters become the unknown symbol (lstm)
        "ngram_max": 2,           # word n-grams 1..ngram_max for mlp and logreg
        "max_features": 20_000,   # the most frequent n-grams kept (seen in >= 2 training documents);
                                  # the mlp's first layer and its optimizer step grow with it
        "clip": 1.0,              # gradient-norm clipping (the LSTM needs it; harmless elsewhere)
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--text-col", help="CSV column with the text (text)")
        parser.add_argument("--label-col", help="CSV column with the label (label)")
        parser.add_argument("--encoding", help="the files' encoding (default: UTF-8, strictly)")
        parser.add_argument("--val-split", type=float, help="fraction of documents for validation (0.1)")
        parser.add_argument("--test-split", type=float, help="fraction of documents held out for testing (0.15)")
        parser.add_argument("--max-len", type=int, help="characters per document the lstm reads (512)")
        parser.add_argument("--ngram-max", type=int, help="longest word n-gram for mlp/logreg (2)")
        parser.add_argument("--max-features", type=int, help="n-grams kept for mlp/logreg (20000)")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        from deepskeptic.data.text import load_labelled
        for key in ("max_len", "ngram_max", "max_features"):
            if settings[key] is not None and settings[key] < 1:
                raise UserError(f"--{key.replace('_', '-')} must be a positive whole number, got {settings[key]}")
        data = load_labelled(str(settings["data"]), text_col=settings["text_col"], label_col=settings["label_col"],
                             encoding=settings["encoding"], val_split=settings["val_split"],
                             test_split=settings["test_split"])
        return Prepared(data, settings)

    def model_config(self, settings: dict[str, Any], prepared: Prepared) -> Any:
        inputs = prepared.inputs(reading(settings["model"]))
        size = ({"vocab_size": len(inputs["vocab"])} if "vocab" in inputs
                else {"num_features": len(inputs["vectorizer"].vocabulary_)})
        return registry.make_config(self.name, settings["model"], **{
            **settings["model_config"], **size, "num_classes": len(prepared.data.classes)})

    def build(self, settings, prepared: Prepared, device):
        cfg = self.model_config(settings, prepared)
        model = registry.spec(self.name, settings["model"]).build(cfg)
        data = prepared.data
        settings["batch_size"] = min(settings["batch_size"], max(8, len(data.texts["train"]) // 16))
        inputs = prepared.inputs(reading(settings["model"]))
        if isinstance(model, TextLSTM):  # per document: ~its mean length in characters, through the LSTM
            mean_len = float(inputs["train"].lengths.float().mean())
            flops = int(mean_len * 2 * 4 * cfg.hidden * (cfg.embed + cfg.hidden) * cfg.layers)
        else:
            flops = 2 * registry.count_params(model)
        info = {"model_config": dataclasses.asdict(cfg), "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "reading": reading(settings["model"]), "skipped": data.skipped,
                              **{split: len(v) for split, v in data.texts.items()}}}
        if "vocab" in inputs:
            info["data_info"]["vocab"] = inputs["vocab"].to_json()
        return TextJob(model.to(device), prepared, reading(settings["model"]), settings, device), info

    def finish(self, run, job: TextJob, prepared: Prepared, settings, device):
        from deepskeptic.fileio import atomic_write_json
        from deepskeptic.tasks.image import classification_metrics
        inputs = prepared.inputs(reading(settings["model"]))
        if "vectorizer" in inputs:  # the n-gram vocabulary: predict and evaluate read texts with it
            vocabulary = {k: int(v) for k, v in inputs["vectorizer"].vocabulary_.items()}
            atomic_write_json(run.path / "features.json", {"ngram_max": settings["ngram_max"], "vocabulary": vocabulary})
        logits = predict_logits(job.model, inputs["test"], device)
        return classification_metrics(logits, prepared.y("test"), prepared.data.classes)

    # --- using a finished run ---
    def load_model(self, run: Run, device: torch.device) -> tuple[nn.Module, Any]:
        """The model and its reader: a Vocab (lstm) or a fitted CountVectorizer (mlp, logreg)."""
        from deepskeptic.data.text import Vocab
        from deepskeptic.fileio import read_json
        config = run.config
        name = config["settings"]["model"]
        model = registry.spec(self.name, name).build(registry.make_config(self.name, name, **config["model_config"]))
        run.load_weights({"model": model})
        if reading(name) == "chars":
            reader = Vocab.from_json(config["data_info"]["vocab"])
        else:
            features = read_json(run.path / "features.json")
            reader = make_vectorizer(features["ngram_max"], None, features["vocabulary"])
        return model.to(device).eval(), reader

    def read(self, run: Run, reader, texts: list[str]):
        if hasattr(reader, "vocabulary"):
            return BagInputs(reader.transform(texts))
        return CharInputs(texts, reader, run.config["settings"]["max_len"])

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.text_use import write_report
        write_report(self, run, prepared, metrics)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.text import text_datasets
        return [d for d in text_datasets() if d["task"] == self.name]

    def fetch(self, name: str) -> str:
        from deepskeptic.data.text import fetch_text_dataset
        return fetch_text_dataset(name)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"vocab_size": 100, "num_features": 20_000, "num_classes": 10,
                    "description": "100 characters or 20,000 n-grams, 10 classes; --data for yours"}
        p = self.prepare({**self.task_defaults, "data": data})
        chars, bag = p.inputs("chars"), p.inputs("bag")
        shape = {"vocab_size": len(chars["vocab"]), "num_features": len(bag["vectorizer"].vocabulary_),
                 "num_classes": len(p.data.classes)}
        return {**shape, "description": f"{shape['vocab_size']} characters or {shape['num_features']:,} n-grams, "
                                        f"{shape['num_classes']} classes ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        size = {"vocab_size": shape["vocab_size"]} if reading(name) == "chars" else {"num_features": shape["num_features"]}
        return registry.create(self.name, name, **size, num_classes=shape["num_classes"])

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks import text_use
        return text_use.evaluate(self, run, data)

    def predict(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import text_use
        return text_use.predict(self, run, args)

    def explain(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks.common import gates
        if run.config["settings"]["model"] != "lstm":
            raise UserError(f"model '{run.config['settings']['model']}' reads n-gram counts and has no gates; "
                            f"explain an lstm run")
        model, vocab = self.load_model(run, torch.device("cpu"))
        return gates.explain(run, model, vocab, args, self.write_report)
