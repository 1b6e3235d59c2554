"""The README as a new user meets it: every Python example runs on its own."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_examples() -> list[tuple[str, str]]:
    """``(id, code)`` of every fenced ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8")
    examples = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        line = text.count("\n", 0, match.start()) + 1
        examples.append((f"README.md:{line}", match.group(1)))
    return examples


def test_the_readme_has_python_examples() -> None:
    assert len(python_examples()) >= 3


@pytest.mark.parametrize(("where", "code"), python_examples(),
                         ids=[where for where, _ in python_examples()])
def test_each_readme_example_runs_alone_in_an_empty_directory(
    where: str, code: str, tmp_path: pathlib.Path
) -> None:
    # A fresh, empty directory per example, and a fresh interpreter: no example may rely on
    # files or imports an earlier one left behind.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAGEWAL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, f"{where} failed:\n{completed.stderr}"
