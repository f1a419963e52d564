"""The Keras callbacks of one training phase: the logistics around ``model.fit``.

    stop on signal     Ctrl-C/SIGTERM -> stop after this batch (training.signals)
    BackupAndRestore   the last finished epoch, for --resume after a crash or a signal
    ModelCheckpoint    the best weights on validation loss, over both phases
    record best        that loss in state.json, so a resumed run keeps comparing against it
    CSVLogger          history.csv
    TensorBoard        tensorboard/
    log epoch          one line per epoch in train.log
    fine-tuning only:  EarlyStopping and ReduceLROnPlateau on validation loss, or (from scratch)
                       a cosine decay of the learning rate over the phase's epochs
"""

from __future__ import annotations

import math
import time

from training.run_layout import RunLayout
from training.run_log import LOGGER
from training.run_state import read_state, update_state
from training.signals import StopOnSignal


COSINE_FLOOR = 0.02  # the last epoch of a cosine decay runs at 2% of the first one's rate


def cosine_learning_rate(epoch: int, first: int, epochs: int, start: float) -> float:
    """The rate of ``epoch`` (counted over the whole run) in a phase of ``epochs`` epochs that
    begins at ``first`` with rate ``start``."""
    progress = min(max(epoch - first, 0) / max(epochs - 1, 1), 1.0)
    return start * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def phase_callbacks(phase: str, layout: RunLayout, stopper: StopOnSignal, patience: int,
                    cosine: tuple[int, int, float] | None = None) -> list:
    """``cosine``: (first epoch, epochs, starting rate) of a fine-tuning phase whose learning
    rate decays along a cosine instead of early stopping and plateau halving."""
    import keras

    checkpoint = keras.callbacks.ModelCheckpoint(
        layout.best_weights, monitor="val_loss", mode="min", save_best_only=True,
        save_weights_only=True, initial_value_threshold=read_state(layout).get("best_val_loss"))
    callbacks = [
        stopper.callback(layout),
        keras.callbacks.BackupAndRestore(str(layout.backup(phase)), delete_checkpoint=False,
                                         double_checkpoint=True),
        checkpoint,
        _record_best(layout, checkpoint),
        keras.callbacks.CSVLogger(str(layout.history), append=True),
        keras.callbacks.TensorBoard(str(layout.tensorboard), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
        _epoch_logger(),
    ]
    if phase == "fine_tune" and cosine is not None:
        first, epochs, start = cosine
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, _rate: cosine_learning_rate(epoch, first, epochs, start)))
    elif phase == "fine_tune":
        callbacks += [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=False, verbose=1),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                              patience=max(2, patience - 1), min_lr=1e-7,
                                              verbose=1),
        ]
    return callbacks


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
