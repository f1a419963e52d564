"""`crack-edge verify`: run a model's golden inputs on this device's interpreter and kernels and
compare with what the build machine and the Keras model computed for them.

Pass rule (the golden file holds the margin and the bound, measured by `crack convert` across the
kernel sets of the build machine): every golden input whose build-machine probability is farther
than the margin from the threshold keeps its build-machine label, and the mean |dp| against the
build machine is within the bound. Inputs near the threshold are reported, not failed: kernels
legitimately round differently. Agreement with Keras is reported, never gated.

``startup_check`` is the same check as score and stream run it before their first input, on the
classifier they will use: one log line, and with ``--require-verified`` a refusal to start (exit
1 when the check fails, 2 when there is no usable golden file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.classifier import CrackClassifier
from edge.errors import RuntimeFailure, UserError, first_line
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


class NoGoldenFile(UserError):
    """The model names no golden inputs, or they are not beside it (exit 2, like any UserError)."""


def load_golden_for(classifier: CrackClassifier) -> tuple[GoldenSet, Path]:
    """The golden inputs the model's card names, checked against its sha256: NoGoldenFile when
    there are none, UserError when they are unusable."""
    name = classifier.model_path.name
    card = classifier.card
    if card is None:
        raise NoGoldenFile(f"{name} has no model card (none embedded, no sidecar): it names no golden "
                           "inputs to verify with")
    if card.golden is None:
        raise NoGoldenFile(f"{name}'s card names no golden inputs (converted by an older crackkit?); "
                           "convert the run again")
    path = classifier.model_path.parent / card.golden.file
    if not path.is_file():
        raise NoGoldenFile(f"golden inputs {card.golden.file} not found beside {name}: copy it with the model")
    if file_sha256(path) != card.golden.sha256:
        raise UserError(f"golden inputs {card.golden.file} do not match {name}'s card (sha256 differs): "
                        "copy both files of one conversion again")
    return GoldenSet.load(path, classifier.input_size), path


def verify_model(options: VerifyOptions) -> VerifyResult:
    return check_golden(CrackClassifier(options.model, threads=options.threads, kernels=options.kernels))


def check_golden(classifier: CrackClassifier, one_at_a_time: bool = False) -> VerifyResult:
    """Run the model's golden inputs on ``classifier`` and apply the pass rule. In one batch, as
    the build machine ran them; ``one_at_a_time``: one invoke per input, so that a classifier
    that will score one frame at a time never holds a batch of them."""
    golden, path = load_golden_for(classifier)
    if one_at_a_time:
        device = np.concatenate([classifier.predict(image[None]) for image in golden.images])
    else:
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
        kernels=classifier.kernels, threads=classifier.threads, threshold=threshold, margin=golden.margin,
        mean_abs_dp_bound=golden.mean_abs_dp_bound, inputs=len(golden), far_from_threshold=int(far.sum()),
        vs_build=vs_build, vs_keras=Agreement.of(device, golden.keras, threshold),
        flipped_far=flipped_far, flipped_near=[int(i) for i in np.flatnonzero(flipped & ~far)],
        passed=not reasons, reasons=reasons)


# --- the check at the start of score and stream ---------------------------------------------------

PASSED, FAILED, NOT_VERIFIED = "pass", "fail", "not verified"


@dataclass(frozen=True)
class StartupCheck:
    """What the golden check at start-up found: ``state`` (PASSED, FAILED or NOT_VERIFIED), what it
    says (``status``: the stream's status and the preview's /status.json), and the full result when
    the check ran. ``line`` is what score and stream log."""

    state: str
    model: str
    status: str
    result: VerifyResult | None = None

    @property
    def passed(self) -> bool:
        return self.state == PASSED

    @property
    def line(self) -> str:
        return f"verify {self.model}: {self.status}"


def startup_check(classifier: CrackClassifier, require: bool = False) -> StartupCheck:
    """The golden check on the classifier score or stream will use, one input per invoke. With
    ``require``: RuntimeFailure (exit 1) when it fails, UserError (exit 2) when it cannot run for
    want of a usable golden file; without it the caller logs ``line`` and goes on."""
    name = classifier.model_path.name
    try:
        result = check_golden(classifier, one_at_a_time=True)
    except NoGoldenFile as exc:
        check = StartupCheck(NOT_VERIFIED, name, f"no golden file: not verified ({exc})")
    except UserError as exc:
        check = StartupCheck(NOT_VERIFIED, name, f"golden file unusable: not verified ({exc})")
    except (RuntimeError, ValueError) as exc:  # the interpreter itself failed on them
        check = StartupCheck(FAILED, name, f"FAIL: the interpreter failed on the golden inputs: {first_line(exc)}")
    else:
        build = result.vs_build
        figures = (f"{build.labels_kept}/{build.total} golden inputs keep the build machine's label, "
                   f"mean |dp| {build.mean_abs_dp:.4f} (allowed {result.mean_abs_dp_bound:.4f}), "
                   f"max |dp| {build.max_abs_dp:.4f}")
        if result.passed:
            check = StartupCheck(PASSED, name, f"pass: {figures}", result)
        else:
            check = StartupCheck(FAILED, name, f"FAIL: {'; '.join(result.reasons)} ({figures}; "
                                               "`crack-edge verify` shows the details)", result)
    if require and check.state == FAILED:
        raise RuntimeFailure(f"{check.line}; --require-verified: not starting")
    if require and check.state == NOT_VERIFIED:
        raise UserError(f"{check.line}; --require-verified: not starting")
    return check
