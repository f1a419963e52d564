"""Where the model is invoked: a .tflite file, its sidecar JSON, and a TFLite interpreter.

``CrackClassifier.predict`` takes images already prepared by ``edge.preprocess`` (RGB uint8,
input_size x input_size) and returns crack probabilities. Float and integer models both work:
quantisation parameters are read from the model, never assumed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edge.contract import ModelContract
from edge.errors import UserError
from edge.interpreter import InterpreterBackend, default_thread_count, find_interpreter

SIDECAR_SUFFIX = ".json"


def sidecar_path(model_path: str | Path) -> Path:
    """model_int8.tflite -> model_int8.json (written by `crack convert`)."""
    return Path(model_path).with_suffix(SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(model_path: str | Path) -> dict | None:
    """The sidecar dict, or None if there is none. Errors if it is corrupt or its hash mismatches."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"sidecar {path} is not valid JSON: {exc}") from None
    expected = sidecar.get("sha256")
    if expected and expected != file_sha256(model_path):
        raise UserError(
            f"{model_path} does not match its sidecar {path.name} (sha256 differs): "
            "the model was replaced or corrupted; copy both files again"
        )
    return sidecar


class CrackClassifier:
    """A TFLite crack classifier. Not thread-safe: use one per thread."""

    def __init__(self, model_path: str | Path, threads: int | None = None,
                 backend: InterpreterBackend | None = None) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise UserError(f"model not found: {self.model_path}")
        self.sidecar = read_sidecar(self.model_path)
        self.backend = backend or find_interpreter()
        self.threads = threads or default_thread_count()
        try:
            self._interpreter = self.backend.interpreter_class(
                model_path=str(self.model_path), num_threads=self.threads
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"cannot load {self.model_path} as a TFLite model: {exc}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        size = int(self._input["shape"][1])
        if self.sidecar is not None:
            self.contract = ModelContract.from_dict(self.sidecar["contract"])
            if self.contract.input_size != size:
                raise UserError(
                    f"sidecar says input size {self.contract.input_size} but the model takes {size}"
                )
        else:  # no sidecar: the model's own input details, and the default threshold
            self.contract = ModelContract(input_size=size)

    @property
    def input_size(self) -> int:
        return self.contract.input_size

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero_point = self._input["quantization"]
        return float(scale), int(zero_point)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N,) float crack probabilities, in one invoke when possible."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (self.input_size, self.input_size, 3)
        if images.shape[1:] != expected:
            raise ValueError(f"expected images of shape (N, {expected}), got {images.shape}")
        if len(images) == 0:
            return np.zeros((0,), dtype=np.float32)
        if len(images) != self._batch:
            try:
                self._resize_batch(len(images))
            except (ValueError, RuntimeError):  # a model with a fixed batch: one image per invoke
                return np.concatenate([self.predict(image[None]) for image in images])
        self._interpreter.set_tensor(self._input["index"], self._quantize_input(images))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output["index"])
        return self._dequantize_output(raw).reshape(len(images))

    def predict_one(self, image: np.ndarray) -> float:
        return float(self.predict(image[None])[0])

    def _resize_batch(self, batch: int) -> None:
        shape = [batch, self.input_size, self.input_size, 3]
        self._interpreter.resize_tensor_input(self._input["index"], shape, strict=True)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch = batch

    def _quantize_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if np.issubdtype(dtype, np.floating):
            return images.astype(dtype)
        scale, zero_point = self.input_quantization
        if scale == 0:
            raise UserError(f"{self.model_path}: integer input without quantisation parameters")
        return quantize_pixels(images, dtype, scale, zero_point)

    def _dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if np.issubdtype(raw.dtype, np.floating):
            return raw.astype(np.float32)
        scale, zero_point = self._output["quantization"]
        return (raw.astype(np.float32) - zero_point) * np.float32(scale)


def quantize_pixels(images: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Pixels to an integer input tensor: round(x / scale + zero_point), clipped to ``dtype``."""
    info = np.iinfo(dtype)
    if scale == 1.0 and images.dtype == np.uint8:
        # the usual full-int8 input (raw 0..255 pixels): whole numbers stay whole, so skip the
        # float round trip (a quarter of a millisecond per 224x224 image on a fast CPU)
        if zero_point == 0 and dtype == np.uint8:
            return np.ascontiguousarray(images)
        return np.clip(images.astype(np.int32) + zero_point, info.min, info.max).astype(dtype)
    quantized = np.round(images.astype(np.float32) / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)
