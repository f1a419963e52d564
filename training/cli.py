"""The training commands of `crack`: data preparation, training, prediction.

`crack convert` sits one layer up (convert/cli.py) and the whole `crack` command is assembled in
convert/crack_cli.py, so training never imports convert.

Heavy imports (TensorFlow) happen inside the commands so that `crack --help` is instant.
Every command turns a UserError into a one-line message and exit code 2.
"""

from __future__ import annotations

import typer

from edge.cli_main import OneLineUsageErrors, run_app, version_callback
from edge.errors import UserError

app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Crack / no-crack classifier: make data, train ResNet50V2, predict, convert to TFLite.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback,
                                       is_eager=True, help="Print the crackkit version and exit.")
          ) -> None:
    """Crack / no-crack classifier: make data, train ResNet50V2, predict, convert to TFLite."""
data_app = typer.Typer(help="Make or prepare labelled image folders.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# --- commands are added below, each a thin layer over its module's options dataclass ---


@data_app.command("demo")
def data_demo(
    out: str = typer.Option(..., "--out", metavar="DIR",
                            help="Folder to write crack/, no_crack/, README.txt and .complete to."),
    count: int = typer.Option(1000, "--count", help="Images per class."),
    size: int = typer.Option(128, "--size", help="Image side in pixels (square images)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
) -> None:
    """Generate the synthetic demo data set (concrete/asphalt textures, with and without cracks)."""
    from pathlib import Path

    from training.demo_data import DemoOptions, generate_demo

    summary = generate_demo(DemoOptions(out=Path(out), count=count, size=size, seed=seed))
    typer.echo(f"wrote {sum(summary.per_class.values())} images ({summary.per_class['crack']} "
               f"crack, {summary.per_class['no_crack']} no_crack, {summary.size}x{summary.size}, "
               f"seed {summary.seed}) to {summary.out} in {summary.seconds:.1f} s")


@data_app.command("patches")
def data_patches(
    images: str = typer.Option(..., "--images", metavar="DIR", help="Folder of photos."),
    masks: str = typer.Option(..., "--masks", metavar="DIR",
                              help="Folder of binary crack masks (0/255 or 0/1), named like "
                                   "their photos (001.jpg -> 001.png)."),
    out: str = typer.Option(..., "--out", metavar="DIR",
                            help="Output folder: crack/, no_crack/ and patches.csv."),
    size: int = typer.Option(96, "--size", help="Patch side in pixels."),
    stride: int = typer.Option(48, "--stride", help="Step between patches in pixels."),
    crack_min_fraction: float = typer.Option(
        0.01, "--crack-min-fraction",
        help="A crack patch needs at least this fraction of its area as crack pixels "
             "inside its centre (away from the margin)."),
    crack_margin: int | None = typer.Option(
        None, "--crack-margin", show_default="size/8",
        help="Border width in pixels whose crack pixels do not count towards a crack patch."),
    clearance: int = typer.Option(
        4, "--clearance",
        help="A no_crack patch must be at least this many pixels away from any crack pixel."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace patches from an earlier run in --out."),
) -> None:
    """Cut photos + crack masks into crack / no_crack patches (ambiguous ones are dropped)."""
    from pathlib import Path

    from training.patches import PatchOptions, cut_patches

    options = PatchOptions(images=Path(images), masks=Path(masks), out=Path(out), size=size,
                           stride=stride, crack_min_fraction=crack_min_fraction,
                           crack_margin=crack_margin, clearance=clearance, overwrite=overwrite)
    summary = cut_patches(options, warn=lambda message: typer.echo(f"warning: {message}",
                                                                   err=True))
    for line in summary.lines():
        typer.echo(line)


@data_app.command("from-labels")
def data_from_labels(
    labels: list[str] = typer.Option(..., "--labels", metavar="DIR/labels.csv",
                                     help="A labels template of `crack-edge score/stream --collect DIR`, its "
                                          "label column filled in (crack / no_crack); repeatable."),
    out: str = typer.Option(..., "--out", metavar="DIR", help="Folder to copy the images to: crack/ and no_crack/."),
) -> None:
    """Sort collected images into crack/ and no_crack/ by their filled-in labels (for --init)."""
    from pathlib import Path

    from edge.collect import sort_labelled

    for line in sort_labelled([Path(path) for path in labels], Path(out)).lines():
        typer.echo(line)


@app.command("train")
def train_command(
    data: str | None = typer.Option(None, "--data", metavar="DIR",
                                    help="Folder of class folders (crack/no_crack, Positive/"
                                         "Negative, ...), or of train/ val/ test/ folders holding them."),
    resume: str | None = typer.Option(None, "--resume", metavar="RUN",
                                      help="Continue an interrupted run (runs/NAME) with its own "
                                           "options; other options are ignored."),
    init: str | None = typer.Option(None, "--init", metavar="RUN",
                                    help="Start from this trained run's model (runs/NAME) instead of ImageNet "
                                         "or random weights: adapt it to a new surface with a few labelled "
                                         "photos (head first, then conv5 on at learning rate / 10)."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: time and data folder)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", metavar="DIR", help="Where runs are kept."),
    img_size: int | None = typer.Option(None, "--img-size", show_default="224, or the --init run's",
                                        help="Model input side in pixels (>= 32)."),
    epochs: int = typer.Option(10, "--epochs", help="Fine-tuning epochs (phase 2; early stopping may end sooner)."),
    head_epochs: int | None = typer.Option(None, "--head-epochs", show_default="3 pretrained, 0 from scratch",
                                           help="Phase 1 epochs: the head alone, base frozen."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per step (per replica)."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate",
                                        help="Phase 1 rate, and phase 2 rate from scratch."),
    fine_tune_learning_rate: float | None = typer.Option(
        None, "--fine-tune-learning-rate", show_default="learning rate / 100 when pretrained",
        help="Phase 2 learning rate."),
    fine_tune_at: str | None = typer.Option(
        None, "--fine-tune-at", show_default="conv5 pretrained, whole base from scratch",
        help="First base layer to unfreeze in phase 2: a layer index or name prefix (conv4, conv5_block2)."),
    patience: int = typer.Option(4, "--patience",
                                 help="Early-stopping patience in epochs (validation loss), with pretrained "
                                      "weights; from scratch the learning rate decays along a cosine instead."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, shuffling, augmentation and initialisation."),
    weights: str = typer.Option("auto", "--weights", metavar="auto|imagenet|none|PATH",
                                help="Start from ImageNet weights, random initialisation or a weights file; "
                                     "auto: ImageNet when available, else random with a warning."),
    positive: str | None = typer.Option(None, "--positive", metavar="NAME",
                                        help="Name of the crack class folder, when it is not a usual one."),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="Share of images for validation (no split folders)."),
    test_fraction: float = typer.Option(0.15, "--test-fraction", help="Share of images for test (no split folders)."),
    val_split: str | None = typer.Option(None, "--val-split", metavar="FOLDER",
                                         help="Folder under --data to validate on (default val/ or valid/)."),
    test_split: str | None = typer.Option(None, "--test-split", metavar="FOLDER",
                                          help="Folder under --data to report on (default test/)."),
    group_by_source: bool = typer.Option(False, "--group-by-source",
                                         help="Keep all patches of one photo in one split (names like "
                                              "001__y48_x96.png or IMG_12_3_4.jpg)."),
    target_recall: float | None = typer.Option(None, "--target-recall", metavar="R",
                                               help="Choose the highest threshold reaching this validation "
                                                    "recall (default: 0.5, unless the best validation F1 "
                                                    "threshold is clearly better there)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flips, rotations, brightness, contrast."),
    strategy: str = typer.Option("default", "--strategy", metavar="default|mirrored|multi-worker",
                                 help="tf.distribute strategy: mirrored for several GPUs, multi-worker "
                                      "for several machines (TF_CONFIG)."),
) -> None:
    """Fine-tune ResNet50V2 on labelled images; write model, metrics, plots and contract to runs/NAME."""
    from pathlib import Path

    from training.options import TrainOptions
    from training.signals import TrainingInterrupted
    from training.train import train

    if resume is None and data is None:
        raise UserError("give --data DIR (a folder of class folders) or --resume runs/NAME")
    options = TrainOptions(
        data=Path(data) if data else None, runs_dir=Path(runs_dir), name=name,
        img_size=TrainOptions.img_size if img_size is None else img_size,
        epochs=epochs, head_epochs=head_epochs, batch_size=batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, fine_tune_at=fine_tune_at,
        patience=patience, seed=seed, weights=weights, positive=positive,
        val_fraction=val_fraction, test_fraction=test_fraction, val_split=val_split,
        test_split=test_split, group_by_source=group_by_source, target_recall=target_recall,
        augment=augment, strategy=strategy, init=Path(init) if init else None)
    if init is not None and resume is None:
        from training.adapt import options_from_parent

        options = options_from_parent(options, img_size)
    try:
        result = train(options, resume=Path(resume) if resume else None)
    except TrainingInterrupted as stopped:
        typer.echo(str(stopped), err=True)
        raise typer.Exit(130) from None
    if result.worker_message:  # --strategy multi-worker, not the chief: no run folder here
        typer.echo(result.worker_message)
        return
    typer.echo(f"run: {result.layout.root}  (runs/latest points here)")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("predict")
def predict_command(
    paths: list[str] = typer.Argument(..., metavar="PATHS...",
                                      help="Image files, folders (recursive), globs or @list.txt files."),
    run: str = typer.Option(..., "--run", metavar="DIR", help="Training run (runs/NAME or runs/latest)."),
    out: str = typer.Option("predictions.csv", "--out", metavar="CSV",
                            help="Output CSV: path,probability,label,error."),
    threshold: float | None = typer.Option(None, "--threshold", show_default="the run's threshold",
                                           help="Probability at or above which an image is a crack."),
) -> None:
    """Score image files with the run's Keras model (the reference for the TFLite and edge models)."""
    from pathlib import Path

    from edge.file_inputs import expand_inputs
    from training.predict import PredictOptions, run_predict

    options = PredictOptions(run=Path(run), paths=tuple(paths), out=Path(out), threshold=threshold)
    scored, failed = run_predict(options, expand_inputs)
    typer.echo(f"scored {scored} image(s), {failed} unreadable; wrote {options.out}")


@app.command("calibrate")
def calibrate_command(
    run: str = typer.Option(..., "--run", metavar="DIR", help="Training run (runs/NAME or runs/latest)."),
    data: list[str] = typer.Option(..., "--data", metavar="SITE_DIR",
                                   help="The site's labelled photos below class folders (crack/no_crack, ...)."),
    out: str | None = typer.Option(None, "--out", metavar="DIR", show_default="runs/NAME-SITE",
                                   help="The new run folder to write (must not exist)."),
    site: str | None = typer.Option(None, "--site", show_default="the SITE_DIR folder's name",
                                    help="The site's name, recorded in the new contract."),
    target_recall: float | None = typer.Option(None, "--target-recall", metavar="R",
                                               help="Choose the highest threshold that finds this share "
                                                    "of the site's cracks (default: the best-F1 threshold if the "
                                                    "photos show it clearly better than the run's, else "
                                                    "the run's is kept)."),
) -> None:
    """Choose a site's threshold with the run's Keras model, without retraining (the run's own stays
    unless the photos clearly show a better one); write it into a new run folder (the run itself is
    never changed) that `crack convert` turns into models."""
    from pathlib import Path

    from training.calibrate import RunCalibrateOptions, calibrate_run

    result = calibrate_run(RunCalibrateOptions(run=Path(run), data=tuple(data),
                                               out=Path(out) if out else None, site=site,
                                               target_recall=target_recall),
                           say=lambda line: typer.echo(line, err=True))
    for line in result.lines():
        typer.echo(line)


def main() -> None:
    """`python -m training`: the training commands alone (the full `crack`, with `convert`, is
    assembled one layer up, in convert/crack_cli.py)."""
    from training import tensorflow_env

    tensorflow_env.prepare()  # oneDNN kernels, quiet start-up: before TensorFlow is imported
    run_app(app, "crack")
