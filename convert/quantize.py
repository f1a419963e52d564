"""Keras model -> .tflite bytes for one mode, with TensorFlow's own ``tf.lite.TFLiteConverter``
(``TFLiteConverterBackend``), configured from the mode table in ``convert.modes``; the mode
int8_litert is made by litert-quantizer from the converter's fp32 model instead
(``LiteRTQuantizerBackend``, the optional `quantizer` extra).

The uint8 input of full int8 should take raw camera pixels with scale 1 and zero point 0: the
model's first layer does the x/127.5-1 scaling. TFLite does not let us set the input scale; it
derives it from the smallest and largest input value seen while calibrating, scale =
(max - min) / 255. So ``Calibration`` anchors the range: when the calibration images do not
already contain a 0 and a 255, one pixel of the first image is set to 0 and another to 255 (two
pixels out of all calibration pixels, values a camera produces anyway). The converted model's
input parameters are then checked, not assumed (``input_is_raw_pixels``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from convert.modes import MODE_TABLE
from edge.errors import UserError, first_line

RAW_PIXEL_QUANTIZATION = (1.0, 0)


@dataclass(frozen=True)
class Calibration:
    """The representative data set for full-integer quantisation."""

    images: np.ndarray  # (N, S, S, 3) uint8, as fed (after anchoring)
    source: str  # where the images came from (a split file or folder name, never a path)
    label_counts: dict | None = None
    skipped: int = 0
    observed_min: int = 0  # pixel range of the images as decoded, before anchoring
    observed_max: int = 255
    anchored: tuple[str, ...] = ()  # what was changed to guarantee the [0, 255] input range

    def __len__(self) -> int:
        return len(self.images)

    def dataset(self, limit: int | None = None) -> Callable[[], Iterator[list[np.ndarray]]]:
        """A representative_dataset: one float32 (1, S, S, 3) raw-pixel batch per image."""
        images = self.images if limit is None else self.images[:limit]

        def generate() -> Iterator[list[np.ndarray]]:
            for image in images:
                yield [image[None].astype(np.float32)]

        return generate

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "count": len(self),
            "label_counts": self.label_counts,
            "skipped_unreadable": self.skipped,
            "observed_pixel_range": [self.observed_min, self.observed_max],
            "anchored": list(self.anchored),
        }


def prepare_calibration(images: np.ndarray, source: str, label_counts: dict | None = None,
                        skipped: int = 0) -> Calibration:
    """Copy the images and, if needed, anchor the input range to exactly [0, 255]."""
    if len(images) == 0:
        raise UserError("no calibration images")
    fed = np.array(images, dtype=np.uint8, copy=True)
    low, high = int(fed.min()), int(fed.max())
    anchored = []
    size = fed.shape[1]
    if low > 0:
        fed[0, 0, 0, :] = 0
        anchored.append(f"pixel (0, 0) of calibration image 0 set to 0 (images' minimum was {low})")
    if high < 255:
        fed[0, size - 1, size - 1, :] = 255
        anchored.append(f"pixel ({size - 1}, {size - 1}) of calibration image 0 set to 255 "
                        f"(images' maximum was {high})")
    return Calibration(fed, source, label_counts, skipped, low, high, tuple(anchored))


def input_is_raw_pixels(info: dict) -> bool:
    """True when a uint8 input takes raw 0..255 pixels unchanged (scale 1, zero point 0)."""
    data = info.get("input") or {}
    quantization = data.get("quantization") or {}
    return (data.get("dtype") == "uint8"
            and abs(float(quantization.get("scale", 0.0)) - RAW_PIXEL_QUANTIZATION[0]) < 1e-6
            and int(quantization.get("zero_point", -1)) == RAW_PIXEL_QUANTIZATION[1])


@contextlib.contextmanager
def native_output_captured() -> Iterator[io.StringIO]:
    """Send what TensorFlow's C++ code prints to stdout/stderr (calibration chatter such as
    "fully_quantize: 0, inference_type: 6, ...") to a buffer instead of the terminal."""
    captured = io.StringIO()
    targets = (1, 2)  # the C++ code writes to the process's descriptors, whatever sys.stdout is
    saved: list[int] = []
    try:
        for fd in targets:
            saved.append(os.dup(fd))
    except OSError:  # no standard descriptors (a daemon): nothing to redirect
        for copy in saved:
            os.close(copy)
        saved = []
    if not saved:
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            for fd in targets:
                os.dup2(sink.fileno(), fd)
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in zip(targets, saved):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.write(sink.read().decode(errors="replace"))


class ConversionError(Exception):
    """The converter could not produce a model for one mode (reported as a failed variant)."""


class TFLiteConverterBackend:
    """TensorFlow's TFLiteConverter, from a SavedModel exported once from the Keras model."""

    name = "tflite"

    def __init__(self, model) -> None:
        self.model = model
        self._workdir: Path | None = None
        self._saved_model: Path | None = None

    def describe(self) -> dict:
        import tensorflow as tf

        return {"name": self.name, "converter": "tf.lite.TFLiteConverter.from_saved_model",
                "tensorflow": tf.__version__}

    def saved_model(self) -> Path:
        """Export the Keras model as a SavedModel once; every mode converts from it."""
        if self._saved_model is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="crack-convert-"))
            target = self._workdir / "saved_model"
            with contextlib.redirect_stdout(io.StringIO()):
                self.model.export(str(target), format="tf_saved_model", verbose=False)
            self._saved_model = target
        return self._saved_model

    def new_converter(self):
        import tensorflow as tf

        return tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model()))

    def configure(self, converter, mode: str, calibration: Calibration | None):
        """``converter`` with ``mode``'s settings from the mode table."""
        if mode not in MODE_TABLE:
            raise ConversionError(f"no conversion mode {mode!r}")
        try:
            return MODE_TABLE[mode].apply(converter, calibration.dataset() if calibration else None)
        except ValueError as exc:
            raise ConversionError(str(exc)) from None

    def convert(self, mode: str, calibration: Calibration | None) -> bytes:
        converter = self.configure(self.new_converter(), mode, calibration)
        try:
            with warnings.catch_warnings(), native_output_captured() as log:
                warnings.simplefilter("ignore")
                return bytes(converter.convert())
        except Exception as exc:  # the converter raises many types; keep the first line
            tail = " | ".join(line for line in log.getvalue().strip().splitlines()[-3:] if line)
            raise ConversionError(first_line(exc, 400)
                                  + (f" (converter log: {tail[:400]})" if tail else "")) from exc

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._saved_model = None


