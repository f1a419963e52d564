"""Shared fixtures: the real data beside the project, and tiny converted models for edge tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from training import tensorflow_env

tensorflow_env.prepare()  # as every entry point does, before any test imports TensorFlow
from fixtures_training import run_crack, tiny_run  # noqa: E402,F401  (session fixture for every module)

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
EDGE_SIZE = 32
DARK_THRESHOLD = 0.5


def shared_data_dir() -> Path:
    """../shared/data; a test that needs it fails when CI=true and it is missing, else skips.
    The one place that decides this: tests take the ``shared_data`` fixture."""
    if not SHARED_DATA.is_dir():
        message = f"shared data not found at {SHARED_DATA}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return shared_data_dir()


def darkness_model(size: int = EDGE_SIZE):
    """Raw pixels -> the model's Rescaling -> mean -> sigmoid(-6 * mean): dark images score high
    (a mean grey of 128 scores 0.5). Deterministic, no training."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.full((3, 1), -2.0, np.float32),
                                  np.array([6.0 * (128 / 127.5 - 1)], np.float32)])
    return model


@pytest.fixture(scope="session")
def edge_models(tmp_path_factory) -> dict[str, Path]:
    """fp32 and full-int8 .tflite files with sidecars, made by the real `crack convert`."""
    from convert.testing import grey, write_run

    run = tmp_path_factory.mktemp("edge-models") / "darkness"
    levels = [10, 40, 70, 100, 120, 140, 160, 190, 220, 250]
    items = [(grey(EDGE_SIZE, level), int(level < 128)) for level in levels]
    write_run(run, darkness_model(), {"train": items, "val": items, "test": items},
              threshold=DARK_THRESHOLD)
    result = run_crack("convert", "--run", str(run), "--modes", "fp32,int8", "--latency-runs", "2",
                       "--max-drop", "100", "--no-recover")
    assert result.exit_code == 0, f"crack convert failed with {result.exit_code}: {result.output}"
    return {mode: run / "tflite" / f"model_{mode}.tflite" for mode in ("fp32", "int8")}
