"""`crack-edge calibrate`: a site's own threshold from a few labelled photos, without retraining.

A model ranks a new surface well long before its threshold fits it: clean photos of a surface it
never saw often score far above the threshold chosen on its validation split. Calibration scores
the site's labelled photos (class folders, as `score --labels-from-folders` reads them) with the
deployed variant on this machine's interpreter, since int8 and Keras probabilities differ, and
chooses the threshold with the rule training uses (``edge.metrics.choose_threshold``): the model's
current threshold stays unless the best-F1 one is clearly better on the site's photos (right on
clearly more of the photos the two label differently), or the highest threshold reaching
``--target-recall`` when asked. On a few photos the best-F1 threshold mostly fits their noise: in
benchmarks/adapt_surface.py's 12 cases it lost 4-16 points of test accuracy where the evidence was
weak (concrete model, asphalt photos) and the keep rule changed nothing where it was strong
(asphalt model, concrete photos: 0.71 -> 0.90-0.96 either way).

The result is a COPY of the model, never the model itself: the same graph and weights, with a card
whose contract has the new threshold, ``threshold_rule`` saying how it was chosen, and
``extra.site_calibration`` (site, photos per class, the previous threshold, figures before and
after). The golden inputs are written again beside the copy with the new threshold (images and
build-machine probabilities unchanged), so `crack-edge verify` judges "near the threshold" where
the copy will decide; the sidecar is written when the original has one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.atomic_files import write_bytes_atomic
from edge.classifier import CrackClassifier
from edge.contract import GoldenReference, ModelCard, ModelContract
from edge.errors import UserError
from edge.golden import GoldenSet, golden_path
from edge.labelled_photos import LabelledScores, score_labelled_photos, tflite_batches
from edge.metrics import binary_report, choose_threshold
from edge.model_metadata import embed_card, file_sha256, read_model_card, sidecar_path
from edge.output_paths import check_output_path

FEW_PER_CLASS = 10  # below this many photos of a class, the threshold is a rough estimate


def site_name(site: str | None, data: tuple[str, ...] | list[str]) -> str:
    """The site's name: as given, else the (first) data folder's name."""
    name = site if site is not None else Path(data[0]).resolve().name
    if not name.strip():
        raise UserError("--site must not be empty")
    return name.strip()


def file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "site"


@dataclass(frozen=True)
class SiteCalibration:
    """A threshold chosen on one site's labelled photos, with the figures before and after."""

    site: str
    scored_with: str  # the model file (and for TFLite the interpreter) that scored the photos
    crack: int
    no_crack: int
    previous_threshold: float
    previous_rule: str | None
    threshold: float
    rule: str
    target_recall: float | None
    before: dict  # edge.metrics.binary_report at the previous threshold
    after: dict  # ... at the new one (on the same photos)
    created: str

    @property
    def photos(self) -> int:
        return self.crack + self.no_crack

    def record(self) -> dict:
        """What the calibrated contract keeps (``extra.site_calibration``)."""
        def figures(report: dict) -> dict:
            return {key: round(report[key], 4) for key in ("accuracy", "precision", "recall", "f1")}

        return {"site": self.site, "photos": self.photos, "crack": self.crack, "no_crack": self.no_crack,
                "scored_with": self.scored_with, "previous_threshold": self.previous_threshold,
                "previous_rule": self.previous_rule, "target_recall": self.target_recall,
                "before": figures(self.before), "after": figures(self.after), "created": self.created}

    def contract(self, contract: ModelContract) -> ModelContract:
        """``contract`` with this threshold, its rule and the calibration record."""
        extra = {**contract.extra, "threshold_rule": self.rule, "site_calibration": self.record()}
        return dataclasses.replace(contract, threshold=self.threshold, extra=extra)

    def lines(self) -> list[str]:
        def row(name: str, threshold: float, rule: str | None, m: dict) -> str:
            (tn, fp), (fn, tp) = m["confusion_matrix"]
            return (f"{name} threshold {threshold:.4f}{f' ({rule})' if rule else ''}: accuracy "
                    f"{m['accuracy']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
                    f"F1 {m['f1']:.4f}  (cracks found {tp}, missed {fn}; false alarms {fp} of "
                    f"{tn + fp} clean)")

        lines = [f"site {self.site}: {self.photos} labelled photo(s), {self.crack} crack and "
                 f"{self.no_crack} no_crack, scored with {self.scored_with}",
                 row("before:", self.previous_threshold, self.previous_rule, self.before),
                 row("after: ", self.threshold, self.rule, self.after),
                 "(both on the photos the threshold was chosen on: expect somewhat less on new photos)"]
        if self.threshold == self.previous_threshold and self.target_recall is None:
            lines.append("the threshold is unchanged: these photos do not show a better one clearly. Label "
                         "more of the site (above all photos the model gets wrong), or adapt the model "
                         "with `crack train --init`")
        if min(self.crack, self.no_crack) < FEW_PER_CLASS:
            lines.append(f"warning: fewer than {FEW_PER_CLASS} photos of a class: the threshold is a "
                         "rough estimate; label more photos of the site for a firmer one")
        return lines


