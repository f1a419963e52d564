"""Where the model is invoked: a .tflite file, its contract, and a TFLite interpreter.

``CrackClassifier.predict`` takes images already prepared by ``edge.preprocess`` (RGB uint8,
input_size x input_size) and returns crack probabilities. Float and integer models both work:
quantisation parameters are read from the model, never assumed. The contract comes from the model
card (embedded in the .tflite and/or its sidecar, ``edge.model_metadata``); a model with neither
is used with the default threshold and labels after a loud warning. Models that are not a crack
classifier of this toolkit's shape (one square RGB input, one probability out) are refused at load.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edge.contract import DEFAULT_THRESHOLD, LABELS, ModelCard, ModelContract
from edge.errors import UserError
from edge.interpreter import DEFAULT_KERNELS, InterpreterBackend, default_thread_count, find_interpreter
from edge.model_metadata import read_model_card, sidecar_path

SUPPORTED_INPUT_TYPES = (np.float32, np.uint8, np.int8)
_warned_without_contract: set[Path] = set()


def warn_no_contract(model_path: Path) -> None:
    """One loud stderr line per model and process: the default threshold is a guess."""
    resolved = model_path.resolve()
    if resolved in _warned_without_contract:
        return
    _warned_without_contract.add(resolved)
    print(f"warning: {model_path.name} has no contract (none embedded in the model, no sidecar "
          f"{sidecar_path(model_path).name}): using threshold {DEFAULT_THRESHOLD} and labels "
          f"{'/'.join(LABELS)}, not the threshold chosen in training; convert with `crack convert`",
          file=sys.stderr, flush=True)


class CrackClassifier:
    """A TFLite crack classifier. Not thread-safe: use one per thread.

    ``contract`` given: use it and read no card (`crack convert` scoring a model it has not
    published yet). ``kernels``: a key of ``edge.interpreter.KERNEL_SETS``."""

    def __init__(self, model_path: str | Path, threads: int | None = None,
                 backend: InterpreterBackend | None = None, contract: ModelContract | None = None,
                 kernels: str = DEFAULT_KERNELS) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise UserError(f"model not found: {self.model_path}")
        self.card: ModelCard | None = None
        self.card_source = "given"
        if contract is None:
            found = read_model_card(self.model_path)
            self.card, self.card_source = found.card, found.source
        self.backend = backend or find_interpreter()
        self.threads = threads or default_thread_count()
        self.kernels = kernels
        try:
            self._interpreter = self.backend.create(str(self.model_path), self.threads, kernels)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"cannot load {self.model_path} as a TFLite model: {exc}") from None
        self._input, self._output = self._single_io()
        self._batch = int(self._input["shape"][0])
        size = int(self._input["shape"][1])
        if contract is not None:
            self.contract = contract
        elif self.card is not None:
            self.contract = self.card.contract
        else:
            warn_no_contract(self.model_path)
            self.contract = ModelContract(input_size=size)
        if self.contract.input_size != size:
            raise UserError(f"{self.model_path.name}: the contract says input size "
                            f"{self.contract.input_size} but the model takes {size}")

    def _single_io(self) -> tuple[dict, dict]:
        """The one input and output, checked: square RGB in, one probability out."""
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        name = self.model_path.name
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{name} has {len(inputs)} input(s) and {len(outputs)} output(s); a crack "
                            "classifier has one image input and one probability output")
        shape = [int(v) for v in inputs[0]["shape"]]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise UserError(f"{name} takes input of shape {shape}; a crack classifier takes square "
                            "RGB images, [batch, size, size, 3]")
        if np.dtype(inputs[0]["dtype"]) not in [np.dtype(t) for t in SUPPORTED_INPUT_TYPES]:
            raise UserError(f"{name} takes {np.dtype(inputs[0]['dtype']).name} input; supported: "
                            "float32, uint8, int8")
        values = int(np.prod(outputs[0]["shape"][1:]))
        if values != 1:
            raise UserError(f"{name} outputs {values} values per image (a {values}-class softmax?); "
                            "a crack classifier outputs one sigmoid probability")
        return inputs[0], outputs[0]

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
