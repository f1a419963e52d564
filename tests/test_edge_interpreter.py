"""Which TFLite interpreter `crack-edge` uses: ai_edge_litert, then tflite_runtime, then
tensorflow.lite; CRACK_EDGE_INTERPRETER forces one; nothing importable is a one-line UserError.

Unavailable packages are simulated through the real import machinery: ``sys.modules[name] = None``
makes ``import name`` fail, and small fake packages on a temporary sys.path entry stand in for
packages that are not installed here (tflite_runtime) or that fail while importing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

from edge.errors import UserError
from edge.interpreter import ENV_VAR, PACKAGES, find_interpreter

BLOCKED_MODULES = {
    "ai_edge_litert": ("ai_edge_litert", "ai_edge_litert.interpreter"),
    "tflite_runtime": ("tflite_runtime", "tflite_runtime.interpreter"),
    "tensorflow": ("tensorflow",),
}


def block(monkeypatch, package: str) -> None:
    for name in BLOCKED_MODULES[package]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """A sys.path entry where fake packages can be written; cleaned from sys.modules afterwards."""
    root = tmp_path / "fake_packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv(ENV_VAR, raising=False)
    for name in ("tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.delitem(sys.modules, name, raising=False)

    def write(package: str, interpreter_source: str) -> None:
        folder = root / package
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        (folder / "interpreter.py").write_text(interpreter_source)

    return write


FAKE_TFLITE_RUNTIME = "class Interpreter:\n    fake = 'tflite_runtime'\n"


def test_default_order_and_the_first_package_wins(fakes):
    fakes("tflite_runtime", FAKE_TFLITE_RUNTIME)
    assert PACKAGES == ("ai_edge_litert", "tflite_runtime", "tensorflow")
    backend = find_interpreter()
    from ai_edge_litert.interpreter import Interpreter

    assert backend.package == "ai_edge_litert" and backend.interpreter_class is Interpreter
    assert backend.failures == {} and backend.describe() == f"ai_edge_litert {backend.version}"
    assert backend.version[0].isdigit()


def test_missing_ai_edge_litert_falls_back_to_tflite_runtime(fakes, monkeypatch):
    block(monkeypatch, "ai_edge_litert")
    fakes("tflite_runtime", FAKE_TFLITE_RUNTIME)
    backend = find_interpreter()
    assert backend.package == "tflite_runtime" and backend.interpreter_class.fake == "tflite_runtime"
    assert list(backend.failures) == ["ai_edge_litert"]
    assert backend.failures["ai_edge_litert"].startswith("ModuleNotFoundError: import of ai_edge_litert")
    assert backend.describe().startswith("tflite_runtime unknown (unavailable: ai_edge_litert: "
                                         "ModuleNotFoundError")


def test_a_package_that_breaks_while_importing_is_skipped_too(fakes, monkeypatch):
    """tflite-runtime built for numpy 1 fails inside its import under numpy 2; a package without an
    Interpreter class is no use either. Both are recorded and the next package is tried."""
    block(monkeypatch, "ai_edge_litert")
    block(monkeypatch, "tensorflow")
    fakes("tflite_runtime", "raise ImportError('numpy.core.multiarray failed to import\\nmore')\n")
    with pytest.raises(UserError) as caught:
        find_interpreter()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no TFLite interpreter could be imported (ai_edge_litert: ModuleNotFoundError")
    assert "tflite_runtime: ImportError: numpy.core.multiarray failed to import;" in message
    assert "tensorflow: ModuleNotFoundError" in message
    assert message.endswith("install one: pip install ai-edge-litert")


def test_a_module_without_an_interpreter_class_is_skipped(fakes, monkeypatch):
    block(monkeypatch, "ai_edge_litert")
    block(monkeypatch, "tensorflow")
    fakes("tflite_runtime", "VERSION = 'no Interpreter here'\n")
    with pytest.raises(UserError, match="tflite_runtime: AttributeError: module 'tflite_runtime.interpreter' "
                                        "has no attribute 'Interpreter'"):
        find_interpreter()


def test_environment_variable_forces_one_package_without_fallback(fakes, monkeypatch):
    fakes("tflite_runtime", FAKE_TFLITE_RUNTIME)
    monkeypatch.setenv(ENV_VAR, "tflite_runtime")
    backend = find_interpreter()  # ai_edge_litert is importable, but not asked for
    assert backend.package == "tflite_runtime" and backend.failures == {}

    monkeypatch.setenv(ENV_VAR, "ai_edge_litert")
    block(monkeypatch, "ai_edge_litert")
    with pytest.raises(UserError) as caught:  # forced and missing: an error, not a silent fallback
        find_interpreter()
    assert "(ai_edge_litert: ModuleNotFoundError" in str(caught.value)
    assert "tflite_runtime" not in str(caught.value)

    monkeypatch.setenv(ENV_VAR, "tflite")
    with pytest.raises(UserError, match="unknown interpreter package 'tflite'; choose from "
                                        "ai_edge_litert, tflite_runtime, tensorflow"):
        find_interpreter()


def test_explicit_order_argument(fakes):
    fakes("tflite_runtime", FAKE_TFLITE_RUNTIME)
    assert find_interpreter(("tflite_runtime", "ai_edge_litert")).package == "tflite_runtime"


def read_probabilities(path: Path) -> dict[str, float]:
    from edge.results_file import read_results

    return {Path(row.path).name: row.probability for row in read_results(path).rows}


def test_score_falls_back_to_tensorflow_lite_end_to_end(edge_models, tmp_path):
    """A real run where ai_edge_litert cannot be imported and tflite_runtime is not installed:
    `score` uses tf.lite.Interpreter, says so with --verbose, and gives the same probabilities."""
    import cv2
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    for level in (20, 90, 160, 230):
        cv2.imwrite(str(photos / f"grey_{level}.png"), np.full((40, 40, 3), level, np.uint8))
    blocker = tmp_path / "blocker" / "ai_edge_litert"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ai_edge_litert is blocked in this test')\n")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    results = {}
    for name, pythonpath in (("litert", str(PROJECT)), ("tf", f"{blocker.parent}{os.pathsep}{PROJECT}")):
        out = tmp_path / f"{name}.csv"
        run = subprocess.run([sys.executable, "-m", "edge", "score", "--model", str(edge_models["int8"]),
                              str(photos), "--out", str(out), "--verbose", "--no-progress"],
                             cwd=PROJECT, env={**env, "PYTHONPATH": pythonpath}, capture_output=True,
                             text=True, timeout=180)
        assert run.returncode == 0, run.stderr
        results[name] = (run.stderr, read_probabilities(out))
    assert "interpreter: ai_edge_litert " in results["litert"][0]
    tf_line = next(line for line in results["tf"][0].splitlines() if line.startswith("interpreter: "))
    assert tf_line.startswith("interpreter: tensorflow 2.")
    assert "ai_edge_litert: ImportError: ai_edge_litert is blocked in this test" in tf_line
    assert "tflite_runtime: ModuleNotFoundError" in tf_line
    litert, tf = results["litert"][1], results["tf"][1]
    assert set(litert) == set(tf) and len(tf) == 4
    for name in litert:  # int8 output: one quantisation step (1/256) at most apart
        assert abs(litert[name] - tf[name]) <= 1 / 256 + 1e-6, name
    assert tf["grey_20.png"] > 0.9 and tf["grey_230.png"] < 0.1
