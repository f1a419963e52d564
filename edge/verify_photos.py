"""`crack-edge verify --images DIR --labels-from-folders`: the model on the user's own labelled
photos, on this device's interpreter and kernels.

The photos are found, decoded, scored and labelled by ``edge.labelled_photos``, as `crack-edge
score --labels-from-folders` does (the nearest class folder is the ground truth). It reports
accuracy, precision, recall and F1 at the model's threshold and, when the model's golden file is
beside it, the golden check (``edge.verify``). It reports; it does not gate: exit 0 unless the
model or the photos are unusable (exit 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.interpreter import DEFAULT_KERNELS
from edge.labelled_photos import score_labelled_photos, tflite_batches
from edge.metrics import binary_report
from edge.verify import VerifyResult, check_golden


@dataclass(frozen=True)
class PhotoCheckOptions:
    model: Path
    images: tuple[str, ...]  # folders (or files, globs, @lists) below class folders
    threads: int | None = None
    kernels: str = DEFAULT_KERNELS
    show_progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if not self.images:
            raise UserError("--images needs at least one folder of class folders")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")


@dataclass
class PhotoCheckResult:
    model: str
    interpreter: str
    kernels: str
    threads: int
    files: int  # image files found
    unreadable: int  # files that could not be decoded or scored (error rows of score)
    unlabelled: int  # scored, but under no crack/no_crack folder
    metrics: dict  # edge.metrics.binary_report at the model's threshold
    golden: VerifyResult | None = None
    golden_note: str = ""  # why the golden check did not run
    skipped: list[str] = field(default_factory=list)  # what find_inputs skipped, as lines

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        m = self.metrics
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        lines = [
            f"verify {self.model} on {m['count']} labelled photo(s) of {self.files} found "
            f"({self.interpreter}, {self.kernels} kernels, {self.threads} thread(s))",
            f"  threshold {m['threshold']:g}: accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
            f"recall {m['recall']:.4f}  F1 {m['f1']:.4f}",
            f"  crack photos: {tp} found, {fn} missed; no-crack photos: {tn} clear, {fp} false alarm(s)",
        ]
        if self.unreadable:
            lines.append(f"  {self.unreadable} file(s) could not be read and are not in these figures")
        if self.unlabelled:
            lines.append(f"  {self.unlabelled} photo(s) had no crack/no_crack folder and are not in these figures")
        lines.extend(f"  skipped: {line}" for line in self.skipped)
        if self.golden is not None:
            lines.append("golden inputs:")
            lines.extend("  " + line for line in self.golden.text().splitlines())
        else:
            lines.append(f"golden inputs: not checked ({self.golden_note})")
        return "\n".join(lines)


def check_photos(options: PhotoCheckOptions) -> PhotoCheckResult:
    classifier = CrackClassifier(options.model, threads=options.threads, kernels=options.kernels)
    scores = score_labelled_photos(options.images, tflite_batches(classifier),
                                   show_progress=options.show_progress)
    result = PhotoCheckResult(
        model=classifier.model_path.name, interpreter=classifier.backend.describe(),
        kernels=classifier.kernels, threads=classifier.threads, files=scores.files,
        unreadable=scores.unreadable, unlabelled=scores.unlabelled,
        metrics=binary_report(scores.labels, scores.probabilities, classifier.contract.threshold),
        skipped=scores.skipped)
    try:
        result.golden = check_golden(classifier)
    except UserError as exc:  # no golden file, or an unusable one: reported, the photos still count
        result.golden_note = str(exc)
    return result
