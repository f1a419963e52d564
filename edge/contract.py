"""The model contract and the sidecar schema: the one definition that training, conversion and the
edge runner share (described in edge/FORMATS.md, "Model contract and sidecar").

``ModelContract``: every saved model (Keras or TFLite) takes raw RGB pixels in 0..255, squashed
(no aspect-ratio padding) to ``input_size`` x ``input_size`` with OpenCV's INTER_AREA resize. The
ResNet50V2 input scaling (x / 127.5 - 1) is the model's own first layer, so no caller ever
rescales. ``decode`` says how files were decoded in training, so that serving does the same: a
large JPEG at libjpeg's reduced scale (``reduced-jpeg``, what training does since crackkit
recorded it) or every file at full resolution (``full``, every contract written before). The output is one sigmoid probability that the image shows a crack; ``threshold`` turns
it into a label. A training run keeps its contract in ``runs/NAME/contract.json``.

``ModelCard``: what a converted .tflite says about itself: its contract, the mode it was converted
in, the run and Keras model it came from, the crackkit version that made it, its golden inputs and
informative details (conversion settings, tensors, metrics, gate). `crack convert` writes the same
card twice: embedded in the .tflite (``edge.model_metadata``, without ``sha256``) and as the
human-readable sidecar ``model_<mode>.json`` beside it (with the .tflite's ``sha256``).
Both are validated by ``ModelCard.from_dict``: a wrong shape or type is a UserError naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.atomic_files import write_json_atomic
from edge.errors import UserError

DEFAULT_INPUT_SIZE = 224
MIN_INPUT_SIZE = 32
DEFAULT_THRESHOLD = 0.5
COLOUR_ORDER = "RGB"
PIXEL_RANGE = (0, 255)
RESIZE_METHOD = "squash-inter-area"
RESIZE_METHODS = (RESIZE_METHOD,)  # what edge.preprocess implements
DECODE_REDUCED_JPEG = "reduced-jpeg"  # an 8-bit JPEG at 1/2, 1/4 or 1/8 scale when that keeps input_size
DECODE_FULL = "full"  # every file at full resolution
DECODE_METHODS = (DECODE_REDUCED_JPEG, DECODE_FULL)  # what edge.preprocess implements
# A contract without a decode field was written before it existed, by training on full decodes.
# On 200 surface_crack test photos (224 px, read at 1/2 for a 64 px model) a model trained on full
# decodes moved by up to 0.087 (fp32) and 0.14 (int8) when served reduced decodes, so it is not.
DECODE_BEFORE_RECORDED = DECODE_FULL
LABELS = ("no_crack", "crack")  # index 0 = negative, index 1 = positive (what the sigmoid scores)
# Class-folder names that mean crack / no crack, compared case-insensitively: training reads
# labelled data with them and `crack-edge score --labels-from-folders` reads ground truth.
POSITIVE_FOLDER_NAMES = ("positive", "crack", "cracks", "cracked", "1", "pos", "yes")
NEGATIVE_FOLDER_NAMES = ("negative", "no_crack", "no-crack", "nocrack", "no crack", "non_crack",
                         "noncrack", "uncracked", "0", "neg", "no")

SIDECAR_SCHEMA_VERSION = 1
SIDECAR_SUFFIX = ".json"


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


# --- field checks: each raises UserError naming the field ------------------------------------------

def _type_name(value) -> str:
    return "text" if isinstance(value, str) else type(value).__name__


def _integer(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: field '{name}' must be a whole number, got {_type_name(value)} {value!r}")
    return value


def _number(where: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: field '{name}' must be a number, got {_type_name(value)} {value!r}")
    return float(value)


def _text(where: str, name: str, value) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' must be text, got {_type_name(value)} {value!r}")
    return value


def _mapping(where: str, name: str, value) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where}: field '{name}' must be an object, got {_type_name(value)}")
    return value


def _pair(where: str, name: str, value, check) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"{where}: field '{name}' must be a list of two values, got {value!r}")
    return tuple(check(where, f"{name}[{i}]", item) for i, item in enumerate(value))


def _known_keys(where: str, prefix: str, data: dict, known) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(prefix + k for k in unknown)}")


def _required(where: str, prefix: str, data: dict, names) -> None:
    for name in names:
        if name not in data:
            raise UserError(f"{where}: field '{prefix}{name}' is missing")


@dataclass(frozen=True)
class ModelContract:
    """What a model expects as input and how to read its output."""

    input_size: int = DEFAULT_INPUT_SIZE
    threshold: float = DEFAULT_THRESHOLD
    colour_order: str = COLOUR_ORDER
    pixel_range: tuple[int, int] = PIXEL_RANGE
    resize: str = RESIZE_METHOD
    labels: tuple[str, str] = LABELS
    decode: str = DECODE_REDUCED_JPEG
    extra: dict = field(default_factory=dict)  # free-form provenance (run name, threshold_rule, ...)

    def __post_init__(self) -> None:
        if self.input_size < MIN_INPUT_SIZE:
            raise UserError(f"input size {self.input_size} is too small (ResNet50V2 needs at least "
                            f"{MIN_INPUT_SIZE})")
        if not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"threshold {self.threshold} is outside 0..1")
        if self.colour_order != COLOUR_ORDER or tuple(self.pixel_range) != PIXEL_RANGE:
            raise UserError(
                f"unsupported contract: colour order {self.colour_order}, pixel range {self.pixel_range}; "
                f"this toolkit's models take {COLOUR_ORDER} pixels in {PIXEL_RANGE}"
            )
        if self.resize not in RESIZE_METHODS:
            raise UserError(f"unsupported contract: resize {self.resize!r}; this toolkit resizes with "
                            f"{', '.join(RESIZE_METHODS)}")
        if self.decode not in DECODE_METHODS:
            raise UserError(f"unsupported contract: decode {self.decode!r}; this toolkit decodes "
                            f"with {', '.join(DECODE_METHODS)}")

    @property
    def threshold_rule(self) -> str | None:
        """How the threshold was chosen (training records it), if known."""
        rule = self.extra.get("threshold_rule")
        return rule if isinstance(rule, str) else None

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
    def from_dict(cls, data, where: str = "model contract", prefix: str = "") -> "ModelContract":
        """Validate every field's type, then the values (UserError naming the field)."""
        data = _mapping(where, prefix.rstrip(".") or "contract", data)
        _known_keys(where, prefix, data, cls.__dataclass_fields__)
        values = dict(data)
        values.setdefault("decode", DECODE_BEFORE_RECORDED)
        checks = {"input_size": _integer, "threshold": _number, "colour_order": _text,
                  "resize": _text, "decode": _text, "extra": _mapping}
        for name, check in checks.items():
            if name in values:
                values[name] = check(where, prefix + name, values[name])
        if "pixel_range" in values:
            values["pixel_range"] = _pair(where, prefix + "pixel_range", values["pixel_range"], _integer)
        if "labels" in values:
            values["labels"] = _pair(where, prefix + "labels", values["labels"], _text)
        try:
            return cls(**values)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelContract":
        path = Path(path)
        return cls.from_dict(read_json_object(path, "model contract"), where=f"model contract {path}")


