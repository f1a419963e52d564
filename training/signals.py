"""Ctrl-C and SIGTERM during training: stop at the end of the current batch and keep the last
finished epoch (BackupAndRestore's checkpoint), so that `crack train --resume` continues there."""

from __future__ import annotations

import contextlib
import signal
import sys

from training.run_layout import RunLayout


class TrainingInterrupted(Exception):
    def __init__(self, layout: RunLayout, signal_name: str, message: str | None = None):
        super().__init__(message or (
            f"{signal_name}: training stopped; the last finished epoch is kept in "
            f"{layout.checkpoints}. Continue with: crack train --resume {layout.root}"))
        self.layout = layout
        self.signal_name = signal_name


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a clean stop at the end of the current batch; a second
    Ctrl-C aborts at once. Used as a context manager around training; ``callback`` is the Keras
    callback that does the stopping.

    ``agree``, when training runs on several workers (training.multi_worker), turns this worker's
    signal (or None) into the one every worker acts on after the same batch, so that all stop
    together instead of leaving the others waiting for a worker that has gone."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.agree = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received}: stopping after this batch (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        self.install()
        return self

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again: TensorFlow's multi-worker coordination service sets
        its own SIGTERM handler, a preemption notice, when it starts)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)

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
                received = stopper.received
                if stopper.agree is not None:
                    received = stopper.agree(received)
                if received:
                    raise TrainingInterrupted(layout, received)

            on_test_batch_end = on_train_batch_end

        return RaiseOnSignal()
