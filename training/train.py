"""`crack train`: fine-tune ResNet50V2 on a labelled image folder, the two-phase recipe of Keras'
transfer-learning guide.

    phase 1 "head"       the base frozen, only the Dense head learns (by default with pretrained
                         weights only: --head-epochs)
    phase 2 "fine_tune"  the base unfrozen from --fine-tune-at, at a lower learning rate
    then                 the best-on-validation weights -> model.keras, and training.evaluate
                         writes the threshold, metrics.json, test predictions and plots

Around it: the options (training.options), the run folder and its state (training.run_state),
the callbacks of each phase (training.callbacks) and the clean stop on Ctrl-C/SIGTERM
(training.signals). A phase that is already done is skipped, so `crack train --resume runs/NAME`
continues an interrupted run where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from training.evaluate import evaluate_run
from training.options import Plan, TrainOptions, plan_for
from training.run_layout import RunLayout
from training.run_log import LOGGER, logging_to, say
from training.run_state import (Splits, create_run, done_steps, mark_done, point_latest,
                                read_state, reopen_run)
from training.signals import StopOnSignal

HEAD, FINE_TUNE = "head", "fine_tune"


@dataclass
class TrainResult:
    layout: RunLayout
    metrics: dict
    warnings: list[str] = field(default_factory=list)
    worker_message: str | None = None  # a multi-worker worker other than the chief: no run


def train(options: TrainOptions, resume: Path | None = None) -> TrainResult:
    """The whole `crack train` job. Raises UserError for bad input, TrainingInterrupted on a signal.
    With --strategy multi-worker only the chief writes the run; the other workers train in a
    temporary folder and evaluate nothing (training.multi_worker)."""
    from training.model import save_for_inference
    from training.multi_worker import MULTI_WORKER, WorkerRun, cluster_failures, cluster_worker

    strategy = reopen_run(resume)[1].strategy if resume is not None else options.strategy
    worker = cluster_worker() if strategy == MULTI_WORKER else None
    with WorkerRun(worker) as place:
        if resume is not None:
            layout, options, splits = reopen_run(place.resume_from(resume))
            scanned = None
        else:
            layout, scanned = create_run(
                dataclasses.replace(options, runs_dir=place.runs_dir(options.runs_dir)))
            splits = scanned.splits
        with logging_to(layout):
            if worker is not None:
                say(f"{worker.name} of {worker.count} workers"
                    + (" (chief: writes the run)" if worker.is_chief else
                       f" (writes into {layout.root}, deleted at the end; {worker.chief} "
                       "writes the run)"))
            if scanned is None:
                say(f"resuming {layout.root} (done: {', '.join(done_steps(layout)) or 'nothing'})")
            else:
                _announce_new_run(layout, options, scanned)
            started = time.perf_counter()
            with StopOnSignal() as stopper, cluster_failures(worker):
                model, weights = fit_phases(layout, options, splits, stopper)
                if not place.writes_run:
                    return TrainResult(layout, {},
                                       worker_message=place.wait_for_chief(layout, stopper))
                # evaluated through the saved copy, outside any tf.distribute strategy: under
                # MultiWorkerMirroredStrategy model.predict would wait for the other workers
                model = save_for_inference(model, layout.model)
                say(f"saved {layout.model} ({time.perf_counter() - started:.0f} s of training)")
                metrics = evaluate_run(layout, model, options, splits, weights)
            mark_done(layout, "evaluate")
            point_latest(layout)
            place.chief_done(layout)
    return TrainResult(layout, metrics, metrics.get("warnings", []))


def fit_phases(layout: RunLayout, options: TrainOptions, splits: Splits, stopper: StopOnSignal):
    """Build the model, run both phases (skipping those already done), keep the best epoch.
    Returns (model, WeightsResult)."""
    import keras

    from training.adapt import adapt_batchnorm, starting_model
    from training.model import load_weights_quietly, parameter_counts, unfreeze_from

    keras.utils.set_random_seed(options.seed)
    strategy = make_strategy(options.strategy)
    with strategy.scope():
        model, base, weights = starting_model(options)  # new, or the --init run's
    if options.strategy == "multi-worker":
        from training.multi_worker import any_worker_stopped, local_symbolic_build

        local_symbolic_build(model, strategy)
        stopper.agree = any_worker_stopped(strategy)  # a signal stops every worker together
        stopper.install()  # TensorFlow's cluster took SIGTERM over when the strategy started
        say(f"{strategy.num_replicas_in_sync} replicas: global batch "
            f"{options.batch_size * strategy.num_replicas_in_sync} ({options.batch_size} each)")
    _describe_model(model, weights)
    if options.init is not None:  # a checkpoint loaded below (on --resume) replaces these again
        count = adapt_batchnorm(model, splits["train"], options.img_size, options.batch_size)
        say(f"BatchNorm statistics of {count} layers re-estimated on the {len(splits['train'])} "
            "training images of the new surface")
    plan = plan_for(options, weights.pretrained)
    fit = _phase_fitter(model, layout, options, splits, stopper,
                        options.batch_size * strategy.num_replicas_in_sync, plan)

    if plan.head_epochs > 0:
        if HEAD in done_steps(layout):
            say("phase 1 (head) already done; skipping")
        else:
            say(f"phase 1: head only, base frozen, {plan.head_epochs} epoch(s) at learning rate "
                f"{options.learning_rate:g}")
            with strategy.scope():
                base.trainable = False
                compile_model(model, options.learning_rate)
            fit(HEAD, epochs_before=0, epochs=plan.head_epochs)
            model.save_weights(layout.head_weights)
            mark_done(layout, HEAD)
        load_weights_quietly(model, layout.head_weights)

    if plan.fine_tune_epochs > 0:
        if FINE_TUNE in done_steps(layout):
            say("phase 2 (fine-tuning) already done; skipping")
        else:
            with strategy.scope():
                index = unfreeze_from(base, plan.fine_tune_at,
                                      freeze_batchnorm=plan.freeze_batchnorm)
                compile_model(model, plan.fine_tune_learning_rate)
            trainable = parameter_counts(model)["trainable"]
            say(f"phase 2: fine-tuning base layers {index}..{len(base.layers) - 1} "
                f"({trainable:,} trainable parameters), {plan.fine_tune_epochs} epoch(s) at "
                f"learning rate {plan.fine_tune_learning_rate:g}"
                + (", decaying along a cosine" if plan.cosine_decay else "")
                + ("; BatchNorm frozen with the new surface's statistics"
                   if plan.freeze_batchnorm else ""))
            fit(FINE_TUNE, epochs_before=plan.head_epochs, epochs=plan.fine_tune_epochs)
            mark_done(layout, FINE_TUNE)

    if layout.best_weights.is_file():
        load_weights_quietly(model, layout.best_weights)
        say(f"kept the epoch with the best validation loss "
            f"({read_state(layout).get('best_val_loss'):.4f})")
    return model, weights


def compile_model(model, learning_rate: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"),
                           keras.metrics.AUC(name="auc")])


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":  # reads the cluster from the TF_CONFIG environment variable
        from training.multi_worker import strategy

        return strategy()
    return tf.distribute.get_strategy()


def _phase_fitter(model, layout: RunLayout, options: TrainOptions, splits: Splits,
                  stopper: StopOnSignal, batch: int, plan: Plan):
    """``fit(phase, epochs_before=, epochs=)``: model.fit on the train split, validated on val,
    with the phase's callbacks and class weights."""
    from training.callbacks import phase_callbacks
    from training.pipeline import Augmentation, class_weights, make_dataset

    augmentation = Augmentation() if options.augment else None
    train_data = make_dataset(splits["train"], options.img_size, batch, training=True,
                              seed=options.seed, augmentation=augmentation)
    val_data = make_dataset(splits["val"], options.img_size, batch, training=False)
    class_weight = class_weights([label for _, label in splits["train"]])
    say(f"class weights: no_crack {class_weight[0]:.3f}, crack {class_weight[1]:.3f}")
    verbose = 1 if sys.stdout.isatty() else 2
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # tf.data shuffles

    def fit(phase: str, *, epochs_before: int, epochs: int) -> None:
        cosine = ((epochs_before, epochs, plan.fine_tune_learning_rate)
                  if plan.cosine_decay else None)
        model.fit(train_data, validation_data=val_data, epochs=epochs_before + epochs,
                  initial_epoch=epochs_before, class_weight=class_weight,
                  callbacks=phase_callbacks(phase, layout, stopper, options.patience, cosine),
                  verbose=verbose)

    return fit


def _describe_model(model, weights) -> None:
    from training.model import parameter_counts

    if weights.warning:
        say(weights.warning, logging.WARNING)
    say(f"weights: {weights.used}")
    model.summary(print_fn=lambda line, **_: say(line) if line.strip() else None)
    counts = parameter_counts(model)
    say(f"parameters: {counts['total']:,} ({counts['trainable']:,} trainable, "
        f"{counts['non_trainable']:,} non-trainable)")


def _announce_new_run(layout: RunLayout, options: TrainOptions, scanned) -> None:
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
