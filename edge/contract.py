"""The model's input contract: the one definition that training, conversion and the edge runner share.

Every saved model (Keras or TFLite) takes raw RGB pixels in 0..255, squashed (no aspect-ratio
padding) to ``input_size`` x ``input_size`` with OpenCV's INTER_AREA resize. The ResNet50V2 input
scaling (x / 127.5 - 1) is the model's own first layer, so no caller ever rescales. The output is
one sigmoid probability that the image shows a crack; ``threshold`` turns it into a label.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.atomic_files import write_json_atomic
from edge.errors import UserError

CONTRACT_FILENAME = "contract.json"
DEFAULT_INPUT_SIZE = 224
DEFAULT_THRESHOLD = 0.5
COLOUR_ORDER = "RGB"
PIXEL_RANGE = (0, 255)
RESIZE_METHOD = "squash-inter-area"
LABELS = ("no_crack", "crack")  # index 0 = negative, index 1 = positive (what the sigmoid scores)
# Class-folder names that mean crack / no crack, compared case-insensitively: training reads
# labelled data with them and `crack-edge score --labels-from-folders` reads ground truth.
POSITIVE_FOLDER_NAMES = ("positive", "crack", "cracks", "cracked", "1", "pos", "yes")
NEGATIVE_FOLDER_NAMES = ("negative", "no_crack", "no-crack", "nocrack", "no crack", "non_crack",
                         "noncrack", "uncracked", "0", "neg", "no")


def folder_label(name: str, positive: str | None = None) -> int | None:
    """1 for a crack folder name, 0 for a no-crack one, None when the name says neither.
    With ``positive`` given, that name is the crack class and every other name is no-crack."""
    folded = name.strip().lower()
    if positive is not None:
        return 1 if folded == positive.strip().lower() else 0
    if folded in POSITIVE_FOLDER_NAMES:
        return 1
    if folded in NEGATIVE_FOLDER_NAMES:
        return 0
    return None


@dataclass(frozen=True)
class ModelContract:
    """What a model expects as input and how to read its output."""

    input_size: int = DEFAULT_INPUT_SIZE
    threshold: float = DEFAULT_THRESHOLD
    colour_order: str = COLOUR_ORDER
    pixel_range: tuple[int, int] = PIXEL_RANGE
    resize: str = RESIZE_METHOD
    labels: tuple[str, str] = LABELS
    extra: dict = field(default_factory=dict)  # free-form provenance (run name, weights, ...)

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise UserError(f"input size {self.input_size} is too small (ResNet50V2 needs at least 32)")
        if not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"threshold {self.threshold} is outside 0..1")
        if self.colour_order != COLOUR_ORDER or tuple(self.pixel_range) != PIXEL_RANGE:
            raise UserError(
                f"unsupported contract: colour order {self.colour_order}, pixel range {self.pixel_range}; "
                f"this toolkit's models take {COLOUR_ORDER} pixels in {PIXEL_RANGE}"
            )

    def label_index(self, probability: float) -> int:
        """1 (crack) when the probability reaches the threshold, else 0."""
        return int(probability >= self.threshold)

    def label_name(self, probability: float) -> str:
        return self.labels[self.label_index(probability)]

    def with_threshold(self, threshold: float) -> "ModelContract":
        return ModelContract(**{**self.to_dict(), "threshold": float(threshold)})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pixel_range"] = list(self.pixel_range)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelContract":
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"model contract has unknown keys: {', '.join(unknown)}")
        values = dict(data)
        if "pixel_range" in values:
            values["pixel_range"] = tuple(values["pixel_range"])
        if "labels" in values:
            values["labels"] = tuple(values["labels"])
        return cls(**values)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelContract":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model contract not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"model contract {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)
