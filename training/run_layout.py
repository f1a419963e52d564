"""Where a training run keeps its files. Training writes them; predict, convert and the
benchmarks read them. One place so that no module guesses a path.

runs/NAME/
  model.keras            the best-on-validation model (takes raw RGB 0..255)
  contract.json          edge.contract.ModelContract, with the threshold chosen on validation
  options.json           the TrainOptions the run was started with (--resume reads them)
  state.json             which training phases are done, and the best validation loss so far
  metrics.json           test metrics (see training.evaluate)
  test_predictions.csv   path,label,probability of every test image (Keras model)
  history.csv            per-epoch loss and metrics of both phases
  train.log              the run's log, including skipped files
  splits/{train,val,test}.csv   columns path,label (label 1 = crack); absolute paths
  checkpoints/           for --resume: backup_{head,fine_tune}/ (BackupAndRestore, the last
                         finished epoch), best.weights.h5 (best validation loss so far),
                         head_done.weights.h5 (the weights after phase 1)
  tensorboard/           TensorBoard logs
  plots/                 PNG figures
  tflite/                written by `crack convert`
runs/latest -> NAME
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def contract(self) -> Path:
        return self.root / "contract.json"

    @property
    def options(self) -> Path:
        return self.root / "options.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits"

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        return self.splits_dir / f"{split}.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def backup(self, phase: str) -> Path:
        """BackupAndRestore's folder for one training phase."""
        return self.checkpoints / f"backup_{phase}"

    @property
    def best_weights(self) -> Path:
        return self.checkpoints / "best.weights.h5"

    @property
    def head_weights(self) -> Path:
        return self.checkpoints / "head_done.weights.h5"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def tflite(self) -> Path:
        return self.root / "tflite"


def open_run(path: str | Path) -> RunLayout:
    """An existing run directory (``runs/latest`` is resolved). Errors if it is not a run."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"run not found: {root}")
    root = root.resolve()
    if not root.is_dir():
        raise UserError(f"not a run directory: {root}")
    return RunLayout(root)


def write_split(path: Path, items: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(items)


def read_split(path: Path) -> list[tuple[str, int]]:
    """Read a split file: a list of (path, label). Errors clearly if missing or malformed."""
    if not path.is_file():
        raise UserError(f"split file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise UserError(f"split file {path} must have columns path,label")
        return [(row["path"], int(row["label"])) for row in reader]
