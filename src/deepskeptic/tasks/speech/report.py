"""The report of a speech run: error rates, learning curves, confusions, error per test voice, and
log-mel spectrograms of test utterances it recognised and ones it got wrong."""
from __future__ import annotations

from typing import Any

from deepskeptic import recipes
from deepskeptic.data.audio import FeatureSettings, load_audio, log_mel
from deepskeptic.errors import UserError
from deepskeptic.fileio import read_json
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common.classification import confusion_figure
from deepskeptic.threads import one_thread


def per_voice_figure(per_voice: dict[str, float]):
    items = sorted(per_voice.items(), key=lambda kv: kv[1], reverse=True)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(items) + 1.5), 3.2))
    ax.bar([k for k, _ in items], [v for _, v in items], color="#c64")
    ax.set_ylabel("word error rate")
    ax.set_ylim(0, max(0.05, max((v for _, v in items), default=0) * 1.1))
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def spectrogram_figure(examples: list[dict[str, Any]], features: dict[str, Any]):
    """One panel per example: its log-mel spectrogram, titled reference -> hypothesis."""
    settings = FeatureSettings(**features)
    shown = []
    for e in examples:
        try:
            with one_thread():
                shown.append((e, log_mel(load_audio(e["path"], settings.sample_rate), settings)))
        except UserError:
            continue  # the recording moved since training: show the others
    if not shown:
        return None
    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (e, feats) in zip(axes.flat, shown):
        ax.set_axis_on()
        seconds = len(feats) * settings.hop / settings.sample_rate
        ax.imshow(feats.T.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, feats.shape[1]))
        ax.set_title(f"{e['reference']}\n→ {e['hypothesis'] or '(nothing)'} ({e['confidence']:.2f})"
                     + (f" · {e['speaker']}" if e.get("speaker") else ""), fontsize=7)
        ax.set_xlabel("seconds", fontsize=7)
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def write_speech_report(run: Run, metrics: dict[str, Any] | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    info, s = config["data_info"], config["settings"]
    predictions = read_json(run.path / "test_predictions.json") if (run.path / "test_predictions.json").is_file() else []
    classifier = info["labels"] is not None
    report = Report(f"speech · {s['model']} on {info['name']}")
    unheard = info.get("test_speakers") and not set(info["test_speakers"]) & set(info.get("train_speakers", []))
    voices = f" by {len(info['test_speakers'])} voices never heard in training" if unheard else ""
    accuracy = "word accuracy" if classifier else "utterances without an error"
    report.paragraph(f"{metrics['test_wer']:.2%} word error rate, {metrics['test_cer']:.2%} character error rate, "
                     f"{metrics['test_accuracy']:.2%} {accuracy}, on {metrics.get('test_utterances', '?')} test "
                     f"utterances{voices}; {metrics['epochs']} epoch(s), {metrics['train_seconds']:.1f} s of training "
                     f"on {metrics['device']}, seed {metrics['seed']}.")
    recipe = recipes.sentence(config)   # how the recipe and learning rate were chosen, and why
    if recipe:
        report.paragraph(recipe)
    if not classifier:
        report.paragraph(f"Beam search (width {s['beam']}): WER {metrics['test_wer']:.2%}; greedy decoding: "
                         f"WER {metrics['test_wer_greedy']:.2%}, CER {metrics['test_cer_greedy']:.2%}.", "muted")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])

    history = run.history()
    if history:
        keys = ["loss"] + [k for k in ("accuracy", "wer") if any(f"val_{k}" in h or f"train_{k}" in h for h in history)]
        curves = {"train": [{"epoch": h["epoch"], **{k: h[f"train_{k}"] for k in keys if f"train_{k}" in h}} for h in history],
                  "validation": [{"epoch": h["epoch"], **{k: h[f"val_{k}"] for k in keys if f"val_{k}" in h}}
                                 for h in history]}
        report.heading("Learning curves")
        report.figure(learning_curves(curves, keys), "training (with SpecAugment and dropout) and validation")

    if classifier and "confusion_matrix" in metrics:
        report.heading("Confusion matrix")
        report.figure(confusion_figure(metrics["confusion_matrix"], info["labels"]), "test set: rows true, columns predicted")
    if metrics.get("test_wer_per_voice"):
        report.heading("Error rate per test voice")
        report.figure(per_voice_figure(metrics["test_wer_per_voice"]),
                      "word error rate of each voice of the test set, worst first")

    right = [p for p in predictions if p["word_errors"] == 0][:4]
    wrong = sorted((p for p in predictions if p["word_errors"] > 0), key=lambda p: -p["confidence"])[:8]
    for title, examples, caption in (
            ("Recognised test utterances", right, "log-mel spectrograms: reference → hypothesis (confidence) · voice"),
            ("Misrecognised test utterances", wrong, "the most confident mistakes: reference → hypothesis (confidence) · voice")):
        fig = spectrogram_figure(examples, info["features"]) if examples else None
        if fig is not None:
            report.heading(title)
            report.figure(fig, caption)
    report.heading("Data")
    report.table(["", "value"], [[k, v if not isinstance(v, list) else f"{len(v)}: " + ", ".join(map(str, v[:30]))
                                  + (" ..." if len(v) > 30 else "")] for k, v in info.items() if k != "features"])
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
