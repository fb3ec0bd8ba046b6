"""What every task provides. The CLI, the training driver and ``compare`` only talk to this."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from deepskeptic.engine import Job
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run


class Task:
    name: str = ""
    description: str = ""
    primary_metric: str = ""         # the number a comparison ranks by, e.g. test_accuracy
    higher_is_better: bool = True
    default_epochs: int = 10
    default_models: tuple[str, ...] = ()  # what `compare` runs when --models is not given
    task_defaults: dict[str, Any] = {}    # settings of this task beyond settings.COMMON_DEFAULTS

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags for this task's data and training (dest names equal to setting names)."""

    def prepare(self, settings: dict[str, Any]) -> Any:
        """Load and check the data; raise UserError on anything wrong before training starts."""
        raise NotImplementedError

    def build(self, settings: dict[str, Any], prepared: Any, device: torch.device) -> tuple[Job, dict[str, Any]]:
        """The engine job and what config.json records about the model and data."""
        raise NotImplementedError

    def finish(self, run: Run, job: Job, prepared: Any, settings: dict[str, Any],
               device: torch.device) -> dict[str, Any]:
        """Test metrics for metrics.json (and the report) after training."""
        raise NotImplementedError

    def write_report(self, run: Run, prepared: Any | None = None, metrics: dict[str, Any] | None = None) -> None:
        """Render report.html from the run folder (and the data, reloaded when not given)."""
        raise NotImplementedError

    def input_shape(self, data: str | None) -> dict[str, Any]:
        """The input shape parameter counts in `deepskeptic models` use (``description`` says it)."""
        raise NotImplementedError

    def example_model(self, name: str, shape: dict[str, Any]) -> torch.nn.Module:
        raise NotImplementedError

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        raise UserError(f"task '{self.name}' has no evaluate command")

    def predict(self, run: Run, args: argparse.Namespace) -> int:
        raise UserError(f"task '{self.name}' has no predict command")

    def explain(self, run: Run, args: argparse.Namespace) -> int:
        raise UserError(f"task '{self.name}' has no explain command")

    def generate(self, run: Run, args: argparse.Namespace) -> int:
        raise UserError(f"task '{self.name}' has no generate command")

    def translate(self, run: Run, args: argparse.Namespace) -> int:
        raise UserError(f"task '{self.name}' has no translate command")

    def datasets(self) -> list[dict[str, Any]]:
        """Built-in data sets of this task for `deepskeptic datasets`: dicts with name, task,
        available, location, description, how_to_get."""
        return []

    def fetch(self, name: str) -> str:
        """Make built-in data set ``name`` available on this machine; returns where it now is."""
        raise UserError(f"data set '{name}' of task '{self.name}' cannot be fetched")

    def models_for(self, data: str | None) -> tuple[str, ...]:
        """The models `compare` runs on ``data`` when --models is not given."""
        return self.default_models

    def adjust_settings(self, settings: dict[str, Any]) -> None:
        """Last changes to resolved settings (e.g. baselines fitted in one step get epochs=1)."""

    def seed_independent(self, model: str) -> bool:
        """True for models whose results do not depend on the seed: `compare` runs them once."""
        return False

    def verdict_pairs(self, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]] | None:
        """[(model, {reference model: label})] for the verdicts; None: each deep model against
        every simpler one."""
        return None

    def comparison_sections(self, report: Any, summary: dict[str, Any]) -> None:
        """Task-specific sections of a comparison's report (after the generic ones)."""

    def model_names(self) -> list[str]:
        return registry.names(self.name)