class LiteRTQuantizerBackend:
    """litert-quantizer (the renamed ai-edge-quantizer, the TF converter's successor for
    quantisation): static int8 of the fp32 .tflite that ``source`` (the converter) makes, calibrated
    on the same images through its Python API. Optional: the `quantizer` extra."""

    name = "litert-quantizer"

    def __init__(self, source: TFLiteConverterBackend) -> None:
        self.source = source
        self._fp32: bytes | None = None

    @staticmethod
    def version() -> str | None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("litert-quantizer")
        except PackageNotFoundError:
            return None

    def describe(self) -> dict:
        return {"name": self.name, "litert-quantizer": self.version(),
                "source": "fp32 .tflite from tf.lite.TFLiteConverter.from_saved_model"}

    def fp32(self) -> bytes:
        if self._fp32 is None:
            self._fp32 = self.source.convert("fp32", None)
        return self._fp32

    def convert(self, mode: str, calibration: Calibration | None) -> bytes:
        from convert.modes import LITERT_QUANTIZER

        if mode not in MODE_TABLE or MODE_TABLE[mode].backend != LITERT_QUANTIZER:
            raise ConversionError(f"mode {mode!r} is not made by {self.name}")
        if calibration is None:
            raise ConversionError(f"mode {mode} needs calibration images")
        try:
            from litert_quantizer import calibrator, quantizer, recipe, recipe_manager
            from litert_quantizer.utils import qsv_utils
        except ImportError:
            raise ConversionError("litert-quantizer is not installed: pip install 'crackkit[quantizer]'") from None
        fp32 = self.fp32()
        try:
            with warnings.catch_warnings(), native_output_captured():
                warnings.simplefilter("ignore")
                manager = recipe_manager.RecipeManager()
                manager.load_quantization_recipe(recipe.static_wi8_ai8())
                calibrate = calibrator.Calibrator(fp32, num_threads=os.cpu_count() or 1,
                                                  qsv_update_func=qsv_utils.min_max_update)
                calibrate.calibrate(self._calibration_data(fp32, calibration), manager)
                result = quantizer.Quantizer(bytearray(fp32), manager.get_quantization_recipe()).quantize(
                    calibrate.get_model_qsvs(), enable_progress_report=False)
        except Exception as exc:  # the quantizer raises many types; keep the first line
            raise ConversionError(f"litert-quantizer: {first_line(exc, 400)}") from exc
        return inline_buffers(bytes(result.quantized_model))

    @staticmethod
    def _calibration_data(fp32: bytes, calibration: Calibration) -> dict:
        """{signature: [{input name: (1, S, S, 3) float32 raw pixels}, ...]}, one entry per image."""
        from edge.interpreter import find_interpreter

        signatures = find_interpreter().interpreter_class(model_content=fp32).get_signature_list()
        key = next(iter(signatures))
        name = signatures[key]["inputs"][0]
        return {key: [{name: image[None].astype(np.float32)} for image in calibration.images]}

    def close(self) -> None:
        self._fp32 = None


def inline_buffers(content: bytes) -> bytes:
    """``content`` with every buffer's data inside the flatbuffer. litert-quantizer appends the
    weights after the flatbuffer and points at them (Buffer.offset and size, the format of models
    over 2 GB), which the rest of the pipeline need not know about."""
    from edge.model_metadata import rebuild_model

    return rebuild_model(content, lambda schema, model: None)
