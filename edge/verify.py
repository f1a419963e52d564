"""`crack-edge verify`: run a model's golden inputs on this device's interpreter and kernels and
compare with what the build machine and the Keras model computed for them.

Pass rule (the golden file holds the margin and the bound, measured by `crack convert` across the
kernel sets of the build machine): every golden input whose build-machine probability is farther
than the margin from the threshold keeps its build-machine label, and the mean |dp| against the
build machine is within the bound. Inputs near the threshold are reported, not failed: kernels
legitimately round differently. Agreement with Keras is reported, never gated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.golden import GoldenSet
from edge.interpreter import DEFAULT_KERNELS
from edge.model_metadata import file_sha256

# float32 arithmetic on the bound itself must not fail a device that matches it exactly
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class VerifyOptions:
    model: Path
    threads: int | None = None
    kernels: str = DEFAULT_KERNELS  # a key of edge.interpreter.KERNEL_SETS

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class Agreement:
    """This device's probabilities against a reference's, on the golden inputs."""

    labels_kept: int
    total: int
    mean_abs_dp: float
    max_abs_dp: float

    @classmethod
    def of(cls, device: np.ndarray, reference: np.ndarray, threshold: float) -> "Agreement":
        difference = np.abs(device.astype(np.float64) - reference.astype(np.float64))
        kept = int(((device >= threshold) == (reference >= threshold)).sum())
        return cls(kept, len(device), float(difference.mean()), float(difference.max()))


@dataclass(frozen=True)
class VerifyResult:
    model: str
    golden_file: str
    interpreter: str
    kernels: str
    threads: int
    threshold: float
    margin: float
    mean_abs_dp_bound: float
    inputs: int
    far_from_threshold: int
    vs_build: Agreement
    vs_keras: Agreement
    flipped_far: list[int] = field(default_factory=list)  # golden indices that failed the rule
    flipped_near: list[int] = field(default_factory=list)  # reported only
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        def row(name: str, a: Agreement) -> str:
            share = a.labels_kept / a.total * 100
            return (f"  vs {name:<14} labels {a.labels_kept:>3}/{a.total} ({share:5.1f}%)  "
                    f"mean |dp| {a.mean_abs_dp:.4f}  max |dp| {a.max_abs_dp:.4f}")

        near = self.inputs - self.far_from_threshold
        lines = [
            f"verify {self.model} with {self.golden_file}: {self.inputs} golden inputs, "
            f"{near} within {self.margin:.3f} of the threshold {self.threshold:g}",
            f"  interpreter {self.interpreter}, {self.kernels} kernels, {self.threads} thread(s)",
            row("build machine", self.vs_build),
            row("Keras", self.vs_keras),
            f"  far from the threshold: {self.far_from_threshold - len(self.flipped_far)}/"
            f"{self.far_from_threshold} keep their build-machine label; near it: "
            f"{len(self.flipped_near)} of {near} flipped (reported, not failed)",
            f"  mean |dp| vs build machine {self.vs_build.mean_abs_dp:.4f}, allowed {self.mean_abs_dp_bound:.4f}",
        ]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.reasons))
        return "\n".join(lines)


def load_golden_for(classifier: CrackClassifier) -> tuple[GoldenSet, Path]:
    """The golden inputs the model's card names, checked against its sha256 (UserError if unusable)."""
    name = classifier.model_path.name
    card = classifier.card
    if card is None:
        raise UserError(f"{name} has no model card (none embedded, no sidecar): it names no golden "
                        "inputs to verify with")
    if card.golden is None:
        raise UserError(f"{name}'s card names no golden inputs (converted by an older crackkit?); "
                        "convert the run again")
    path = classifier.model_path.parent / card.golden.file
    if not path.is_file():
        raise UserError(f"golden inputs {card.golden.file} not found beside {name}: copy it with the model")
    if file_sha256(path) != card.golden.sha256:
        raise UserError(f"golden inputs {card.golden.file} do not match {name}'s card (sha256 differs): "
                        "copy both files of one conversion again")
    return GoldenSet.load(path, classifier.input_size), path


def verify_model(options: VerifyOptions) -> VerifyResult:
    classifier = CrackClassifier(options.model, threads=options.threads, kernels=options.kernels)
    golden, path = load_golden_for(classifier)
    device = classifier.predict(golden.images)
    threshold = golden.threshold
    flipped = (device >= threshold) != (golden.build >= threshold)
    far = golden.far
    vs_build = Agreement.of(device, golden.build, threshold)
    reasons = []
    flipped_far = [int(i) for i in np.flatnonzero(flipped & far)]
    if flipped_far:
        reasons.append(f"{len(flipped_far)} input(s) farther than {golden.margin:.3f} from the threshold "
                       f"changed label (golden index {', '.join(map(str, flipped_far[:10]))})")
    if vs_build.mean_abs_dp > golden.mean_abs_dp_bound + _TOLERANCE:
        reasons.append(f"mean |dp| {vs_build.mean_abs_dp:.4f} exceeds {golden.mean_abs_dp_bound:.4f}, "
                       "the most the build machine's kernel sets differ")
    return VerifyResult(
        model=classifier.model_path.name, golden_file=path.name,
        interpreter=f"{classifier.backend.package} {classifier.backend.version}",
        kernels=options.kernels, threads=classifier.threads, threshold=threshold, margin=golden.margin,
        mean_abs_dp_bound=golden.mean_abs_dp_bound, inputs=len(golden), far_from_threshold=int(far.sum()),
        vs_build=vs_build, vs_keras=Agreement.of(device, golden.keras, threshold),
        flipped_far=flipped_far, flipped_near=[int(i) for i in np.flatnonzero(flipped & ~far)],
        passed=not reasons, reasons=reasons)
