"""The `textgen` task: character language models; lstm on trial against rnn, n-gram and compressors.

Training is truncated backpropagation through time over contiguous streams: the training text is
cut into ``batch_size`` equal streams, side by side; each step reads the next ``seq_len``
characters of every stream, starting from the hidden state the previous step ended with
(detached, so gradients stop at the window's start). The state is reset to zero at the start of
each pass over the text and saved with every checkpoint (``extra_state``), so resume is exact.

An epoch is one pass over the training text or ``epoch_chars`` characters, whichever is less: a
pass over a large corpus spans several epochs, so learning curves have points every few minutes.
With ``keep_best`` (the default) the test text is scored, and model.safetensors saved, with the
weights of the epoch whose validation bpc was lowest (``best_epoch`` in metrics.json); the test
text itself never steers training.

Classical baselines (``ngram``, ``zlib``, ``bz2``, ``lzma``) are registered models whose builder
returns a parameter-free marker; ``build`` turns them into a one-step, one-epoch job whose step is
the fit (counting, or compressing the training text), so they run through the same engine, run
folders and ``compare`` as the networks, and their fitting time is their ``train_seconds``.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepskeptic import recipes
from deepskeptic.data.text import fetch_text_dataset, text_datasets
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_text
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.settings import Setting
from deepskeptic.tasks.base import ExplainOptions, GenerateOptions, PredictOptions, Task
from deepskeptic.tasks.common import gates
from deepskeptic.tasks.textgen import data, report
from deepskeptic.tasks.textgen.data import Prepared
from deepskeptic.tasks.textgen.jobs import ClassicalJob, TextGenJob
from deepskeptic.tasks.textgen.lm import LN2, flops_per_char, stream_bpc
from deepskeptic.tasks.textgen.predict import TextGenPredictor, check_generate_options

NETWORK_FLAGS = ("hidden", "layers", "embed", "dropout")  # task flags that set the networks' [model] settings


class TextGenTask(Task):
    name = "textgen"
    description = "write text like a corpus: character lstm against rnn, n-gram and zlib/bz2/lzma"
    primary_metric = "test_bpc"
    higher_is_better = False
    default_epochs = 5
    default_models = ("lstm", "rnn", "ngram", "zlib", "bz2", "lzma")
    declared_settings = (
        # characters per truncated-BPTT window (the state carries further)
        Setting("seq_len", 128, "int", "characters per backpropagation window (128)", low=1),
        # gradient-norm clipping: recurrent nets have rare huge gradients
        Setting("clip", 1.0, "float", "gradient-norm clipping threshold (1.0)", low=0, low_open=True),
        # recurrent units per layer (the model's default, 512, when unset)
        Setting("hidden", None, "int", "recurrent units per layer (512)", low=1),
        Setting("layers", None, "int", "recurrent layers (1)", low=1),  # the model's default, 1, when unset
        Setting("embed", None, "int", "character embedding width (64)", low=1),  # 64 when unset
        # dropout (0.1 when unset); raise it for long GPU runs on small corpora
        Setting("dropout", None, "float", "dropout probability (0.1)", low=0, high=1, high_open=True),
        # characters per epoch at most: a validation point every few CPU minutes
        Setting("epoch_chars", 500_000, "int", "characters per epoch at most (500000)", low=1),
        # test (and save) the weights of the epoch with the best validation bpc: a small corpus is
        # overfitted long before a generous budget ends
        Setting("keep_best", True, "bool", "keep the weights of the best validation epoch (default on)"),
        # validation text: for learning curves and the n-gram order
        Setting("val_split", 0.05, "float", "fraction of the text for validation (0.05)",
                low=0, high=1, low_open=True, high_open=True),
        # held-out test text: the last 10 % (or 10 % of documents by hash)
        Setting("test_split", 0.1, "float", "fraction of the text held out for testing (0.1)",
                low=0, high=1, low_open=True, high_open=True),
        Setting("encoding", None, "str", "the text's encoding (default: UTF-8, strictly)"),  # None: strict UTF-8
        # rarer training characters become the unknown symbol, so the model learns a probability
        # for characters it never saw (0 and 1: keep every character)
        Setting("min_char_count", 2, "int", "characters rarer than this become unknown (2)", low=0),
    )
    commands = frozenset({"generate", "explain"})
    predictor_class = TextGenPredictor

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        return data.prepare(settings)

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        return {"vocab_size": len(prepared.vocab)}

    _config = Task.model_config   # build's name for it: the data's vocabulary wins over [model] settings

    def _model_config(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The run's [model] settings with the network flags (--hidden, ...) that the model has."""
        fields = {f.name for f in dataclasses.fields(registry.spec(self.name, settings["model"]).config_cls)}
        flags = {k: settings[k] for k in NETWORK_FLAGS if settings.get(k) is not None and k in fields}
        return {**settings["model_config"], **flags}                    # baselines ignore network flags

    def build(self, settings, prepared: Prepared, device):
        name, shape = settings["model"], self.shape_of(prepared)
        one_step = registry.spec(self.name, name).one_step
        if not one_step:
            self._streams(settings, prepared)   # a --seq-len longer than the text: the error first

            def make_job(s: dict[str, Any]) -> TextGenJob:   # the recipe rule's probes train these
                s = {**s, "batch_size": min(s["batch_size"], self._streams(s, prepared))}
                return TextGenJob(self.create_model(name, self._model_config(s), shape).to(device), prepared, s, device)

            # model size and window sized to the budget, the learning rate checked: before the model exists
            recipe = recipes.decide(self, settings, make_job, device, data_key=[len(prepared.train), len(prepared.vocab)])
            settings["batch_size"] = min(settings["batch_size"], self._streams(settings, prepared))
        model = self.create_model(name, self._model_config(settings), shape)
        corpus = prepared.corpus
        info = {"model_config": dataclasses.asdict(self._config(name, self._model_config(settings), shape)),
                "data_info": {"name": corpus.name, "source": corpus.source, "split": corpus.split,
                              "train_chars": len(corpus.train), "val_chars": len(corpus.val),
                              "test_chars": len(corpus.test), "vocab": prepared.vocab.to_json()}}
        if one_step:
            info["flops_per_example"] = None
            return ClassicalJob(model, prepared), info
        info["flops_per_example"] = flops_per_char(model)  # per character
        info["recipe"] = recipe
        return TextGenJob(model.to(device), prepared, settings, device), info

    @staticmethod
    def _streams(settings: dict[str, Any], prepared: Prepared) -> int:
        """Streams of at least one window the training text holds: the batch size's upper bound."""
        streams = (len(prepared.train) - 1) // settings["seq_len"]
        if streams < 1:
            raise UserError(f"the training text has {len(prepared.train)} characters, shorter than one sequence "
                            f"of --seq-len {settings['seq_len']}; give a longer text or a smaller --seq-len")
        return streams

    def finish(self, run, job, prepared: Prepared, settings, device):
        if registry.spec(self.name, settings["model"]).one_step:
            metrics = {"test_bpc": job.bpc("test"), "val_bpc": job.bpc("val")}
            if job.marker.kind == "ngram":
                metrics.update(ngram_order=job.fitted["order"],
                               val_bpc_by_order={str(k): v for k, v in job.fitted["val_bpc_by_order"].items()})
        else:
            best_epoch = job.best.restore()
            if best_epoch is not None:  # the saved weights are the ones the test numbers belong to
                run.save_weights(job.modules)
            test_bpc, chars = stream_bpc(job.model, prepared.test, device)
            metrics = {"test_bpc": test_bpc, "test_loss": test_bpc * LN2,
                       "val_bpc": stream_bpc(job.model, prepared.val, device)[0], "best_epoch": best_epoch}
            history = run.history()
            if history:
                metrics["chars_per_second"] = history[-1].get("char_per_second")
        metrics.update(test_chars=len(prepared.corpus.test), vocab_size=len(prepared.vocab))
        return metrics

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        report.write_report(self, run, prepared, metrics)

    def comparison_sections(self, report_, summary: dict) -> None:
        report.comparison_samples(self, report_, summary)

    def datasets(self) -> list[dict[str, Any]]:
        return [d for d in text_datasets() if d["task"] == self.name]

    def fetch(self, name: str) -> str:
        return fetch_text_dataset(name)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"vocab_size": 100, "description": "a vocabulary of 100 characters; --data for yours"}
        p = self.prepare({**self.task_defaults, "data": data})
        return {"vocab_size": len(p.vocab), "description": f"{len(p.vocab)} characters ({data})"}

    # --- using a finished run ---
    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        """The run's CharLM with its weights; a classical baseline's marker (nothing saved to load)."""
        settings = run.config["settings"]
        model = registry.create(self.name, settings["model"], **run.config["model_config"])
        if not registry.spec(self.name, settings["model"]).one_step:
            run.load_weights({"model": model})
        return {"model": model.to(device).eval()}

    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.textgen.export import graphs
        return graphs(self, run)

    def predict(self, run: Run, options: PredictOptions) -> int:
        raise UserError(f"task '{self.name}' has no predict command")

    def generate(self, run: Run, options: GenerateOptions) -> int:
        """`deepskeptic generate`: samples streamed to the terminal as they come, or printed as
        JSON (--json); each also written to --out/sample-I.txt."""
        o = options
        check_generate_options(o.length, o.n, o.temperature, o.top_k)
        predictor = self.predictor(run)
        predictor.require_network()
        unknown = predictor.unknown_chars(o.prime)
        if unknown:
            print(f"note: {unknown} character(s) of --prime are not in the run's vocabulary; read as unknown",
                  file=sys.stderr)

        def on_sample(i: int) -> None:
            if i:
                sys.stdout.write("\n" + "-" * 40 + "\n")
            sys.stdout.write(o.prime)
            sys.stdout.flush()

        def on_char(ch: str) -> None:
            sys.stdout.write(ch)
            sys.stdout.flush()

        samples = predictor.generate(o.prime, o.length, o.temperature, o.top_k, o.n, o.seed,
                                     on_sample=None if o.as_json else on_sample,
                                     on_char=None if o.as_json else on_char)
        if o.as_json:
            print(json.dumps({"run": str(run.path), "prime": o.prime, "temperature": o.temperature,
                              "top_k": o.top_k, "seed": o.seed, "samples": samples}, ensure_ascii=False, indent=2))
        else:
            sys.stdout.write("\n")
        if o.out:
            for i, text in enumerate(samples):
                atomic_write_text(Path(o.out) / f"sample-{i}.txt", text)
        return 0

    def explain(self, run: Run, options: ExplainOptions) -> int:
        predictor = self.predictor(run)
        return gates.explain(run, predictor.model, predictor.vocab, options, self.write_report)
