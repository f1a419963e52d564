"""The inputs of a conversion, read from a training run: the Keras model, its contract, the test
images every variant is scored on, and the calibration images.

Everything here that can fail because of bad input raises UserError (exit code 2). Images are
decoded and resized only with ``edge.preprocess.load_for_model``, the same call the edge runner
makes, so every model sees byte-identical pixels.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.contract import DECODE_REDUCED_JPEG, ModelContract
from edge.errors import ImageDecodeError, UserError, first_line
from edge.preprocess import is_image_path, load_for_model
from training.run_layout import RunLayout, open_run, read_split


@dataclass(frozen=True)
class ImageSet:
    """Decoded model inputs: (N, S, S, 3) uint8 RGB, raw 0..255."""

    images: np.ndarray
    paths: list[str]
    labels: np.ndarray | None  # int 0/1 per image; None for unlabelled camera frames
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    source: str = ""  # where the images came from, relative to the run (never a full path)

    def __len__(self) -> int:
        return len(self.paths)

    def label_counts(self) -> dict[str, int] | None:
        if self.labels is None:
            return None
        return {"crack": int((self.labels == 1).sum()), "no_crack": int((self.labels == 0).sum())}


@dataclass(frozen=True)
class RunInputs:
    layout: RunLayout
    contract: ModelContract


def check_run(path: str | Path) -> RunInputs:
    """Validate a run directory without TensorFlow: model, contract and test split must exist."""
    layout = open_run(path)
    if not layout.model.is_file():
        raise UserError(f"run {layout.root} has no model.keras (did training finish?)")
    if not zipfile.is_zipfile(layout.model):
        raise UserError(f"{layout.model} is corrupt: not a Keras archive")
    if not layout.contract.is_file():
        raise UserError(f"run {layout.root} has no contract.json")
    test_split = layout.split_file("test")
    if not test_split.is_file():
        raise UserError(f"run {layout.root} has no test split ({test_split})")
    contract = ModelContract.load(layout.contract)
    return RunInputs(layout=layout, contract=contract)


def load_keras_model(path: Path, input_size: int):
    """keras.models.load_model with safe_mode; one-line UserError when it cannot be used."""
    import keras

    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # corrupt archive, unknown layer, unsafe lambda, ...
        raise UserError(f"cannot load {path}: {first_line(exc, 300)}") from None
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[1:] != (input_size, input_size, 3):
        raise UserError(f"{path} takes input {model.input_shape}, but contract.json says "
                        f"{input_size}x{input_size}x3")
    if tuple(model.output_shape)[1:] != (1,):
        raise UserError(f"{path} has output shape {model.output_shape}; expected one sigmoid "
                        "probability per image")
    return model


def _resolve(path_text: str, root: Path) -> Path:
    path = Path(path_text)
    if path.is_absolute() or path.exists():
        return path
    return root / path


def _relative_to_run(path: Path, layout: RunLayout) -> str:
    return str(path.relative_to(layout.root)) if path.is_relative_to(layout.root) else path.name


def _decode_all(paths: list[Path], size: int, limit: int | None = None,
                decode: str = DECODE_REDUCED_JPEG
                ) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:
    images, kept, skipped = [], [], []
    for index, path in enumerate(paths):
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append(load_for_model(path, size, decode=decode))
            kept.append(index)
        except ImageDecodeError as exc:
            skipped.append((str(path), str(exc)))
    return images, kept, skipped


def _stack(images: list[np.ndarray], size: int) -> np.ndarray:
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(images).astype(np.uint8, copy=False)


def load_test_set(layout: RunLayout, size: int, decode: str = DECODE_REDUCED_JPEG) -> ImageSet:
    """Every readable image of the test split, in file order, decoded as the contract's ``decode``
    says."""
    rows = read_split(layout.split_file("test"))
    if not rows:
        raise UserError(f"the test split {layout.split_file('test')} is empty")
    paths = [_resolve(path, layout.root) for path, _ in rows]
    images, kept, skipped = _decode_all(paths, size, decode=decode)
    if not images:
        raise UserError(f"none of the {len(rows)} test images could be read "
                        f"(first problem: {skipped[0][0]}: {skipped[0][1]})")
    labels = np.array([rows[i][1] for i in kept], dtype=np.int64)
    return ImageSet(_stack(images, size), [str(paths[i]) for i in kept], labels, skipped,
                    source=_relative_to_run(layout.split_file("test"), layout))


def load_calibration_set(layout: RunLayout, size: int, count: int, seed: int,
                         directory: Path | None = None,
                         decode: str = DECODE_REDUCED_JPEG) -> ImageSet:
    """``count`` images drawn deterministically (seeded permutation) from the TRAINING split, or
    from ``directory`` (deployment-camera frames). Never from val or test."""
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"calibration directory not found: {directory}")
        candidates = sorted(p for p in directory.rglob("*") if p.is_file() and is_image_path(p))
        if not candidates:
            raise UserError(f"calibration directory {directory} has no images")
        labels_all = None
        source = directory.name
    else:
        split = layout.split_file("train")
        if not split.is_file():
            raise UserError(f"run {layout.root} has no training split ({split}) to calibrate on; "
                            "pass --calibration-dir")
        rows = read_split(split)
        if not rows:
            raise UserError(f"the training split {split} is empty; pass --calibration-dir")
        candidates = [_resolve(path, layout.root) for path, _ in rows]
        labels_all = [label for _, label in rows]
        source = _relative_to_run(split, layout)
    order = np.random.default_rng(seed).permutation(len(candidates))
    ordered = [candidates[i] for i in order]
    images, kept, skipped = _decode_all(ordered, size, limit=count, decode=decode)
    if not images:
        raise UserError(f"none of the calibration images in {source} could be read "
                        f"(first problem: {skipped[0][0]}: {skipped[0][1]})")
    labels = None
    if labels_all is not None:
        labels = np.array([labels_all[order[i]] for i in kept], dtype=np.int64)
    return ImageSet(_stack(images, size), [str(ordered[i]) for i in kept], labels, skipped,
                    source=source)
