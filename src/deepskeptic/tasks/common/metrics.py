"""Metric names: functions return bare names (``accuracy``); the caller says which split."""
from __future__ import annotations

from typing import Any


def prefixed(metrics: dict[str, Any], split: str) -> dict[str, Any]:
    """``{accuracy: .9, per_class_accuracy: {...}}`` -> ``{test_accuracy: .9, per_class_accuracy: {...}}``
    for split ``test``: the numbers get the split's prefix; tables (dicts, lists) keep their names."""
    return {(f"{split}_{k}" if isinstance(v, (int, float)) and not isinstance(v, bool) else k): v
            for k, v in metrics.items()}
