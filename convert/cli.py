"""The `crack convert` command: options only; the work is in ``convert.pipeline`` (imported, with
TensorFlow, only when the command runs, so `crack --help` stays instant)."""

from __future__ import annotations

import typer

from convert.gate import DEFAULT_MAX_DROP
from convert.modes import LITERT_MODE, MODES
from convert.options import DEFAULT_CALIBRATION_SIZE, DEFAULT_LATENCY_RUNS, DEFAULT_REFERENCE_IMAGES


def convert_command(
    run: str = typer.Option(..., "--run", metavar="DIR",
                            help="Training run directory (runs/NAME or runs/latest)."),
    modes: list[str] = typer.Option(
        list(MODES), "--modes", metavar="MODE[,MODE]",
        help=f"Variants to make: {', '.join(MODES)} (comma-separated or repeated); also "
             f"{LITERT_MODE}, int8 by litert-quantizer (the `quantizer` extra), to compare with int8."),
    calibration_size: int = typer.Option(
        DEFAULT_CALIBRATION_SIZE, "--calibration-size",
        help="Images for int8 calibration, drawn deterministically from the training split."),
    calibration_dir: str | None = typer.Option(
        None, "--calibration-dir", metavar="DIR",
        help="Calibrate on images (e.g. deployment-camera frames) from this folder instead."),
    max_drop: float | None = typer.Option(
        None, "--max-drop", metavar="PP",
        show_default=f"{DEFAULT_MAX_DROP:g}",
        help="Largest allowed loss vs Keras, in percentage points of accuracy and of F1."),
    recover: bool = typer.Option(
        True, "--recover/--no-recover",
        help="If int8 fails the gate, try int8_selective (worst layers kept in float)."),
    latency_runs: int = typer.Option(DEFAULT_LATENCY_RUNS, "--latency-runs",
                                     help="Single-image invokes timed per variant."),
    threads: int | None = typer.Option(None, "--threads", show_default="all cores",
                                       help="Interpreter threads for evaluation and latency."),
    reference_images: int = typer.Option(
        DEFAULT_REFERENCE_IMAGES, "--reference-images",
        help="Test images scored with the slow reference kernels (0: skip them)."),
    seed: int = typer.Option(0, "--seed", help="Which training images are drawn for calibration."),
    bias_correction: bool = typer.Option(
        True, "--bias-correction/--no-bias-correction",
        help="int8: take the logit's mean error vs Keras on the calibration images out of the "
             "final layer's bias (kept only when it brings them closer to Keras)."),
) -> None:
    """Convert a run to TFLite (fp32, fp16, dynamic, int8), check each against Keras, report."""
    from pathlib import Path

    from convert.options import ConvertOptions, parse_modes
    from convert.pipeline import run_convert

    options = ConvertOptions(
        run=Path(run), modes=parse_modes(modes), calibration_size=calibration_size,
        calibration_dir=Path(calibration_dir) if calibration_dir else None, max_drop=max_drop,
        recover=recover, latency_runs=latency_runs, threads=threads, seed=seed,
        reference_images=reference_images, bias_correction=bias_correction)
    code = run_convert(options)
    if code:
        raise typer.Exit(code)
