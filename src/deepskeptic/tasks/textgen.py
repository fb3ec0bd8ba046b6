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

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import BestWeights, Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.text import CharLM, ClassicalModel
from deepskeptic.runs import Run
from deepskeptic.tasks.base import Task
from deepskeptic.tasks import textgen_baselines as baselines

LN2 = math.log(2)
CLASSICAL = ("ngram", "zlib", "bz2", "lzma")  # fitted, not trained: deterministic, one step


@dataclass
class Prepared:
    corpus: Any                      # deepskeptic.data.text.Corpus
    vocab: Any                       # deepskeptic.data.text.Vocab
    train: torch.Tensor              # (N,) int64 character ids
    val: torch.Tensor
    test: torch.Tensor


@torch.no_grad()
def stream_bpc(model: CharLM, ids: torch.Tensor, device: torch.device, streams: int = 64,
               chunk: int = 512) -> tuple[float, int]:
    """Bits per character of ids[1:] given everything before it, in eval mode.

    The text is cut into up to ``streams`` contiguous pieces read side by side (each carries its
    own state from its start), ``chunk`` characters at a time. Returns (bpc, characters scored).
    """
    was_training = model.training
    model.eval()
    x_all, y_all = ids[:-1], ids[1:]
    n = len(y_all)
    streams = max(1, min(streams, n // 256 or 1))
    length = n // streams
    total, count = 0.0, 0
    pieces = [(x_all[:streams * length].view(streams, length), y_all[:streams * length].view(streams, length))]
    if n - streams * length:                                  # the remainder as one more stream
        pieces.append((x_all[streams * length:][None], y_all[streams * length:][None]))
    for x, y in pieces:
        state = model.initial_state(x.shape[0], device)
        for start in range(0, x.shape[1], chunk):
            xb, yb = x[:, start:start + chunk].to(device), y[:, start:start + chunk].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits, state = model(xb, state)
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                     reduction="sum").item()
            count += yb.numel()
    model.train(was_training)
    return total / max(1, count) / LN2, count


class TextGenJob(Job):
    """Truncated BPTT over ``batch`` contiguous streams of the training text."""
    unit = "char"

    def __init__(self, model: CharLM, prepared: Prepared, settings: dict[str, Any], device: torch.device):
        self.model = model
        self.train_model = torch.compile(model) if settings["compile"] else model
        self.modules = {"model": model}
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.startswith("embed")]
        rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.startswith("embed"))]
        self.optimizers = {"main": torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
            lr=settings["lr"])}
        self.device = device
        self.seq_len, self.batch = settings["seq_len"], settings["batch_size"]
        self.clip = settings["clip"]
        ids = prepared.train
        length = (len(ids) - 1) // self.batch                     # characters per stream
        self.inputs = ids[:self.batch * length].view(self.batch, length).to(device)        # (B, L)
        self.targets = ids[1:self.batch * length + 1].view(self.batch, length).to(device)  # (B, L)
        self.windows_per_pass = length // self.seq_len
        self.windows_per_epoch = max(1, min(self.windows_per_pass,
                                            settings["epoch_chars"] // (self.batch * self.seq_len)))
        self.val = prepared.val
        self.state: tuple[torch.Tensor, ...] | None = None
        self.best = BestWeights(model, settings["keep_best"])   # the weights of the lowest validation bpc
        self.epochs_validated = 0

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Window indices of this epoch, continuing the pass where the last epoch stopped."""
        first = epoch * self.windows_per_epoch
        return [(first + i) % self.windows_per_pass for i in range(self.windows_per_epoch)]

    def train_step(self, window: int, ctx: StepContext):
        if window == 0 or self.state is None:                  # a new pass starts from a zero state
            self.state = self.model.initial_state(self.batch, self.device)
        start = window * self.seq_len
        x = self.inputs[:, start:start + self.seq_len]             # (B, T)
        y = self.targets[:, start:start + self.seq_len]            # (B, T)
        with ctx.autocast():
            logits, state = self.train_model(x, self.state)        # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        ctx.backward_step(loss, clip=self.clip)
        self.state = tuple(s.detach() for s in state)             # carried, but no gradient through it
        loss = loss.detach()
        return x.numel(), {"loss": loss, "bpc": loss / LN2}

    def validate(self, epoch: int) -> dict[str, float]:
        bpc, _ = stream_bpc(self.model, self.val, self.device)
        self.epochs_validated += 1
        self.best.offer(bpc, self.epochs_validated)
        return {"bpc": bpc}

    def extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epochs_validated": self.epochs_validated, "best": self.best.state()}
        if self.state is not None:
            out["state"] = list(self.state)
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.state = tuple(s.to(self.device) for s in state["state"]) if "state" in state else None
        self.epochs_validated = state.get("epochs_validated", 0)
        self.best.load(state.get("best"), self.device)


class ClassicalJob(Job):
    """A classical baseline in the engine: one epoch of one step, the step being the fit."""
    unit = "char"

    def __init__(self, marker: ClassicalModel, prepared: Prepared):
        self.marker, self.prepared = marker, prepared
        self.modules, self.optimizers = {"model": marker}, {}
        self.fitted: Any = None

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        return [0]

    def fit(self) -> None:
        p, cfg = self.prepared, self.marker.cfg
        if self.marker.kind == "ngram":
            model = baselines.NGramLM(len(p.vocab), cfg.max_order, cfg.smoothing).fit(p.train.numpy())
            by_order = model.bpc_by_order(p.val.numpy())
            order = min(by_order, key=by_order.get)
            self.fitted = {"model": model, "order": order, "val_bpc_by_order": by_order}
        else:
            self.fitted = {"train_bits": baselines.compressed_bits(self.marker.kind, p.corpus.train, cfg.level)}

    def train_step(self, batch, ctx: StepContext):
        self.fit()
        return len(self.prepared.corpus.train), {}

    def bpc(self, split: str) -> float:
        if self.fitted is None:                                # resumed after training, before finish
            self.fit()
        p = self.prepared
        if self.marker.kind == "ngram":
            probs = self.fitted["model"].probabilities(getattr(p, split).numpy())[self.fitted["order"] - 1]
            return float(-np.log2(probs).mean())
        held = p.corpus.val if split == "val" else p.corpus.test
        return baselines.conditional_bpc(self.marker.kind, p.corpus.train, held, self.marker.cfg.level,
                                         self.fitted["train_bits"])

    def validate(self, epoch: int) -> dict[str, float]:
        return {"bpc": self.bpc("val")}


def flops_per_char(model: CharLM) -> int:
    """Forward FLOPs per character (a multiply-add counts 2): the recurrent layers and the head.

    Counted from the shapes, because torch's FLOP counter does not see inside the fused nn.LSTM.
    """
    gates = 4 if model.cell == "lstm" else 1
    cfg = model.cfg
    width, flops = cfg.embed, 0
    for _ in range(cfg.layers):
        flops += 2 * gates * cfg.hidden * (width + cfg.hidden)
        width = cfg.hidden
    return flops + 2 * cfg.hidden * cfg.vocab_size


class TextGenTask(Task):
    name = "textgen"
    description = "write text like a corpus: character lstm against rnn, n-gram and zlib/bz2/lzma"
    primary_metric = "test_bpc"
    higher_is_better = False
    default_epochs = 5
    default_models = ("lstm", "rnn", "ngram", "zlib", "bz2", "lzma")
    task_defaults = {
        "seq_len": 128,           # characters per truncated-BPTT window (the state carries further)
        "clip": 1.0,              # gradient-norm clipping: recurrent nets have rare huge gradients
        "hidden": None,           # recurrent units per layer (the model's default, 512, when unset)
        "layers": None,           # recurrent layers (the model's default, 1, when unset)
        "embed": None,            # character embedding width (64 when unset)
        "dropout": None,          # dropout (0.1 when unset); raise it for long GPU runs on small corpora
        "epoch_chars": 500_000,   # characters per epoch at most: a validation point every few CPU minutes
        "keep_best": True,        # test (and save) the weights of the epoch with the best validation bpc:
                                  # a small corpus is overfitted long before a generous budget ends
        "val_split": 0.05,        # validation text: for learning curves and the n-gram order
        "test_split": 0.1,        # held-out test text: the last 10 % (or 10 % of documents by hash)
        "encoding": None,         # text encoding; None: strict UTF-8
        "min_char_count": 2,      # rarer training characters become the unknown symbol, so the
                                  # model learns a probability for characters it never saw
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seq-len", type=int, help="characters per backpropagation window (128)")
        parser.add_argument("--hidden", type=int, help="recurrent units per layer (512)")
        parser.add_argument("--layers", type=int, help="recurrent layers (1)")
        parser.add_argument("--embed", type=int, help="character embedding width (64)")
        parser.add_argument("--dropout", type=float, help="dropout probability (0.1)")
        parser.add_argument("--clip", type=float, help="gradient-norm clipping threshold (1.0)")
        parser.add_argument("--epoch-chars", type=int, help="characters per epoch at most (500000)")
        parser.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                            help="keep the weights of the best validation epoch (default on)")
        parser.add_argument("--val-split", type=float, help="fraction of the text for validation (0.05)")
        parser.add_argument("--test-split", type=float, help="fraction of the text held out for testing (0.1)")
        parser.add_argument("--encoding", help="the text's encoding (default: UTF-8, strictly)")
        parser.add_argument("--min-char-count", type=int, help="characters rarer than this become unknown (2)")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        from deepskeptic.data.text import Vocab, load_corpus
        corpus = load_corpus(str(settings["data"]), encoding=settings["encoding"],
                             val_split=settings["val_split"], test_split=settings["test_split"])
        for split in ("val", "test"):
            if len(getattr(corpus, split)) < 2:
                raise UserError(f"{corpus.name} is too short to hold out a {split} text; give a longer text")
        vocab = Vocab.from_text(corpus.train, min_count=max(1, settings["min_char_count"]))
        return Prepared(corpus, vocab, vocab.encode(corpus.train), vocab.encode(corpus.val), vocab.encode(corpus.test))

    def adjust_settings(self, settings: dict[str, Any]) -> None:
        if self.seed_independent(settings["model"]):
            settings.update(epochs=1, time_budget=None)  # fitting is one step; there is nothing to iterate

    def seed_independent(self, model: str) -> bool:
        return model in CLASSICAL

    def model_config(self, settings: dict[str, Any], vocab_size: int) -> Any:
        overrides = {k: settings[k] for k in ("hidden", "layers", "embed", "dropout") if settings.get(k) is not None}
        spec = registry.spec(self.name, settings["model"])
        valid = {f.name for f in dataclasses.fields(spec.config_cls)}
        overrides = {k: v for k, v in overrides.items() if k in valid}   # baselines ignore network flags
        return registry.make_config(self.name, settings["model"], **{
            **settings["model_config"], **overrides, "vocab_size": vocab_size})

    def create_model(self, settings: dict[str, Any], vocab_size: int) -> nn.Module:
        cfg = self.model_config(settings, vocab_size)
        for key in ("hidden", "layers", "embed"):
            if getattr(cfg, key, 1) < 1:
                raise UserError(f"--{key} must be a positive whole number, got {getattr(cfg, key)}")
        if not 0 <= getattr(cfg, "dropout", 0) < 1:
            raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
        try:
            return registry.spec(self.name, settings["model"]).build(cfg)
        except ValueError as exc:
            raise UserError(f"model '{settings['model']}': {exc}") from None

    def build(self, settings, prepared: Prepared, device):
        model = self.create_model(settings, len(prepared.vocab))
        corpus = prepared.corpus
        info = {"model_config": dataclasses.asdict(self.model_config(settings, len(prepared.vocab))),
                "data_info": {"name": corpus.name, "source": corpus.source, "split": corpus.split,
                              "train_chars": len(corpus.train), "val_chars": len(corpus.val),
                              "test_chars": len(corpus.test), "vocab": prepared.vocab.to_json()}}
        if isinstance(model, ClassicalModel):
            info["flops_per_example"] = None
            return ClassicalJob(model, prepared), info
        if settings["seq_len"] < 1 or settings["clip"] <= 0 or settings["epoch_chars"] < 1:
            raise UserError("--seq-len and --epoch-chars must be positive whole numbers and --clip positive")
        streams = (len(prepared.train) - 1) // settings["seq_len"]
        if streams < 1:
            raise UserError(f"the training text has {len(prepared.train)} characters, shorter than one sequence "
                            f"of --seq-len {settings['seq_len']}; give a longer text or a smaller --seq-len")
        settings["batch_size"] = min(settings["batch_size"], streams)  # every stream holds at least one window
        info["flops_per_example"] = flops_per_char(model)  # per character
        return TextGenJob(model.to(device), prepared, settings, device), info

    def finish(self, run, job, prepared: Prepared, settings, device):
        if isinstance(job, ClassicalJob):
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

    # --- using a finished run ---
    def load_model(self, run: Run, device: torch.device) -> tuple[nn.Module, Any]:
        from deepskeptic.data.text import Vocab
        config = run.config
        model = registry.spec(self.name, config["settings"]["model"]).build(
            registry.make_config(self.name, config["settings"]["model"], **config["model_config"]))
        if not isinstance(model, ClassicalModel):
            run.load_weights({"model": model})
        return model.to(device).eval(), Vocab.from_json(config["data_info"]["vocab"])

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.textgen_use import write_report
        write_report(self, run, prepared, metrics)

    def comparison_sections(self, report, summary: dict) -> None:
        from deepskeptic.tasks.textgen_use import comparison_samples
        comparison_samples(self, report, summary)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.text import text_datasets
        return [d for d in text_datasets() if d["task"] == self.name]

    def fetch(self, name: str) -> str:
        from deepskeptic.data.text import fetch_text_dataset
        return fetch_text_dataset(name)

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"vocab_size": 100, "description": "a vocabulary of 100 characters; --data for yours"}
        p = self.prepare({**self.task_defaults, "data": data})
        return {"vocab_size": len(p.vocab), "description": f"{len(p.vocab)} characters ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        return self.create_model({"model": name, "model_config": {}}, shape["vocab_size"])

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks import textgen_use
        return textgen_use.evaluate(self, run, data)

    def generate(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import textgen_use
        return textgen_use.generate(self, run, args)

    def explain(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks.common import gates
        model, vocab = self.load_model(run, torch.device("cpu"))
        return gates.explain(run, model, vocab, args, self.write_report)