def read_json_object(path: Path, what: str):
    """The parsed JSON of a small UTF-8 file; UserError when missing, not UTF-8 or not JSON."""
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc}") from None


# --- the card of a converted model ------------------------------------------------------------------

@dataclass(frozen=True)
class SourceRun:
    """The training run a model was converted from: its name and its Keras model's sha256."""

    name: str
    model_sha256: str


@dataclass(frozen=True)
class GoldenReference:
    """The companion file of golden inputs (``edge.golden``), named beside the model."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ModelCard:
    """The sidecar schema (version ``SIDECAR_SCHEMA_VERSION``), also embedded in the .tflite."""

    contract: ModelContract
    mode: str  # fp32, fp16, dynamic, int8, int8_litert, int8_selective (convert.modes)
    source_run: SourceRun
    package_version: str  # the crackkit version that converted the model
    created: str  # ISO 8601, UTC
    sha256: str | None = None  # of the .tflite file: in the sidecar only (a file cannot hold its own hash)
    golden: GoldenReference | None = None
    details: dict = field(default_factory=dict)  # informative: conversion, tensors, metrics, gate
    schema_version: int = SIDECAR_SCHEMA_VERSION

    def to_dict(self) -> dict:
        data = {"schema_version": self.schema_version, "contract": self.contract.to_dict(),
                "mode": self.mode, "source_run": asdict(self.source_run),
                "package_version": self.package_version, "created": self.created,
                "golden": asdict(self.golden) if self.golden else None,
                "details": self.details}
        if self.sha256 is not None:
            data["sha256"] = self.sha256
        return data

    def embedded(self) -> "ModelCard":
        """The copy that goes inside the .tflite: everything but the file's own hash."""
        return ModelCard(**{**self.__dict__, "sha256": None})

    def differences(self, other: "ModelCard") -> list[str]:
        """Top-level fields (sha256 aside) in which two cards of one model disagree."""
        mine, theirs = self.embedded().to_dict(), other.embedded().to_dict()
        return [name for name in mine if json.dumps(mine[name], sort_keys=True)
                != json.dumps(theirs.get(name), sort_keys=True)]

    @classmethod
    def from_dict(cls, data, where: str) -> "ModelCard":
        if not isinstance(data, dict):
            raise UserError(f"{where}: must be a JSON object, got {_type_name(data)}")
        if "schema_version" not in data:
            raise UserError(f"{where}: field 'schema_version' is missing (an older or foreign file: "
                            "convert the run again with `crack convert`)")
        version = _integer(where, "schema_version", data["schema_version"])
        if version > SIDECAR_SCHEMA_VERSION:
            raise UserError(f"{where}: schema_version {version} is newer than this crackkit reads "
                            f"({SIDECAR_SCHEMA_VERSION}); upgrade crackkit")
        if version < 1:
            raise UserError(f"{where}: field 'schema_version' must be at least 1, got {version}")
        _known_keys(where, "", data, cls.__dataclass_fields__)
        _required(where, "", data, ("contract", "mode", "source_run", "package_version", "created"))
        source = _mapping(where, "source_run", data["source_run"])
        _known_keys(where, "source_run.", source, SourceRun.__dataclass_fields__)
        _required(where, "source_run.", source, SourceRun.__dataclass_fields__)
        golden = data.get("golden")
        if golden is not None:
            golden = _mapping(where, "golden", golden)
            _known_keys(where, "golden.", golden, GoldenReference.__dataclass_fields__)
            _required(where, "golden.", golden, GoldenReference.__dataclass_fields__)
            golden = GoldenReference(file=_file_name(where, "golden.file", golden["file"]),
                                     sha256=_sha256(where, "golden.sha256", golden["sha256"]))
        sha256 = data.get("sha256")
        return cls(
            contract=ModelContract.from_dict(data["contract"], where, prefix="contract."),
            mode=_text(where, "mode", data["mode"]),
            source_run=SourceRun(name=_text(where, "source_run.name", source["name"]),
                                 model_sha256=_sha256(where, "source_run.model_sha256",
                                                      source["model_sha256"])),
            package_version=_text(where, "package_version", data["package_version"]),
            created=_text(where, "created", data["created"]),
            sha256=None if sha256 is None else _sha256(where, "sha256", sha256),
            golden=golden,
            details=_mapping(where, "details", data.get("details", {})),
            schema_version=version,
        )

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        return cls.from_dict(read_json_object(path, "sidecar"), where=f"sidecar {path.name}")


def _sha256(where: str, name: str, value) -> str:
    text = _text(where, name, value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UserError(f"{where}: field '{name}' must be a sha256 in hex (64 characters), got {text!r}")
    return text


def _file_name(where: str, name: str, value) -> str:
    """A plain file name (no folders): the golden file lies beside the model."""
    text = _text(where, name, value)
    if not text or "/" in text or "\\" in text or text in (".", ".."):
        raise UserError(f"{where}: field '{name}' must be a file name without folders, got {text!r}")
    return text
