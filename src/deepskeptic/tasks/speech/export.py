"""The speech task's exported graph: log-mel features and their lengths in; word logits and
probabilities (classifiers) or CTC log-probabilities and output lengths (CTC recognisers) out.

The features stay outside the graph (the sidecar says exactly how to compute them, filterbank
included). The LSTM models run ``nn.LSTM`` over packed sequences, which ONNX cannot express; the
graph computes the same numbers without packing: a forward direction reads the padded batch as it
is (it is causal: steps after an utterance's end never reach the steps before it), a backward
direction reads each utterance reversed within its own length (one gather), and outputs after
each utterance's end are set to zero as ``pad_packed_sequence`` leaves them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from deepskeptic.data.audio import FeatureSettings, _mel_matrix, features_of_files
from deepskeptic.data.audio_sets import read_utterances, split_utterances
from deepskeptic.export import Graph
from deepskeptic.models.speech import (LSTMCTC, LSTMClassifier, SpectrogramCNN, WindowMLPCTC, stack_frames,
                                      time_mask)
from deepskeptic.runs import Run
from deepskeptic.tasks.speech.text import ALPHABET, BLANK

EXAMPLES = 16   # real test utterances the export is checked on (and the shortest 3 again, shorter padded)


class UnpackedLSTM(nn.Module):
    """A (bidirectional) batch_first ``nn.LSTM`` over padded input with lengths, as one
    unidirectional ``nn.LSTM`` per layer and direction with the same weights (see the module
    docstring): ((B, T, dirs*H) outputs, zero after each length; (layers*dirs, B, H) final states)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.dirs = 2 if lstm.bidirectional else 1
        self.layers = nn.ModuleList()
        for layer in range(lstm.num_layers):
            width = lstm.input_size if layer == 0 else lstm.hidden_size * self.dirs
            pair = nn.ModuleList()
            for suffix in ["", "_reverse"][:self.dirs]:
                one = nn.LSTM(width, lstm.hidden_size, 1, batch_first=True)
                one.load_state_dict({f"{name}_l0": getattr(lstm, f"{name}_l{layer}{suffix}").detach().clone()
                                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
                pair.append(one)
            self.layers.append(pair)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = lengths.clamp_min(1)                                    # as models.speech._run_lstm
        steps = torch.arange(x.shape[1], device=x.device)[None, :]       # (1, T)
        inside = steps < lengths[:, None]                                 # (B, T)
        reverse = torch.where(inside, lengths[:, None] - 1 - steps, steps)  # (B, T): an involution
        last = (lengths - 1)[:, None, None]                               # (B, 1, 1)
        finals = []
        for pair in self.layers:
            out_f, _ = pair[0](x)                                         # (B, T, H)
            outs = [out_f]
            finals.append(out_f.gather(1, last.expand(-1, 1, out_f.shape[2]))[:, 0])   # (B, H) at each end
            if self.dirs == 2:
                flipped = x.gather(1, reverse[..., None].expand(-1, -1, x.shape[2]))
                out_b, _ = pair[1](flipped)                               # (B, T, H), reversed time
                out_b = out_b.gather(1, reverse[..., None].expand(-1, -1, out_b.shape[2]))
                outs.append(out_b)
                finals.append(out_b[:, 0])                                # the backward pass ends at step 0
            x = torch.cat(outs, dim=-1)                                   # (B, T, dirs*H)
        return x * inside[..., None].to(x.dtype), torch.stack(finals)


class FeatureClassifier(nn.Module):
    """(features (B, T, n_mels), lengths (B,)) -> ((B, words) logits, (B, words) probabilities)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.lstm = UnpackedLSTM(model.lstm) if isinstance(model, LSTMClassifier) else None

    def logits(self, x: Tensor, lengths: Tensor) -> Tensor:
        m = self.model
        if self.lstm is None:
            return m(x, lengths)
        # LSTMClassifier.forward with the packed LSTM replaced
        x, lengths = stack_frames(x, lengths, m.cfg.stack)               # (B, T/k, k*F)
        out, h = self.lstm(x, lengths)
        if m.cfg.pool == "last":
            return m.head(torch.cat(list(h[-self.lstm.dirs:]), dim=1))
        mask = time_mask(lengths, out.shape[1])[..., None]
        if m.cfg.pool == "mean":
            return m.head((out * mask).sum(1) / lengths.clamp_min(1)[:, None].to(out.dtype))
        return m.head(out.masked_fill(~mask, float("-inf")).amax(1))

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.logits(features, lengths)
        return logits, logits.softmax(1)


class FeatureCTC(nn.Module):
    """(features (B, T, n_mels), lengths (B,)) -> ((B, T', symbols) log-probabilities, (B,) T' lengths):
    lstm-ctc and mlp-ctc, each written in operators ONNX export can size."""

    def __init__(self, model: LSTMCTC | WindowMLPCTC):
        super().__init__()
        self.model = model
        self.lstm = UnpackedLSTM(model.lstm) if isinstance(model, LSTMCTC) else None

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        x, lengths = stack_frames(features, lengths, m.cfg.stack)        # (B, T', k*F)
        if isinstance(m, WindowMLPCTC):
            # WindowMLPCTC.forward with its unfold (which ONNX export cannot size) as shifted slices
            c, steps = m.cfg.context, x.shape[1]
            padded = F.pad(x, (0, 0, c, c))                              # (B, T' + 2c, D)
            windows = torch.cat([padded[:, j:j + steps] for j in range(2 * c + 1)], dim=-1)   # (B, T', (2c+1)*D)
            return m.net(windows).float().log_softmax(-1), lengths
        out, _ = self.lstm(x, lengths)                                   # (B, T', 2H)
        return m.head(out).float().log_softmax(-1), lengths


def _batch(feats: list[Tensor]) -> tuple[Tensor, Tensor]:
    return pad_sequence(feats, batch_first=True), torch.tensor([len(f) for f in feats])


def feature_recipe(settings: FeatureSettings) -> dict[str, Any]:
    """How data/audio.log_mel computes the features, step by step, with its filterbank."""
    return {
        **settings.to_dict(),
        "steps": [
            f"mono float32 samples in [-1, 1] at {settings.sample_rate} Hz (average the channels; resample other rates)",
            f"zero-pad at the end to at least n_fft = {settings.n_fft} samples",
            f"STFT: periodic Hann window of n_fft samples, hop {settings.hop}, centred frames (the signal "
            f"reflect-padded by n_fft/2 on both sides), so T = 1 + samples // hop frames",
            f"power spectrum |X|^2 per frame: (T, {settings.n_fft // 2 + 1})",
            f"mel = power @ mel_filterbank.T: (T, {settings.n_mels}); the filterbank is librosa.filters.mel("
            f"sr={settings.sample_rate}, n_fft={settings.n_fft}, n_mels={settings.n_mels}, fmin={settings.fmin}, "
            f"fmax={settings.fmax}) (Slaney mel scale and area normalisation), given here",
            f"log(mel + {settings.log_floor})",
            "per utterance: subtract the mean over all frames and bands, divide by their standard deviation "
            "(population, at least 1e-5)",
        ],
        "mel_filterbank": _mel_matrix(settings).tolist(),
    }


def graphs(task, run: Run) -> list[Graph]:
    model = task.load_models(run, torch.device("cpu"))["model"]
    info = run.config["data_info"]
    features = FeatureSettings(**info["features"])
    # the run's own test utterances (its split of its data), featurised as training did them
    settings = run.config["settings"]
    utterances, _ = read_utterances(str(settings["data"]), progress=False)
    _, splits = split_utterances(utterances, settings["val_split"], settings["test_split"])
    chosen = [int(i) for i in splits["test"][:EXAMPLES]]
    chosen += [int(i) for i in splits["train"][:max(0, 2 - len(chosen))]]      # at least 2
    test, _ = features_of_files([utterances[i].path for i in chosen], features)
    shortest = sorted(test, key=len)[:3]
    if isinstance(model, SpectrogramCNN):  # its pooling needs that many frames; shorter ones it pads itself
        shortest = [f for f in shortest if len(f) >= model.shrink] or shortest
    checks = [_batch(shortest)]            # a shorter time axis than the batch's: it really is dynamic
    inputs = _batch(test)
    n_mels = features.n_mels
    feature_input = (f"features (B, T, {n_mels}) float32: each utterance's log-mel frames (see 'features'), "
                     f"zero frames after its end to the longest in the batch; lengths (B,) int64: its frames")
    if isinstance(model, SpectrogramCNN):
        feature_input += (f"; T at least {model.shrink} (append zero frames to a shorter batch, lengths "
                          f"unchanged: what the model does itself)")
    common = {"sample_rate": features.sample_rate, "features": feature_recipe(features), "input": feature_input}
    dynamic = {"features": {0: "batch", 1: "time"}, "lengths": {0: "batch"}}
    labels = info["labels"]
    if labels is not None:
        sidecar = {**common, "labels": labels,
                   "output": "logits (B, words) and probabilities (B, words), in the order of 'labels'"}
        return [Graph(name="model", module=FeatureClassifier(model).eval(), inputs=inputs, checks=checks,
                      input_names=["features", "lengths"], output_names=["logits", "probabilities"],
                      dynamic={**dynamic, "logits": {0: "batch"}, "probabilities": {0: "batch"}}, sidecar=sidecar,
                      description=f"log-mel features and lengths -> logits and probabilities over {len(labels)} words")]
    stack = model.cfg.stack
    sidecar = {**common, "ctc": {"blank": BLANK, "symbols": ["<blank>", *ALPHABET], "frames_per_step": stack},
               "output": (f"log_probs (B, T', {len(ALPHABET) + 1}) float32, T' = ceil(T / {stack}): log-probabilities "
                          f"of the CTC symbols per output step (symbol 0 the blank); output_lengths (B,) int64: "
                          f"valid steps per utterance. Greedy decoding: the most likely symbol per valid step, "
                          f"merge repeats, drop blanks, symbols[k] the character")}
    return [Graph(name="model", module=FeatureCTC(model).eval(), inputs=inputs, checks=checks,
                  input_names=["features", "lengths"], output_names=["log_probs", "output_lengths"],
                  dynamic={**dynamic, "log_probs": {0: "batch", 1: "time"}, "output_lengths": {0: "batch"}},
                  sidecar=sidecar,
                  description="log-mel features and lengths -> CTC log-probabilities per output step and their lengths")]
