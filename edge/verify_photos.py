"""`crack-edge verify --images DIR --labels-from-folders`: the model on the user's own labelled
photos, on this device's interpreter and kernels.

The photos are found, decoded and scored as `crack-edge score` does (``edge.score.scored_rows``)
and their ground truth is the nearest class folder, as `score --labels-from-folders` reads it
(``edge.score.truth_from_folders``). It reports accuracy, precision, recall and F1 at the model's
threshold and, when the model's golden file is beside it, the golden check (``edge.verify``). It
reports; it does not gate: exit 0 unless the model or the photos are unusable (exit 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.file_inputs import find_inputs
from edge.image_header import DEFAULT_MAX_PIXELS
from edge.interpreter import DEFAULT_KERNELS
from edge.metrics import binary_report
from edge.progress import progress_bar
from edge.score import scored_rows, truth_from_folders
from edge.tiling import TileGrid
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
    found = find_inputs(options.images)
    if not found.files:
        raise UserError("no image files found in " + ", ".join(options.images)
                        + "".join(f"; {line}" for line in found.skipped.lines()))
    roots = {str(file.path): file.root for file in found.files}
    labels: list[int] = []
    probabilities: list[float] = []
    unreadable = unlabelled = 0
    with progress_bar("scoring", len(found.files), options.show_progress) as advance:
        for rows in scored_rows(classifier, [file.path for file in found.files], TileGrid(),
                                max_pixels=DEFAULT_MAX_PIXELS):
            advance(len(rows))
            for row in rows:
                if row.error:
                    unreadable += 1
                    continue
                truth = truth_from_folders(Path(row.path), roots[row.path])
                if truth is None:
                    unlabelled += 1
                else:
                    labels.append(truth)
                    probabilities.append(row.probability)
    if not labels:
        raise UserError(f"--labels-from-folders found no crack/no_crack folder among the "
                        f"{len(found.files) - unreadable} readable photo(s) in " + ", ".join(options.images)
                        + " (class folders such as crack/no_crack, Positive/Negative, cracked/uncracked, 1/0)")
    result = PhotoCheckResult(
        model=classifier.model_path.name, interpreter=classifier.backend.describe(),
        kernels=classifier.kernels, threads=classifier.threads, files=len(found.files),
        unreadable=unreadable, unlabelled=unlabelled,
        metrics=binary_report(labels, probabilities, classifier.contract.threshold),
        skipped=found.skipped.lines())
    try:
        result.golden = check_golden(classifier)
    except UserError as exc:  # no golden file, or an unusable one: reported, the photos still count
        result.golden_note = str(exc)
    return result
