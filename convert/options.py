"""What `crack convert` is asked to do: one frozen dataclass, validated before TensorFlow loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convert.modes import MODE_TABLE, MODES, REQUESTABLE
from edge.errors import UserError

DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_LATENCY_RUNS = 30
# Reference kernels are slow: at most this many test images are scored with them (the report
# says when that is a subset; a subset never gates).
DEFAULT_REFERENCE_IMAGES = 32


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
    unknown = [mode for mode in requested if mode not in REQUESTABLE]
    if unknown:
        raise UserError(f"unknown mode {unknown[0]!r}; choose from {', '.join(REQUESTABLE)}")
    return tuple(mode for mode in REQUESTABLE if mode in requested)


@dataclass(frozen=True)
class ConvertOptions:
    run: Path
    modes: tuple[str, ...] = MODES
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    calibration_dir: Path | None = None
    # percentage points of accuracy, and of F1; None: convert.gate.DEFAULT_MAX_DROP
    max_drop: float | None = None
    recover: bool = True  # try selective int8 when full int8 fails the gate
    latency_runs: int = DEFAULT_LATENCY_RUNS
    threads: int | None = None  # interpreter threads; None = all cores
    seed: int = 0  # which training images are drawn for calibration
    debug_samples: int = 50  # calibration images the quantisation debugger runs on
    selective_max_fraction: float = 0.5  # never keep more than this share of layers in float
    reference_images: int = DEFAULT_REFERENCE_IMAGES  # test images run on the reference kernels
    golden_count: int = 24  # golden inputs kept with each variant for `crack-edge verify`
    bias_correction: bool = True  # int8: correct the output bias on the calibration images

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "modes", parse_modes(list(self.modes)))
        if self.calibration_dir is not None:
            object.__setattr__(self, "calibration_dir", Path(self.calibration_dir))
        if self.calibration_size < 1:
            raise UserError(f"--calibration-size must be at least 1, got {self.calibration_size}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 100.0:
            raise UserError(f"--max-drop must be between 0 and 100 percentage points, got {self.max_drop}")
        if self.latency_runs < 1:
            raise UserError(f"--latency-runs must be at least 1, got {self.latency_runs}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.debug_samples < 1:
            raise UserError("debug_samples must be at least 1")
        if not 0.0 < self.selective_max_fraction <= 1.0:
            raise UserError("selective_max_fraction must be in (0, 1]")
        if self.reference_images < 0:
            raise UserError(f"--reference-images must be at least 0, got {self.reference_images}")
        if self.golden_count < 2:
            raise UserError(f"--golden-count must be at least 2, got {self.golden_count}")

    @property
    def needs_calibration(self) -> bool:
        return any(MODE_TABLE[mode].representative_dataset for mode in self.modes)

    def to_dict(self) -> dict:
        """For the report: names, never build-machine paths."""
        return {"run": self.run.name, "modes": list(self.modes), "calibration_size": self.calibration_size,
                "calibration_dir": self.calibration_dir.name if self.calibration_dir else None,
                "max_drop": self.max_drop, "recover": self.recover, "latency_runs": self.latency_runs,
                "threads": self.threads, "seed": self.seed, "debug_samples": self.debug_samples,
                "selective_max_fraction": self.selective_max_fraction,
                "reference_images": self.reference_images, "golden_count": self.golden_count,
                "bias_correction": self.bias_correction}
