"""`crack train`: fine-tune ResNet50V2 on a labelled image folder, in clear steps.

    prepare_run   find and split the data (or reread the splits on --resume), write options.json
    fit_phases    phase 1 "head": the base frozen, only the Dense head learns
                  phase 2 "fine_tune": the base unfrozen from --fine-tune-at, lower learning rate
    finish        best-on-validation weights -> model.keras, then training.evaluate writes the
                  threshold, metrics.json, test predictions and plots

Training logistics are Keras callbacks: BackupAndRestore (resume after a crash or Ctrl-C),
ModelCheckpoint (best on validation loss), EarlyStopping, ReduceLROnPlateau, CSVLogger,
TensorBoard. Ctrl-C or SIGTERM stops at the end of the current batch without touching the last
epoch's checkpoint; `crack train --resume runs/NAME` goes on from there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edge.atomic_files import write_json_atomic
from edge.errors import UserError
from training.data import ScanResult, SplitFractions, scan
from training.run_layout import SPLITS, RunLayout, open_run, read_split, write_split

PHASES = ("head", "fine_tune")
STRATEGIES = ("default", "mirrored", "multi-worker")
BEST_WEIGHTS = "best.weights.h5"
LOGGER = logging.getLogger("crack.train")


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
    target_recall: float | None = None     # threshold choice; None: best F1 on validation
    augment: bool = True
    strategy: str = "default"

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
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainOptions":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["data"] = Path(values["data"]) if values.get("data") else None
        values["runs_dir"] = Path(values.get("runs_dir", "runs"))
        return cls(**values)


@dataclass
class Plan:
    """What the options mean once the weights are known."""

    head_epochs: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float
    fine_tune_at: str | None


@dataclass
class TrainResult:
    layout: RunLayout
    metrics: dict
    warnings: list[str] = field(default_factory=list)


class TrainingInterrupted(Exception):
    def __init__(self, layout: RunLayout, signal_name: str):
        super().__init__(f"{signal_name}: training stopped; the last finished epoch is kept in "
                         f"{layout.checkpoints}. Continue with: crack train --resume {layout.root}")
        self.layout = layout


# --------------------------------------------------------------------------- run preparation


def new_run_name(data: Path) -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{data.resolve().name or 'data'}"


def prepare_run(options: TrainOptions, progress=None) -> tuple[RunLayout, ScanResult]:
    """Create runs/NAME with its split files and options.json."""
    if options.data is None:
        raise UserError("--data is required (a folder of class folders)")
    name = options.name or new_run_name(options.data)
    layout = RunLayout((options.runs_dir / name).resolve())
    if layout.root.exists() and any(layout.root.iterdir()):
        raise UserError(f"run {layout.root} already exists; pick another --name, or continue it "
                        f"with --resume {layout.root}")
    scanned = scan(options.data, positive=options.positive,
                   fractions=SplitFractions(options.val_fraction, options.test_fraction),
                   seed=options.seed, group_by_source=options.group_by_source,
                   val_name=options.val_split, test_name=options.test_split, progress=progress)
    layout.root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(layout.split_file(split), scanned.splits[split])
    write_json_atomic(layout.options, options.to_dict())
    write_json_atomic(layout.state, {"done": [], "best_val_loss": None,
                                     "class_folders": scanned.class_folders,
                                     "presplit": scanned.presplit,
                                     "skipped": [list(s) for s in scanned.skipped]})
    return layout, scanned


def reopen_run(path: Path) -> tuple[RunLayout, TrainOptions, dict[str, list[tuple[str, int]]]]:
    layout = open_run(path)
    if not layout.options.is_file() or not layout.state.is_file():
        raise UserError(f"{layout.root} is not a run that can be resumed (no options.json or "
                        "state.json)")
    options = TrainOptions.from_dict(json.loads(layout.options.read_text()))
    splits = {split: read_split(layout.split_file(split)) for split in SPLITS}
    return layout, options, splits


def read_state(layout: RunLayout) -> dict:
    return json.loads(layout.state.read_text())


def update_state(layout: RunLayout, **changes) -> dict:
    state = read_state(layout)
    state.update(changes)
    write_json_atomic(layout.state, state)
    return state


def setup_logging(layout: RunLayout) -> logging.Handler:
    handler = logging.FileHandler(layout.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    return handler


def say(message: str, level: int = logging.INFO) -> None:
    """To the console and to train.log."""
    LOGGER.log(level, message)
    print(("warning: " if level >= logging.WARNING else "") + message, flush=True)


# --------------------------------------------------------------------------- training


def plan_for(options: TrainOptions, pretrained: bool) -> Plan:
    head = options.head_epochs if options.head_epochs is not None else (3 if pretrained else 0)
    lr2 = options.fine_tune_learning_rate or (options.learning_rate / 100 if pretrained
                                              else options.learning_rate)
    at = options.fine_tune_at if options.fine_tune_at is not None else ("conv5" if pretrained else None)
    return Plan(head_epochs=head, fine_tune_epochs=options.epochs, fine_tune_learning_rate=lr2,
                fine_tune_at=at)


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":  # reads the cluster from the TF_CONFIG environment variable
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a clean stop at the end of the current batch; a second
    Ctrl-C aborts at once. Used as a context manager around training."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received}: stopping after this batch (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def callback(self, layout: RunLayout):
        import keras

        stopper = self

        class RaiseOnSignal(keras.callbacks.Callback):
            # Raising (rather than model.stop_training) leaves the epoch unfinished, so
            # BackupAndRestore keeps the checkpoint of the last complete epoch.
            def on_train_batch_end(self, batch, logs=None):
                if stopper.received:
                    raise TrainingInterrupted(layout, stopper.received)

            on_test_batch_end = on_train_batch_end

        return RaiseOnSignal()


def _epoch_logger():
    import keras

    class LogEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items())
                             if isinstance(v, (int, float)))
            LOGGER.info("epoch %d done in %.1f s: %s", epoch + 1,
                        time.perf_counter() - self._started, shown)

    return LogEpoch()


def _record_best(layout: RunLayout, checkpoint):
    import keras

    class RecordBest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best = checkpoint.best
            if best is not None and best != float("inf"):
                update_state(layout, best_val_loss=float(best))

    return RecordBest()


def compile_model(model, learning_rate: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                           keras.metrics.AUC(name="auc")])


def fit_phase(phase: str, model, layout: RunLayout, datasets, *, epochs_before: int,
              epochs: int, class_weight: dict, stopper: StopOnSignal, patience: int,
              verbose: int) -> None:
    import keras

    state = read_state(layout)
    checkpoint = keras.callbacks.ModelCheckpoint(
        layout.checkpoints / BEST_WEIGHTS, monitor="val_loss", mode="min", save_best_only=True,
        save_weights_only=True, initial_value_threshold=state.get("best_val_loss"))
    callbacks = [
        stopper.callback(layout),
        keras.callbacks.BackupAndRestore(str(layout.checkpoints / f"backup_{phase}"),
                                         delete_checkpoint=False, double_checkpoint=True),
        checkpoint,
        _record_best(layout, checkpoint),
        keras.callbacks.CSVLogger(str(layout.history), append=True),
        keras.callbacks.TensorBoard(str(layout.tensorboard), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
        _epoch_logger(),
    ]
    if phase == "fine_tune":
        callbacks += [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=False, verbose=1),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                              patience=max(2, patience - 1), min_lr=1e-7,
                                              verbose=1),
        ]
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # tf.data shuffles
    model.fit(datasets["train"], validation_data=datasets["val"],
              epochs=epochs_before + epochs, initial_epoch=epochs_before,
              class_weight=class_weight, callbacks=callbacks, verbose=verbose)


def save_for_inference(model, path: Path) -> None:
    """model.keras with the architecture and weights but not Adam's two moments per weight (which
    would triple the file): it is for evaluation, `crack convert` and `crack predict`; --resume
    continues from the backup, not from this file. Rebuilt from its config rather than with
    keras.models.clone_model, which (Keras 3.15) copies the compiled optimizer along."""
    inference = model.__class__.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    inference.save(path)


def fit_phases(layout: RunLayout, options: TrainOptions, splits, stopper: StopOnSignal):
    """Build the model, run both phases (skipping those already done), return (model, weights)."""
    import keras

    from training.model import build_classifier, parameter_counts, unfreeze_from
    from training.pipeline import Augmentation, class_weights, make_dataset

    keras.utils.set_random_seed(options.seed)
    strategy = make_strategy(options.strategy)
    with strategy.scope():
        model, base, weights = build_classifier(options.img_size, options.weights)
    if weights.warning:
        say(weights.warning, logging.WARNING)
    say(f"weights: {weights.used}")
    model.summary(print_fn=lambda line, **_: say(line) if line.strip() else None)
    counts = parameter_counts(model)
    say(f"parameters: {counts['total']:,} ({counts['trainable']:,} trainable, "
        f"{counts['non_trainable']:,} non-trainable)")

    plan = plan_for(options, weights.pretrained)
    batch = options.batch_size * strategy.num_replicas_in_sync
    augmentation = Augmentation() if options.augment else None
    datasets = {
        "train": make_dataset(splits["train"], options.img_size, batch, training=True,
                              seed=options.seed, augmentation=augmentation),
        "val": make_dataset(splits["val"], options.img_size, batch, training=False),
    }
    weights_per_class = class_weights([label for _, label in splits["train"]])
    say(f"class weights: no_crack {weights_per_class[0]:.3f}, crack {weights_per_class[1]:.3f}")
    verbose = 1 if sys.stdout.isatty() else 2
    state = read_state(layout)
    best = layout.checkpoints / BEST_WEIGHTS

    if plan.head_epochs > 0:
        if "head" in state["done"]:
            say("phase 1 (head) already done; skipping")
        else:
            say(f"phase 1: head only, base frozen, {plan.head_epochs} epoch(s) at learning rate "
                f"{options.learning_rate:g}")
            with strategy.scope():
                base.trainable = False
                compile_model(model, options.learning_rate)
            fit_phase("head", model, layout, datasets, epochs_before=0, epochs=plan.head_epochs,
                      class_weight=weights_per_class, stopper=stopper, patience=options.patience,
                      verbose=verbose)
            model.save_weights(layout.checkpoints / "head_done.weights.h5")
            update_state(layout, done=read_state(layout)["done"] + ["head"])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(layout.checkpoints / "head_done.weights.h5")

    if plan.fine_tune_epochs > 0:
        if "fine_tune" in read_state(layout)["done"]:
            say("phase 2 (fine-tuning) already done; skipping")
        else:
            with strategy.scope():
                index = unfreeze_from(base, plan.fine_tune_at)
                compile_model(model, plan.fine_tune_learning_rate)
            trainable = parameter_counts(model)["trainable"]
            say(f"phase 2: fine-tuning base layers {index}..{len(base.layers) - 1} "
                f"({trainable:,} trainable parameters), {plan.fine_tune_epochs} epoch(s) at "
                f"learning rate {plan.fine_tune_learning_rate:g}")
            fit_phase("fine_tune", model, layout, datasets, epochs_before=plan.head_epochs,
                      epochs=plan.fine_tune_epochs, class_weight=weights_per_class,
                      stopper=stopper, patience=options.patience, verbose=verbose)
            update_state(layout, done=read_state(layout)["done"] + ["fine_tune"])

    if best.is_file():
        with warnings.catch_warnings():  # the saved optimizer state is not needed any more
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(best)
        say(f"kept the epoch with the best validation loss "
            f"({read_state(layout).get('best_val_loss'):.4f})")
    return model, weights


def train(options: TrainOptions, resume: Path | None = None) -> TrainResult:
    """The whole `crack train` job. Raises UserError for bad input, TrainingInterrupted on a signal."""
    from training.evaluate import evaluate_run

    if resume is not None:
        layout, options, splits = reopen_run(resume)
        handler = setup_logging(layout)
        say(f"resuming {layout.root} (done: {', '.join(read_state(layout)['done']) or 'nothing'})")
    else:
        layout, scanned = prepare_run(options)
        splits = scanned.splits
        handler = setup_logging(layout)
        say(f"run {layout.root}")
        say(f"data {options.data}: " + ", ".join(
            f"{split} {c['total']} ({c['crack']} crack, {c['no_crack']} no_crack)"
            for split, c in scanned.counts().items())
            + (" [from the train/val/test folders]" if scanned.presplit else
               f" [split {1 - options.val_fraction - options.test_fraction:.0%}/"
               f"{options.val_fraction:.0%}/{options.test_fraction:.0%}, seed {options.seed}"
               + (", grouped by source photo" if options.group_by_source else "") + "]"))
        for path, reason in scanned.skipped:
            LOGGER.warning("skipped %s: %s", path, reason)
        if scanned.skipped:
            say(f"skipped {len(scanned.skipped)} unreadable file(s); listed in {layout.log}",
                logging.WARNING)
    try:
        started = time.perf_counter()
        with StopOnSignal() as stopper:
            model, weights = fit_phases(layout, options, splits, stopper)
            save_for_inference(model, layout.model)
            say(f"saved {layout.model} ({time.perf_counter() - started:.0f} s of training)")
            metrics = evaluate_run(layout, model, options, splits, weights)
        update_state(layout, done=sorted(set(read_state(layout)["done"]) | {"evaluate"}))
        point_latest(layout)
        return TrainResult(layout, metrics, metrics.get("warnings", []))
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


def point_latest(layout: RunLayout) -> None:
    """runs/latest -> this run (a relative symlink, replaced atomically)."""
    latest = layout.root.parent / "latest"
    temporary = layout.root.parent / f".latest-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(layout.root.name)
    os.replace(temporary, latest)


