"""`crack calibrate --run runs/NAME --data SITE_DIR`: a site's threshold for a run's Keras model,
on the build machine, without retraining.

The same calibration as `crack-edge calibrate` (``edge.calibrate``: the labelled photos, the rule,
the figures before and after), scored with the run's Keras model. The run is never changed: the
result is a new run folder (default ``runs/NAME-SITE``) holding a copy of ``model.keras``, the
split lists, ``options.json`` and ``metrics.json`` of the run, a ``contract.json`` with the site's
threshold, and ``calibration.json``. `crack convert --run runs/NAME-SITE` then makes models that
carry the site's threshold. ``runs/latest`` is left where it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.atomic_files import write_json_atomic
from edge.calibrate import SiteCalibration, calibrate_threshold, file_safe, site_name
from edge.errors import UserError
from edge.labelled_photos import score_labelled_photos
from training.keras_inference import BATCH_SIZE
from training.predict import load_run_model, predict_files
from training.run_layout import SPLITS, RunLayout, open_run

CALIBRATION_FILE = "calibration.json"
COPIED_FILES = ("model.keras", "options.json", "metrics.json")


@dataclass(frozen=True)
class RunCalibrateOptions:
    run: Path
    data: tuple[str, ...]  # the site's photos below class folders
    out: Path | None = None  # the new run folder; default: beside the run, NAME-SITE
    site: str | None = None  # default: the data folder's name
    target_recall: float | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise UserError("--data needs a folder of the site's photos below class folders")
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise UserError(f"--target-recall must be in (0, 1], got {self.target_recall}")


@dataclass(frozen=True)
class CalibratedRun:
    calibration: SiteCalibration
    layout: RunLayout  # the new run

    def lines(self) -> list[str]:
        return [*self.calibration.lines(),
                f"wrote run {self.layout.root} (contract.json with the site's threshold); "
                f"convert it with `crack convert --run {self.layout.root}`"]


def calibrate_run(options: RunCalibrateOptions, say: Callable[[str], None] = print) -> CalibratedRun:
    source = open_run(options.run)
    site = site_name(options.site, options.data)
    target = RunLayout(Path(options.out).resolve() if options.out is not None
                       else source.root.parent / f"{source.name}-{file_safe(site)}")
    if target.root == source.root:
        raise UserError(f"--out {target.root} is the run itself: calibrate writes a new run folder")
    if target.root.exists() and (not target.root.is_dir() or any(target.root.iterdir())):
        raise UserError(f"{target.root} exists; choose another --out (calibrate never overwrites a run)")
    model, contract = load_run_model(source.root)

    def keras_batches(paths: list[Path]):
        for start in range(0, len(paths), BATCH_SIZE):
            yield [(path, probability) for path, probability, _ in
                   predict_files(model, contract, paths[start:start + BATCH_SIZE])]

    scores = score_labelled_photos(options.data, keras_batches, option="--data",
                                   show_progress=options.show_progress)
    if scores.unreadable or scores.unlabelled:
        say(f"warning: {scores.unreadable} unreadable and {scores.unlabelled} unlabelled photo(s) "
            "are not counted")
    calibration = calibrate_threshold(scores, contract, site, f"{source.name}/model.keras (Keras)",
                                      options.target_recall)
    _write_run(source, target, calibration, contract)
    return CalibratedRun(calibration, target)


def _write_run(source: RunLayout, target: RunLayout, calibration: SiteCalibration, contract) -> None:
    """The new run: copies (never links: a later write to one run must not change the other), the
    contract last, so a half-written folder has no contract and `crack convert` refuses it."""
    target.root.mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        if (source.root / name).is_file():
            shutil.copy2(source.root / name, target.root / name)
    target.splits_dir.mkdir(exist_ok=True)
    for split in SPLITS:
        if source.split_file(split).is_file():
            shutil.copy2(source.split_file(split), target.split_file(split))
    write_json_atomic(target.root / CALIBRATION_FILE, {"source_run": source.name,
                                                       **calibration.record(),
                                                       "threshold": calibration.threshold,
                                                       "rule": calibration.rule})
    calibration.contract(contract).save(target.contract)
