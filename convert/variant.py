"""The typed result of one converted variant: what the gate judges and the report, the sidecar and
the summary table show. Probabilities stay in memory (golden inputs are drawn from them); the
rest becomes JSON through ``to_dict``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from convert.modes import MODE_TABLE, model_filename


@dataclass(frozen=True)
class KernelEvaluation:
    """One variant scored on the test split (or a subset) with one kernel set."""

    kernels: str  # a key of edge.interpreter.KERNEL_SETS
    images: int  # test images scored
    whole_split: bool  # False: a subset (reference kernels are slow); a subset never gates
    metrics: dict  # convert.evaluate.score: accuracy, F1, ... at the contract threshold
    comparison: dict  # convert.evaluate.compare_with_reference: agreement and |dp| vs Keras
    probabilities: np.ndarray = field(repr=False, compare=False, default=None)
    indices: np.ndarray = field(repr=False, compare=False, default=None)  # which test images, in order

    def to_dict(self) -> dict:
        return {"kernels": self.kernels, "images": self.images, "whole_split": self.whole_split,
                "metrics": self.metrics, "comparison": self.comparison}


@dataclass(frozen=True)
class GateResult:
    passed: bool
    max_drop_pp: float
    accuracy_drop_pp: float | None = None  # the worst kernel set evaluated on the whole split
    f1_drop_pp: float | None = None
    worst_kernels: str | None = None
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return data


@dataclass(frozen=True)
class ModelDetails:
    """What the converted flatbuffer contains (convert.inspect_model)."""

    input: dict
    output: dict
    ops: dict
    tensor_types: dict
    integer_only: bool
    input_raw_pixels: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VariantResult:
    mode: str
    conversion: dict  # the mode's settings, seconds, calibration, kept_in_float, ...
    evaluations: tuple[KernelEvaluation, ...] = ()  # the default kernels (XNNPACK) first
    details: ModelDetails | None = None
    latency: dict | None = None
    size_bytes: int | None = None  # of the published file (with its embedded card)
    sha256: str | None = None  # of the published file
    error: str | None = None  # conversion or evaluation failed
    gate: GateResult | None = None  # set by convert.gate.check_variant

    @property
    def description(self) -> str:
        return MODE_TABLE[self.mode].description

    @property
    def main(self) -> KernelEvaluation | None:
        """The evaluation with the default kernels, the ones the device runs by default."""
        return self.evaluations[0] if self.evaluations else None

    @property
    def passed(self) -> bool:
        return bool(self.gate and self.gate.passed)

    def to_dict(self) -> dict:
        main = self.main
        details = self.details.to_dict() if self.details else {}
        return {
            "mode": self.mode,
            "description": self.description,
            "file": model_filename(self.mode) if self.sha256 else None,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            **details,
            "conversion": self.conversion,
            "metrics": main.metrics if main else None,
            "comparison": main.comparison if main else None,
            "kernel_sets": [evaluation.to_dict() for evaluation in self.evaluations],
            "latency": self.latency,
            "gate": self.gate.to_dict() if self.gate else None,
            "error": self.error,
        }
