"""What `crack train` was asked to do (TrainOptions, saved as options.json) and what that means
once the weights are known (Plan: the epochs, learning rate and first unfrozen layer of each
phase)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edge.errors import UserError
from training.data import SplitFractions

STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclass(frozen=True)
class TrainOptions:
    data: Path | None = None
    runs_dir: Path = Path("runs")
    name: str | None = None
    img_size: int = 224
    epochs: int = 10                       # fine-tuning epochs (phase 2)
    head_epochs: int | None = None         # phase 1; None: 3 with pretrained weights, 0 from scratch
    batch_size: int = 16
    learning_rate: float = 1e-3            # phase 1, and phase 2 when training from scratch
    fine_tune_learning_rate: float | None = None  # None: learning_rate / 100 when pretrained
    fine_tune_at: str | None = None        # None: conv5 when pretrained, the whole base from scratch
    patience: int = 4                      # EarlyStopping on validation loss (phase 2)
    seed: int = 0
    weights: str = "auto"
    positive: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    val_split: str | None = None           # folder names when the data has train/val/test folders
    test_split: str | None = None
    group_by_source: bool = False
    target_recall: float | None = None     # threshold choice; None: 0.5 unless best F1 is clearly better
    augment: bool = True
    strategy: str = "default"
    init: Path | None = None               # start from this run's model (training.adapt)
    init_model_sha256: str | None = None   # ... whose model.keras had this sha256

    def __post_init__(self) -> None:
        for name in ("img_size", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.epochs < 0 or (self.head_epochs is not None and self.head_epochs < 0):
            raise UserError("epochs cannot be negative")
        if self.epochs + (self.head_epochs or 0) == 0:
            raise UserError("nothing to train: --epochs and --head-epochs are both 0")
        if self.learning_rate <= 0 or (self.fine_tune_learning_rate or 1) <= 0:
            raise UserError("learning rates must be positive")
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown --strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise UserError(f"--target-recall must be in (0, 1], got {self.target_recall}")
        SplitFractions(self.val_fraction, self.test_fraction)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["data"] = str(self.data) if self.data else None
        data["runs_dir"] = str(self.runs_dir)
        data["init"] = str(self.init) if self.init else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainOptions":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["data"] = Path(values["data"]) if values.get("data") else None
        values["runs_dir"] = Path(values.get("runs_dir", "runs"))
        values["init"] = Path(values["init"]) if values.get("init") else None
        return cls(**values)


@dataclass(frozen=True)
class Plan:
    """What the options mean once the weights are known."""

    head_epochs: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float
    fine_tune_at: str | None
    # From scratch: phase 2's learning rate falls along a cosine to COSINE_FLOOR of its start, with
    # no early stop (validation loss of a network trained from scratch is too noisy to stop on).
    # Pretrained: early stopping and halving on a validation-loss plateau.
    cosine_decay: bool = False
    # An --init run (training.adapt): phase 2 keeps every BatchNorm layer frozen, with the
    # statistics re-estimated on the new surface.
    freeze_batchnorm: bool = False


def plan_for(options: TrainOptions, pretrained: bool) -> Plan:
    """Pretrained: 3 head epochs, then conv5 onwards at learning rate / 100. From scratch: no head
    phase, the whole base at the full learning rate, decaying along a cosine. Started from another
    run (--init): BatchNorm frozen in phase 2."""
    head = options.head_epochs if options.head_epochs is not None else (3 if pretrained else 0)
    lr2 = options.fine_tune_learning_rate or (options.learning_rate / 100 if pretrained
                                              else options.learning_rate)
    at = options.fine_tune_at if options.fine_tune_at is not None else ("conv5" if pretrained else None)
    return Plan(head_epochs=head, fine_tune_epochs=options.epochs, fine_tune_learning_rate=lr2,
                fine_tune_at=at, cosine_decay=not pretrained,
                freeze_batchnorm=options.init is not None)
