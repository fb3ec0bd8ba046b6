"""The task registry: one module per job a user brings."""
from __future__ import annotations

from deepskeptic import schema
from deepskeptic.errors import unknown_name
from deepskeptic.tasks.base import Task
from deepskeptic.tasks.image import ImageTask
from deepskeptic.tasks.cyclegan import CycleGanTask
from deepskeptic.tasks.forecast import ForecastTask
from deepskeptic.tasks.gan import GanTask
from deepskeptic.tasks.speech import SpeechTask
from deepskeptic.tasks.text import TextTask
from deepskeptic.tasks.textgen import TextGenTask

TASKS: dict[str, Task] = {task.name: task for task in (ImageTask(), GanTask(), CycleGanTask(), SpeechTask(), TextGenTask(), TextTask(), ForecastTask(),)}
schema.use_tasks(TASKS)  # run folders are checked against each task's settings and metric


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    return TASKS[name]
