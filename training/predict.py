"""`crack predict`: score image files with a run's Keras model and write ``path,probability,label``.

This is the reference the converted TFLite models and the edge runner are compared with: the
images are decoded by the same ``edge.preprocess`` code and labelled with the run's threshold.
Files that cannot be decoded get an empty probability and their error in the ``error`` column.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic_files import write_bytes_atomic
from edge.contract import ModelContract
from edge.errors import ImageDecodeError, UserError, first_line
from edge.preprocess import load_for_model
from training.keras_inference import BATCH_SIZE, keras_probabilities
from training.run_layout import open_run


@dataclass(frozen=True)
class PredictOptions:
    run: Path
    paths: tuple[str, ...]
    out: Path
    threshold: float | None = None  # None: the run's threshold (contract.json)


def load_run_model(run: Path):
    """(keras model, contract) of a finished run; one-line errors when it is not usable, given
    before TensorFlow is imported (seconds on a small machine)."""
    layout = open_run(run)
    if not layout.model.is_file() or not layout.contract.is_file():
        raise UserError(f"run {layout.root} has no model.keras/contract.json (did training finish?)")
    contract = ModelContract.load(layout.contract)
    import keras

    try:
        model = keras.models.load_model(layout.model, safe_mode=True, compile=False)
    except Exception as exc:
        raise UserError(f"cannot load {layout.model}: {first_line(exc)}") from None
    return model, contract


def predict_files(model, contract: ModelContract, paths: list[Path]
                  ) -> list[tuple[str, float | None, str]]:
    """(path, probability or None, error) per file, in the given order."""
    results: list[tuple[str, float | None, str]] = []
    batch: list[np.ndarray] = []
    waiting: list[int] = []

    def flush() -> None:
        if not batch:
            return
        scores = keras_probabilities(model, np.stack(batch))
        for index, score in zip(waiting, scores):
            results[index] = (results[index][0], float(score), "")
        batch.clear()
        waiting.clear()

    for path in paths:
        try:
            image = load_for_model(path, contract.input_size, decode=contract.decode)
        except ImageDecodeError as exc:
            results.append((str(path), None, str(exc)))
            continue
        results.append((str(path), None, ""))
        batch.append(image)
        waiting.append(len(results) - 1)
        if len(batch) == BATCH_SIZE:
            flush()
    flush()
    return results


def run_predict(options: PredictOptions, expand) -> tuple[int, int]:
    """Score every file; returns (scored, failed). ``expand`` turns PATHS into files."""
    paths = expand(options.paths)
    if not paths:
        raise UserError("no image files found in the given paths")
    model, contract = load_run_model(options.run)
    if options.threshold is not None:
        contract = contract.with_threshold(options.threshold)
    results = predict_files(model, contract, paths)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "probability", "label", "error"])
    for path, probability, error in results:
        if probability is None:
            writer.writerow([path, "", "", error])
        else:
            writer.writerow([path, f"{probability:.6f}", contract.label_name(probability), ""])
    write_bytes_atomic(options.out, text.getvalue().encode())
    failed = sum(1 for _, probability, _ in results if probability is None)
    return len(results) - failed, failed
