"""What `crack convert` is asked to do: one frozen dataclass, validated before TensorFlow loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from edge.errors import UserError

# Requested modes, in the order they are converted and reported.
MODES = ("fp32", "fp16", "dynamic", "int8")
# Emitted only when full int8 fails the gate and selective quantisation brings it back.
SELECTIVE_MODE = "int8_selective"
ALL_VARIANTS = MODES + (SELECTIVE_MODE,)

MODE_DESCRIPTIONS = {
    "fp32": "float32 (no quantisation)",
    "fp16": "float16 weights, float32 compute and I/O",
    "dynamic": "dynamic-range: int8 weights, float activations and I/O",
    "int8": "full integer: int8 ops only, uint8 input and output",
    SELECTIVE_MODE: "int8 with the layers that lose most kept in float (float I/O)",
}

DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_MAX_DROP = 1.0
DEFAULT_LATENCY_RUNS = 30
DEFAULT_BACKEND = "tflite"


def parse_modes(values: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...]:
    """'fp32,int8' or ['fp32', 'int8'] -> ('fp32', 'int8') in canonical order, duplicates dropped."""
    if values is None:
        return MODES
    if isinstance(values, str):
        values = [values]
    requested: list[str] = []
    for value in values:
        requested.extend(part.strip().lower() for part in value.split(",") if part.strip())
    if not requested:
        raise UserError(f"no modes given; choose from {', '.join(MODES)}")
    unknown = [mode for mode in requested if mode not in MODES]
    if unknown:
        raise UserError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    return tuple(mode for mode in MODES if mode in requested)


@dataclass(frozen=True)
class ConvertOptions:
    run: Path
    modes: tuple[str, ...] = MODES
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    calibration_dir: Path | None = None
    max_drop: float = DEFAULT_MAX_DROP  # percentage points of accuracy, and of F1
    recover: bool = True  # try selective int8 when full int8 fails the gate
    latency_runs: int = DEFAULT_LATENCY_RUNS
    threads: int | None = None  # interpreter threads; None = all cores
    backend: str = DEFAULT_BACKEND
    seed: int = 0  # which training images are drawn for calibration
    debug_samples: int = 50  # calibration images the quantisation debugger runs on
    selective_max_fraction: float = 0.5  # never keep more than this share of layers in float

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "modes", parse_modes(list(self.modes)))
        if self.calibration_dir is not None:
            object.__setattr__(self, "calibration_dir", Path(self.calibration_dir))
        if self.calibration_size < 1:
            raise UserError(f"--calibration-size must be at least 1, got {self.calibration_size}")
        if not 0.0 <= self.max_drop <= 100.0:
            raise UserError(f"--max-drop must be between 0 and 100 percentage points, got {self.max_drop}")
        if self.latency_runs < 1:
            raise UserError(f"--latency-runs must be at least 1, got {self.latency_runs}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.debug_samples < 1:
            raise UserError("debug_samples must be at least 1")
        if not 0.0 < self.selective_max_fraction <= 1.0:
            raise UserError("selective_max_fraction must be in (0, 1]")

    @property
    def needs_calibration(self) -> bool:
        return "int8" in self.modes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["run"] = str(self.run)
        data["modes"] = list(self.modes)
        data["calibration_dir"] = str(self.calibration_dir) if self.calibration_dir else None
        return data