def calibrate_threshold(scores: LabelledScores, contract: ModelContract, site: str, scored_with: str,
                        target_recall: float | None = None) -> SiteCalibration:
    """Choose the site's threshold from its labelled scores. UserError without both classes."""
    if target_recall is not None and not 0 < target_recall <= 1:
        raise UserError(f"--target-recall must be in (0, 1], got {target_recall}")
    counts = scores.counts()
    if not counts["crack"] or not counts["no_crack"]:
        missing = "crack" if not counts["crack"] else "no_crack"
        raise UserError(f"site {site}: no {missing} photo among the {len(scores.labels)} labelled; "
                        "calibration needs both classes")
    threshold, rule = choose_threshold(scores.labels, scores.probabilities, target_recall,
                                       on=f"{len(scores.labels)} labelled photos of site {site}",
                                       keep=contract.threshold)
    return SiteCalibration(
        site=site, scored_with=scored_with, crack=counts["crack"], no_crack=counts["no_crack"],
        previous_threshold=contract.threshold, previous_rule=contract.threshold_rule,
        threshold=float(threshold), rule=rule, target_recall=target_recall,
        before=binary_report(scores.labels, scores.probabilities, contract.threshold),
        after=binary_report(scores.labels, scores.probabilities, threshold),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


# --- crack-edge calibrate ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrateOptions:
    model: Path
    data: tuple[str, ...]  # the site's photos below class folders
    out: Path | None = None  # default: <model stem>_<site>.tflite beside the model
    site: str | None = None  # default: the data folder's name
    target_recall: float | None = None
    overwrite: bool = False  # replace an existing --out (never the model itself)
    threads: int | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if not self.data:
            raise UserError("--data needs a folder of the site's photos below class folders")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise UserError(f"--target-recall must be in (0, 1], got {self.target_recall}")


@dataclass(frozen=True)
class CalibratedModel:
    calibration: SiteCalibration
    model: Path  # the copy
    written: tuple[Path, ...]  # every file written: the copy, its golden inputs, its sidecar
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        names = ", ".join(path.name for path in self.written)
        return [*self.calibration.lines(), *self.notes, f"wrote {names}"]


def calibrated_path(model: Path, site: str, out: Path | None) -> Path:
    """Where the copy goes: ``out`` or <model stem>_<site>.tflite; UserError for the model itself
    or anything that is not a .tflite path."""
    path = Path(out) if out is not None else model.with_name(f"{model.stem}_{file_safe(site)}.tflite")
    if path.suffix != ".tflite":
        raise UserError(f"--out {path}: the calibrated model must be a .tflite file (its sidecar and "
                        "golden inputs are named after it)")
    if path.resolve() == model.resolve():
        raise UserError(f"--out {path} is the model itself: calibrate writes a copy and never changes "
                        "the original")
    return path


def run_calibrate(options: CalibrateOptions, say: Callable[[str], None] = print) -> CalibratedModel:
    if not options.model.is_file():
        raise UserError(f"model not found: {options.model}")
    site = site_name(options.site, options.data)
    out = calibrated_path(options.model, site, options.out)
    card, has_sidecar = _card_to_copy(options.model)
    targets = (out, golden_path(out)) + ((sidecar_path(out),) if has_sidecar else ())
    for target in targets:  # before any work
        check_output_path(target, "--out")
        if target.exists() and not options.overwrite:
            raise UserError(f"{target} exists; pass --overwrite to replace it, or choose another --out")
    classifier = CrackClassifier(options.model, threads=options.threads)
    scores = score_labelled_photos(options.data, tflite_batches(classifier), option="--data",
                                   show_progress=options.show_progress)
    for line in _set_aside(scores):
        say(line)
    scored_with = (f"{options.model.name} ({classifier.backend.describe()}, {classifier.kernels} kernels, "
                   f"{classifier.threads} thread(s))")
    calibration = calibrate_threshold(scores, card.contract, site, scored_with, options.target_recall)
    return write_calibrated_copy(options.model, out, card, calibration, has_sidecar)


def _card_to_copy(model: Path) -> tuple[ModelCard, bool]:
    found = read_model_card(model)
    if found.card is None:
        raise UserError(f"{model.name} has no model card (none embedded, no sidecar), so there is no "
                        "contract to calibrate; convert the run with `crack convert`, or pass --threshold "
                        "to score and stream")
    return found.card, found.sidecar


def _set_aside(scores: LabelledScores) -> list[str]:
    lines = []
    if scores.unreadable:
        lines.append(f"warning: {scores.unreadable} file(s) could not be read and are not counted")
    if scores.unlabelled:
        lines.append(f"warning: {scores.unlabelled} photo(s) had no crack/no_crack folder and are not counted")
    return lines + [f"skipped: {line}" for line in scores.skipped]


def write_calibrated_copy(model: Path, out: Path, card: ModelCard, calibration: SiteCalibration,
                          with_sidecar: bool) -> CalibratedModel:
    """The copy with the calibrated card, its golden inputs (threshold updated) first, the model,
    then the sidecar: each written atomically, the original untouched."""
    written: list[Path] = []
    notes: list[str] = []
    golden = None
    if card.golden is not None:
        source = model.parent / card.golden.file
        if source.is_file() and file_sha256(source) == card.golden.sha256:
            golden_bytes = dataclasses.replace(GoldenSet.load(source), threshold=calibration.threshold).to_bytes()
            write_bytes_atomic(golden_path(out), golden_bytes)
            written.append(golden_path(out))
            golden = GoldenReference(file=golden_path(out).name, sha256=file_sha256(golden_path(out)))
        else:
            notes.append(f"warning: the golden inputs {card.golden.file} are not beside {model.name} (or do "
                         f"not match its card): {out.name} names none, so `crack-edge verify` cannot run on it")
    new_card = dataclasses.replace(card, contract=calibration.contract(card.contract), golden=golden, sha256=None)
    content = embed_card(model.read_bytes(), new_card)
    write_bytes_atomic(out, content)
    written.insert(0, out)
    if with_sidecar:
        dataclasses.replace(new_card, sha256=file_sha256(out)).save(sidecar_path(out))
        written.append(sidecar_path(out))
    return CalibratedModel(calibration, out, tuple(written), tuple(notes))
