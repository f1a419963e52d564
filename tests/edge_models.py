"""A tiny fp32 .tflite crack model for the stream and source tests, with its sidecar JSON.

The model is the contract's raw RGB 0..255 input -> the usual Rescaling(1/127.5, -1) -> a 1x1
convolution that turns each pixel into its darkness (minus the mean channel) -> the darkest pixel
(global max) -> sigmoid(GAIN * darkness + BIAS). Weights are set by hand, nothing is trained:

- a plain grey image (level 128, darkness ~0)          -> sigmoid(-4)  ~ 0.02  (no crack)
- any image with a near-black line (level 20, ~0.84)   -> sigmoid(4.4) ~ 0.99  (crack)

TensorFlow is imported only here, to make the fixture; the edge code under test never imports it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edge.contract import ModelCard, ModelContract, SourceRun
from edge.model_metadata import file_sha256, sidecar_path

SIZE = 32
THRESHOLD = 0.5
GAIN = 10.0
BIAS = -4.0
GREY = 128
CRACK_LEVEL = 20


def line_model(size: int = SIZE):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(1, 1, name="darkness")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("darkness").set_weights([np.full((1, 1, 3, 1), -1 / 3, np.float32),
                                             np.zeros(1, np.float32)])
    model.get_layer("head").set_weights([np.array([[GAIN]], np.float32),
                                         np.array([BIAS], np.float32)])
    return model


def write_model(directory: Path, size: int = SIZE, threshold: float = THRESHOLD) -> Path:
    """Convert ``line_model`` to fp32 TFLite; write model_fp32.tflite and model_fp32.json."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    saved = directory / "saved_model"
    line_model(size).export(str(saved), format="tf_saved_model", verbose=False)
    content = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    shutil.rmtree(saved)
    path = directory / "model_fp32.tflite"
    path.write_bytes(content)
    contract = ModelContract(input_size=size, threshold=threshold, extra={"run": "test-line-model"})
    ModelCard(contract=contract, mode="fp32", source_run=SourceRun("test-line-model", "0" * 64),
              package_version="test", created="2025-01-01T00:00:00+00:00",
              sha256=file_sha256(path)).save(sidecar_path(path))
    return path


@functools.lru_cache(maxsize=1)
def line_model_path() -> Path:
    """The model, built once per test process in a temporary directory removed at exit."""
    directory = Path(tempfile.mkdtemp(prefix="crack-edge-line-model-"))
    atexit.register(shutil.rmtree, directory, True)
    return write_model(directory)


# --- frames -----------------------------------------------------------------------------------

def grey_frame(height: int = 64, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def crack_frame(height: int = 64, width: int = 64, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A grey BGR frame with a 4-pixel near-black diagonal line inside ``region`` (x0, y0, x1, y1),
    by default the whole frame. Thick enough to stay fully dark after a 2x INTER_AREA shrink."""
    frame = grey_frame(height, width)
    x0, y0, x1, y1 = region or (0, 0, width, height)
    cv2.line(frame, (x0 + 4, y0 + 4), (x1 - 5, y1 - 5), (CRACK_LEVEL,) * 3, thickness=4)
    return frame


def write_video(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Motion-JPEG in AVI: every frame is coded on its own, so no crack bleeds into its neighbours."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
