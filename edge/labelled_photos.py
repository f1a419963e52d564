"""Labelled photos below class folders, scored: what `crack-edge verify --images`, `crack-edge
calibrate` and `crack calibrate` all read.

Files are found as `crack-edge score` finds them (``edge.file_inputs.find_inputs``) and each one's
ground truth is the nearest class folder below the path given, as `score --labels-from-folders`
reads it (``edge.score.truth_from_folders``). The scoring itself is the caller's: the device's
TFLite interpreter (``tflite_batches``) or, one layer up, the Keras model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.file_inputs import find_inputs
from edge.image_header import DEFAULT_MAX_PIXELS
from edge.progress import progress_bar
from edge.score import scored_rows, truth_from_folders
from edge.tiling import TileGrid

# paths -> batches of (path as a string, probability or None when the file could not be read)
ScoreBatches = Callable[[list[Path]], Iterable[list[tuple[str, float | None]]]]
CLASS_FOLDER_HINT = "class folders such as crack/no_crack, Positive/Negative, cracked/uncracked, 1/0"


@dataclass
class LabelledScores:
    labels: np.ndarray  # (N,) int64, 1 = crack
    probabilities: np.ndarray  # (N,) float64
    files: int  # image files found
    unreadable: int  # could not be decoded or scored
    unlabelled: int  # scored, but under no crack/no_crack folder
    skipped: list[str] = field(default_factory=list)  # what find_inputs skipped, as lines

    def counts(self) -> dict[str, int]:
        crack = int(self.labels.sum())
        return {"crack": crack, "no_crack": len(self.labels) - crack}


def tflite_batches(classifier: CrackClassifier) -> ScoreBatches:
    """Score with the device's interpreter, exactly as `crack-edge score` does (whole images)."""
    def batches(paths: list[Path]):
        for rows in scored_rows(classifier, paths, TileGrid(), max_pixels=DEFAULT_MAX_PIXELS):
            yield [(row.path, None if row.error else row.probability) for row in rows]

    return batches


def score_labelled_photos(inputs: tuple[str, ...] | list[str], score_batches: ScoreBatches,
                          option: str = "--labels-from-folders", show_progress: bool = True) -> LabelledScores:
    """Find the photos in ``inputs``, score them and label each from its class folder. UserError
    (naming ``option``) when no photo is found or none of the readable ones is under a class folder."""
    found = find_inputs(inputs)
    if not found.files:
        raise UserError("no image files found in " + ", ".join(inputs)
                        + "".join(f"; {line}" for line in found.skipped.lines()))
    roots = {str(file.path): file.root for file in found.files}
    labels: list[int] = []
    probabilities: list[float] = []
    unreadable = unlabelled = 0
    with progress_bar("scoring", len(found.files), show_progress) as advance:
        for batch in score_batches([file.path for file in found.files]):
            advance(len(batch))
            for path, probability in batch:
                if probability is None:
                    unreadable += 1
                    continue
                truth = truth_from_folders(Path(path), roots[path])
                if truth is None:
                    unlabelled += 1
                else:
                    labels.append(truth)
                    probabilities.append(probability)
    if not labels:
        raise UserError(f"{option} found no crack/no_crack folder among the "
                        f"{len(found.files) - unreadable} readable photo(s) in " + ", ".join(inputs)
                        + f" ({CLASS_FOLDER_HINT})")
    return LabelledScores(np.array(labels, np.int64), np.array(probabilities, np.float64),
                          files=len(found.files), unreadable=unreadable, unlabelled=unlabelled,
                          skipped=found.skipped.lines())
