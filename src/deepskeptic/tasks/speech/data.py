"""The speech task's prepared data and what a model needs of it: the classifier's classes (and the
checks that the data suits the model), or the CTC vocabulary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.tasks.speech.text import VOCAB_SIZE, check_vocabulary


@dataclass
class Prepared:
    data: Any  # deepskeptic.data.audio_sets.SpeechData


def output_kind(model: str) -> str:
    """'class' (one label per utterance) or 'ctc' (a transcript) for a registered speech model."""
    return registry.spec("speech", model).config_cls.output


def shape_of(data) -> dict[str, Any]:
    """What a speech model needs of the data: mel bands, the classifiers' number of classes (the
    distinct training transcripts) and the CTC models' vocabulary; each model takes the keys its
    config has."""
    classes = len({data.transcripts[i] for i in data.splits["train"].tolist()})
    return {"n_mels": data.features.n_mels, "num_classes": classes, "vocab": VOCAB_SIZE}


def labels_for(model: str, data) -> list[str] | None:
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
