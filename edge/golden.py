"""Golden inputs: a few preprocessed test images kept beside a converted model, with what the build
machine computed for them, so that a device can check its own interpreter (`crack-edge verify`).

The file is ``model_<mode>.golden.npz`` (numpy's npz, read with ``allow_pickle=False``), named
with its sha256 in the model card (``ModelCard.golden``). Arrays (N golden inputs, K kernel sets):

  schema_version      ()        int, GOLDEN_SCHEMA_VERSION
  images              (N,S,S,3) uint8, RGB 0..255 at the model's input size, as the model takes them
  labels              (N,)      int8, ground truth from the run's test split (1 = crack)
  keras               (N,)      float32, the Keras model's probabilities
  build               (N,)      float32, this variant's probabilities on the build machine (XNNPACK)
  kernel_names        (K,)      str, the build machine's kernel sets (edge.interpreter.KERNEL_SETS)
  kernel_probabilities (K,N)    float32, this variant under each of them
  threshold           ()        float, the contract's threshold when the file was made
  margin              ()        float, inputs closer than this to the threshold are reported, not failed
  mean_abs_dp_bound   ()        float, the largest mean |dp| a healthy device may show against ``build``
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic_files import write_bytes_atomic
from edge.errors import UserError

GOLDEN_SCHEMA_VERSION = 1
GOLDEN_SUFFIX = ".golden.npz"
# The bound's and the margin's floors: one step of a uint8 probability output (1/256), and the
# margin within which kernels that round differently may legitimately flip a label.
MIN_MEAN_ABS_DP_BOUND = 1 / 256
MIN_MARGIN = 0.05


def golden_path(model_path: str | Path) -> Path:
    """model_int8.tflite -> model_int8.golden.npz"""
    return Path(model_path).with_suffix(GOLDEN_SUFFIX)


@dataclass(frozen=True)
class GoldenSet:
    images: np.ndarray
    labels: np.ndarray
    keras: np.ndarray
    build: np.ndarray
    kernel_names: tuple[str, ...]
    kernel_probabilities: np.ndarray
    threshold: float
    margin: float
    mean_abs_dp_bound: float

    def __len__(self) -> int:
        return len(self.images)

    @property
    def far(self) -> np.ndarray:
        """Inputs whose build-machine probability is farther than the margin from the threshold."""
        return np.abs(self.build.astype(np.float64) - self.threshold) > self.margin

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, schema_version=np.int64(GOLDEN_SCHEMA_VERSION), images=self.images.astype(np.uint8),
            labels=self.labels.astype(np.int8), keras=self.keras.astype(np.float32),
            build=self.build.astype(np.float32), kernel_names=np.array(self.kernel_names, dtype=str),
            kernel_probabilities=self.kernel_probabilities.astype(np.float32),
            threshold=np.float64(self.threshold), margin=np.float64(self.margin),
            mean_abs_dp_bound=np.float64(self.mean_abs_dp_bound))
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, input_size: int | None = None) -> "GoldenSet":
        """Read and check the file; UserError (exit 2) when it cannot be used."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise UserError(f"golden inputs not found: {path}") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(f"golden inputs {path.name} cannot be read: {exc}") from None
        return cls._from_arrays(arrays, path.name, input_size)

    @classmethod
    def _from_arrays(cls, arrays: dict, name: str, input_size: int | None) -> "GoldenSet":
        expected = ("schema_version", "images", "labels", "keras", "build", "kernel_names",
                    "kernel_probabilities", "threshold", "margin", "mean_abs_dp_bound")
        missing = [key for key in expected if key not in arrays]
        if missing:
            raise UserError(f"golden inputs {name}: array(s) {', '.join(missing)} missing")
        version = int(arrays["schema_version"])
        if version != GOLDEN_SCHEMA_VERSION:
            raise UserError(f"golden inputs {name}: schema_version {version}, this crackkit reads "
                            f"{GOLDEN_SCHEMA_VERSION}")
        images = arrays["images"]
        count = len(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or count == 0 \
                or images.shape[1] != images.shape[2]:
            raise UserError(f"golden inputs {name}: images must be (N, S, S, 3) uint8, got "
                            f"{images.shape} {images.dtype}")
        if input_size is not None and images.shape[1] != input_size:
            raise UserError(f"golden inputs {name} are {images.shape[1]} px but the model takes {input_size}")
        for key in ("labels", "keras", "build"):
            if arrays[key].shape != (count,):
                raise UserError(f"golden inputs {name}: {key} must hold {count} values")
        names = tuple(str(n) for n in arrays["kernel_names"])
        if arrays["kernel_probabilities"].shape != (len(names), count):
            raise UserError(f"golden inputs {name}: kernel_probabilities must be ({len(names)}, {count})")
        return cls(images=images, labels=arrays["labels"].astype(np.int64),
                   keras=arrays["keras"].astype(np.float32), build=arrays["build"].astype(np.float32),
                   kernel_names=names, kernel_probabilities=arrays["kernel_probabilities"].astype(np.float32),
                   threshold=float(arrays["threshold"]), margin=float(arrays["margin"]),
                   mean_abs_dp_bound=float(arrays["mean_abs_dp_bound"]))
