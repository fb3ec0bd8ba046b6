"""Using a finished textgen run: sample text, evaluate bpc, and the run and comparison reports."""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from deepskeptic.errors import UserError
from deepskeptic.models.text import CharLM
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run

REPORT_TEMPERATURES = (0.5, 0.8, 1.0)
REPORT_SAMPLE_CHARS = 300


@torch.no_grad()
def sample(model: CharLM, vocab, prime: str, length: int, *, temperature: float = 0.8, top_k: int = 0,
           generator: torch.Generator | None = None, on_char: Callable[[str], None] | None = None) -> str:
    """Generate ``length`` characters after ``prime`` (a newline when empty); returns them.

    temperature 0 picks the most likely character; top_k > 0 samples among the k most likely.
    The unknown symbol is never generated. ``on_char`` receives each character as it comes.
    """
    model.eval()
    device = next(model.parameters()).device
    ids = vocab.encode(prime or "\n").to(device)
    logits, state = model(ids[None], None)                         # (1, P, V): the prime sets the state
    last = logits[0, -1].float()
    out = []
    for _ in range(length):
        last[: vocab.unk + 1] = float("-inf")                      # padding / unknown: never emitted
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            scaled = last / temperature
            if 0 < top_k < len(scaled):
                kth = scaled.topk(top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            nxt = int(torch.multinomial(scaled.softmax(-1).cpu(), 1, generator=generator))
        ch = vocab.itos[nxt]
        out.append(ch)
        if on_char is not None:
            on_char(ch)
        logits, state = model(torch.tensor([[nxt]], device=device), state)
        last = logits[0, -1].float()
    return "".join(out)


def _network(task, run: Run) -> tuple[CharLM, Any]:
    model, vocab = task.load_model(run, torch.device("cpu"))
    if not isinstance(model, CharLM):
        raise UserError(f"run {run.path} is the classical baseline '{run.config['settings']['model']}', "
                        f"which cannot generate; use an lstm or rnn run")
    return model, vocab


def generate(task, run: Run, args: argparse.Namespace) -> int:
    if args.length < 1 or args.n < 1:
        raise UserError("--length and --n must be at least 1")
    if args.temperature < 0 or args.top_k < 0:
        raise UserError("--temperature and --top-k must not be negative (temperature 0: most likely character)")
    model, vocab = _network(task, run)
    unknown = sum(1 for c in args.prime if vocab.encode(c)[0] == vocab.unk)
    if unknown:
        print(f"note: {unknown} character(s) of --prime are not in the run's vocabulary; read as unknown",
              file=sys.stderr)
    generator = torch.Generator().manual_seed(args.seed)
    samples = []
    for i in range(args.n):
        if not args.json:
            if i:
                sys.stdout.write("\n" + "-" * 40 + "\n")
            sys.stdout.write(args.prime)
            sys.stdout.flush()
        on_char = None if args.json else (lambda ch: (sys.stdout.write(ch), sys.stdout.flush()))
        samples.append(args.prime + sample(model, vocab, args.prime, args.length, temperature=args.temperature,
                                           top_k=args.top_k, generator=generator, on_char=on_char))
    if args.json:
        print(json.dumps({"run": str(run.path), "prime": args.prime, "temperature": args.temperature,
                          "top_k": args.top_k, "seed": args.seed, "samples": samples}, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write("\n")
    if args.out:
        from deepskeptic.fileio import atomic_write_text
        for i, text in enumerate(samples):
            atomic_write_text(Path(args.out) / f"sample-{i}.txt", text)
    return 0


def evaluate(task, run: Run, data: str | None) -> dict[str, Any]:
    """test_bpc of the run on its own test text, or on all of ``data`` (a built-in corpus: its test text)."""
    from deepskeptic.data.text import CORPORA, Vocab, load_corpus, read_folder, read_text_file
    from deepskeptic.tasks.textgen import ClassicalJob, stream_bpc
    settings = run.config["settings"]
    prepared = task.prepare(settings)
    vocab = Vocab.from_json(run.config["data_info"]["vocab"])
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
    model, _ = task.load_model(run, torch.device("cpu"))
    if isinstance(model, CharLM):
        bpc, _ = stream_bpc(model, prepared.test, torch.device("cpu"))
    else:
        bpc = ClassicalJob(model, prepared).bpc("test")
    unknown = int((prepared.test == vocab.unk).sum())
    return {"data": str(data or settings["data"]), "test_chars": len(prepared.test), "test_bpc": bpc,
            "unknown_chars": unknown}


def _samples_html(model: CharLM, vocab, seed: int = 0) -> str:
    parts = []
    for t in REPORT_TEMPERATURES:
        text = sample(model, vocab, "", REPORT_SAMPLE_CHARS, temperature=t,
                      generator=torch.Generator().manual_seed(seed))
        parts.append(f"<p><b>temperature {t}</b></p><pre style='white-space:pre-wrap;background:#f6f6f6;"
                     f"padding:.5em'>{html.escape(text)}</pre>")
    return "\n".join(parts)


def write_report(task, run: Run, prepared=None, metrics: dict | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    report = Report(f"textgen · {s['model']} on {info['name']}")
    report.paragraph(f"{metrics['test_bpc']:.4f} bits per character on {info['test_chars']:,} held-out characters "
                     f"({info['split']}), after {metrics['train_seconds']:.1f} s of training on {metrics['device']}, "
                     f"seed {metrics['seed']}"
                     + (f", with the weights of epoch {metrics['best_epoch']} (lowest validation bpc)"
                        if metrics.get("best_epoch") else "") + ". Lower is better; run 'deepskeptic compare textgen' for the "
                     f"n-gram and compressor baselines on the same split.")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    history = run.history()
    if any("train_bpc" in h for h in history):
        report.heading("Learning curves")
        report.figure(learning_curves({"train": [{"train_seconds": h["train_seconds"], "bpc": h["train_bpc"]}
                                                 for h in history],
                                       "validation": [{"train_seconds": h["train_seconds"], "bpc": h["val_bpc"]}
                                                      for h in history if "val_bpc" in h]},
                                      ["bpc"], x="train_seconds"),
                      "bits per character; training with dropout, validation without")
    if "val_bpc_by_order" in metrics:
        report.heading("Validation bpc by n-gram order")
        report.table(["order", "val bpc"], [[k, v] for k, v in metrics["val_bpc_by_order"].items()])
    model, vocab = task.load_model(run, torch.device("cpu"))
    if isinstance(model, CharLM):
        report.heading("Samples")
        report.parts.append(_samples_html(model, vocab))
        _gates_sections(task, run, report, model, vocab, prepared)
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
    plt.close("all")


def _gates_sections(task, run: Run, report: Report, model, vocab, prepared) -> None:
    """The LSTM's gates on a stretch of test text, and any pictures `explain` wrote."""
    from deepskeptic.tasks.common import gates as text_gates
    if prepared is None:
        try:
            prepared = task.prepare(run.config["settings"])
        except UserError:  # the data moved away since training: show the gates on a stock sentence
            prepared = None
    text = prepared.corpus.test[:160] if prepared is not None else ""
    text_gates.report_section(report, run, model, vocab, text or "The quick brown fox jumps over the lazy dog.\n")


def comparison_samples(task, report: Report, summary: dict) -> None:
    """Samples of each network (seed 0) at the report temperatures, for `compare textgen`."""
    shown = False
    for name, s in summary["models"].items():
        run = Run(s["runs"][0])
        model, vocab = task.load_model(run, torch.device("cpu"))
        if not isinstance(model, CharLM):
            continue
        if not shown:
            report.heading(f"Samples ({REPORT_SAMPLE_CHARS} characters, seed 0)")
            shown = True
        report.parts.append(f"<h3>{html.escape(name)}</h3>")
        report.parts.append(_samples_html(model, vocab))
