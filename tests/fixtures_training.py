"""One tiny trained run for the whole test session, and `crack` called in-process.

``tiny_run`` trains the real `crack train` once: ResNet50V2 at 32x32 from random initialisation,
40 generated images plus one truncated file, one head epoch and one fine-tuning epoch from conv5
on (both phases run; fine-tuning conv5 rather than the whole base halves the cost of the second
phase). Tests read it and must not change it; a test that converts or retrains it works on a copy
(``copy_run``). It is imported into conftest.py, so any test module can ask for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_SIZE = 32
TINY_PER_CLASS = 20
TINY_NAME = "tiny"


def run_crack(*args):
    """`crack ARGS` in this process through typer's CliRunner (the full command, with `convert`):
    a Result with exit_code, stdout, stderr and output. An exception other than an exit (a
    UserError, a bug) reaches the test as it is. For what a user sees on the terminal, and for
    tracebacks, run the installed command as a subprocess instead."""
    from typer.testing import CliRunner

    from convert.crack_cli import app

    return CliRunner().invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of a finished run that a test may change (convert, resume), without its tflite/."""
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns("tflite"))
    return destination


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/tiny of a finished `crack train` (runs/latest points at it); see the module
    docstring."""
    from training.demo_data import DemoOptions, generate_demo

    root = tmp_path_factory.mktemp("tiny-run")
    data = root / "data"
    generate_demo(DemoOptions(out=data, count=TINY_PER_CLASS, size=48, seed=1), progress=False)
    (data / "crack" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = run_crack("train", "--data", data, "--runs-dir", root / "runs", "--name", TINY_NAME,
                       "--img-size", TINY_SIZE, "--weights", "none", "--head-epochs", 1,
                       "--epochs", 1, "--fine-tune-at", "conv5", "--batch-size", 8)
    assert result.exit_code == 0, result.output
    return root / "runs" / TINY_NAME
