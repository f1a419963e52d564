"""`crack-edge` / `python -m edge`: run a converted crack model on a device. Never imports TensorFlow.

  score   files, folders, globs and @lists -> CSV/JSONL
  stream  a camera, video file, RTSP/HTTP URL, GStreamer pipeline or picamera2 -> events
  bench   interpreter and pipeline speed on this device
"""

from __future__ import annotations

import typer

from edge.errors import UserError

app = typer.Typer(
    help="Score images, folders, videos and camera streams with a TFLite crack classifier.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


# --- commands are added below, each a thin layer over its module's options dataclass ---


@app.command("score")
def score_command(
    paths: list[str] = typer.Argument(..., metavar="PATHS...",
                                      help="Image files, folders (recursive), globs ('surveys/**/*.jpg') "
                                           "or @list.txt files."),
    model: str = typer.Option(..., "--model", metavar="M.tflite",
                              help="Converted model; its sidecar M.json (contract, sha256) is read if present."),
    out: str = typer.Option(..., "--out", metavar="FILE", help="Results: path,probability,label,latency_ms,error."),
    fmt: str = typer.Option("csv", "--format", metavar="csv|jsonl", help="Output format."),
    resume: bool = typer.Option(False, "--resume", help="Skip files already in --out and append the rest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any file could not be read."),
    labels_from_folders: bool = typer.Option(
        False, "--labels-from-folders",
        help="Take ground truth from class folder names (crack/no_crack, Positive/Negative, ...) and "
             "print accuracy, precision, recall and F1."),
    threshold: float | None = typer.Option(None, "--threshold", show_default="the model's",
                                           help="Probability at or above which an image is a crack."),
    tiles: str | None = typer.Option(None, "--tiles", metavar="RxC",
                                     help="Score each image as a grid of tiles; its probability is the max."),
    tile_size: int | None = typer.Option(None, "--tile-size", metavar="PX", help="Square tiles of this size..."),
    stride: int | None = typer.Option(None, "--stride", metavar="PX", help="...every this many pixels."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per interpreter invoke."),
    decode_workers: int = typer.Option(2, "--decode-workers", help="Threads decoding files ahead of the model."),
    threads: int | None = typer.Option(None, "--threads", show_default="all cores", help="Interpreter threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    verbose: bool = typer.Option(False, "--verbose", help="Say which interpreter package is in use."),
) -> None:
    """Score image files and folders; one row per file, flushed as it goes (safe to --resume)."""
    from pathlib import Path

    from edge.score import ScoreOptions, run_score

    options = ScoreOptions(model=Path(model), inputs=tuple(paths), out=Path(out), format=fmt,
                           resume=resume, overwrite=overwrite, strict=strict,
                           labels_from_folders=labels_from_folders, threads=threads,
                           threshold=threshold, tiles=tiles, tile_size=tile_size, stride=stride,
                           batch_size=batch_size, decode_workers=decode_workers,
                           show_progress=progress)
    if verbose:
        from edge.interpreter import find_interpreter

        typer.echo(f"interpreter: {find_interpreter().describe()}", err=True)
    try:
        summary = run_score(options, say=lambda line: typer.echo(line, err=True))
    except KeyboardInterrupt:
        typer.echo(f"interrupted; the rows so far are in {out}. Continue with --resume.", err=True)
        raise typer.Exit(130) from None
    for line in summary.lines():
        typer.echo(line)
    if strict and summary.errors:
        raise typer.Exit(1)


@app.command("bench")
def bench_command(
    model: str = typer.Option(..., "--model", metavar="M.tflite", help="Converted model to time."),
    images: list[str] = typer.Option([], "--images", metavar="PATH",
                                     help="Image files or folders for the files pipeline (default: generated)."),
    video: str | None = typer.Option(None, "--video", metavar="FILE",
                                     help="Video for the stream pipeline (default: generated)."),
    count: int = typer.Option(60, "--count", help="Images / frames per pipeline run."),
    runs: int = typer.Option(50, "--runs", help="Bare invokes timed."),
    repeats: int = typer.Option(3, "--repeats", help="Pipeline runs; the median is reported."),
    threads: int | None = typer.Option(None, "--threads", show_default="all cores", help="Interpreter threads."),
    json_out: str | None = typer.Option(None, "--json", metavar="FILE", help="Also write the figures as JSON."),
) -> None:
    """Median and p90 latency and FPS: bare invoke, files pipeline and video pipeline."""
    from pathlib import Path

    from edge.bench import BenchOptions, run_bench

    run_bench(BenchOptions(model=Path(model), images=tuple(images), video=Path(video) if video else None,
                           count=count, runs=runs, repeats=repeats, threads=threads,
                           json_out=Path(json_out) if json_out else None))


# `stream`: options in edge/stream.py (OpenCV and the interpreter load only when it runs).
from edge.stream import stream_command  # noqa: E402

app.command("stream")(stream_command)


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
