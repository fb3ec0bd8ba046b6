"""README's "The Python API" section: every example in it runs, and prints what the README says it
prints, so the examples cannot rot.

Each example is a ```python block followed by a ```text block with its output (obtained by running
it: tiny settings, one thread). The examples run in this process, in a folder of their own; the
output is compared with the decimals masked (they move with the CPU and the library versions) and
everything else — keys, classes, words, shapes, parameter counts, dates, run folders — exact. If a
change moves an output on purpose, run the example and paste what it prints into README.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TASKS = ("image", "text", "textgen", "speech", "forecast", "gan", "cyclegan")
DECIMAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def api_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## The Python API\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def examples() -> dict[str, tuple[str, str]]:
    """{task: (code, expected output)} for the examples of the API section, in README order."""
    found = {}
    for code, output in re.findall(r"```python\n(.*?)```\n+```text\n(.*?)```", api_section(), re.S):
        task = re.search(r"deepskeptic\.(?:train|compare)\(\"(\w+)\"", code).group(1)
        assert task not in found, f"two README API examples for {task}"
        found[task] = (code, output)
    return found


def masked(text: str) -> list[str]:
    return [DECIMAL.sub("#", line.rstrip()) for line in text.strip().splitlines()]


def test_the_api_section_has_an_example_with_output_per_task():
    assert sorted(examples()) == sorted(TASKS)
    assert "```python" not in re.sub(r"```python\n.*?```\n+```text\n.*?```", "", api_section(), flags=re.S), \
        "a python block in the API section without its ```text output block"


@pytest.mark.parametrize("task", TASKS)
def test_readme_api_example_runs_and_prints_its_output(task, tmp_path, monkeypatch, capsys):
    code, expected = examples()[task]
    monkeypatch.chdir(tmp_path)                       # its runs/ folder lands here
    exec(compile(code, f"README.md ({task} example)", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert masked(printed) == masked(expected), (
        f"the README's {task} example printed something else than README.md shows:\n{printed}")
