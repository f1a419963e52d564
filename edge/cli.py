"""`crack-edge` / `python -m edge`: run a converted crack model on a device. Never imports TensorFlow.

  score   files, folders, globs and @lists -> CSV/JSONL
  stream  a camera, video file, RTSP/HTTP URL, GStreamer pipeline or picamera2 -> events
  bench   interpreter and pipeline speed on this device

This is the only module of `edge` that knows typer: every command is a thin layer that turns its
options into the engine's options dataclass (``ScoreOptions``, ``StreamOptions``, ``BenchOptions``)
and calls the engine. Exit codes and one-line errors: ``edge.cli_main.run_app``; a usage error
(unknown option, bad value) is one line too, see ``OneLineUsageErrors``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from edge.cli_main import run_app, version_callback
from edge.errors import EXIT_USAGE


class OneLineUsageErrors(TyperGroup):
    """A usage error (unknown option, a value of the wrong type, a missing option) is one line,
    ``error: ... (see crack-edge CMD --help)``, exit 2, instead of a boxed usage text: on a
    device that line goes to the journal. Help asked for with no arguments is still shown."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any) -> Any:
        from typer._click.exceptions import NoArgsIsHelpError, UsageError

        try:
            # standalone_mode=False: click returns the exit code instead of exiting, and lets
            # usage errors through to be written here on one line
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.format_message(), err=True)
            result = EXIT_USAGE
        except UsageError as exc:
            message = " ".join(exc.format_message().split())
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
            result = EXIT_USAGE
        if not standalone_mode:
            return result
        raise SystemExit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Score images, folders, videos and camera streams with a TFLite crack classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                                help="Print the crackkit version and exit.")] = False) -> None:
    """Crack / no-crack classifier on a device: score files, watch a stream, time the model."""


# --- options shared by several commands: declared once -----------------------------------------

ModelOption = Annotated[Path, typer.Option(
    "--model", metavar="M.tflite", help="Converted model; its sidecar M.json (contract, sha256) is read if present.")]
ThresholdOption = Annotated[float | None, typer.Option(
    "--threshold", show_default="the model's", help="Probability at or above which an image (tile) is a crack.")]
TilesOption = Annotated[str | None, typer.Option(
    "--tiles", metavar="RxC", help="Score each image as a grid of tiles; its probability is the max.")]
TileSizeOption = Annotated[int | None, typer.Option("--tile-size", metavar="PX", help="Square tiles of this size...")]
StrideOption = Annotated[int | None, typer.Option("--stride", metavar="PX", help="...every this many pixels.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", show_default="all cores", help="Interpreter threads.")]


# --- score ---------------------------------------------------------------------------------------


@app.command("score")
def score_command(
    paths: Annotated[list[str], typer.Argument(
        metavar="PATHS...", help="Image files, folders (recursive), globs ('surveys/**/*.jpg') or @list.txt files.")],
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Results: path,probability,label,latency_ms,error.")],
    format: Annotated[str, typer.Option("--format", metavar="csv|jsonl", help="Output format.")] = "csv",
    resume: Annotated[bool, typer.Option("--resume", help="Skip files already in --out and append the rest.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 1 if any file could not be read.")] = False,
    labels_from_folders: Annotated[bool, typer.Option(
        "--labels-from-folders",
        help="Take ground truth from class folder names (crack/no_crack, Positive/Negative, ...) and "
             "print accuracy, precision, recall and F1.")] = False,
    threshold: ThresholdOption = None,
    tiles: TilesOption = None,
    tile_size: TileSizeOption = None,
    stride: StrideOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per interpreter invoke.")] = 4,
    decode_workers: Annotated[int, typer.Option("--decode-workers", help="Threads decoding files ahead of the model.")] = 2,
    threads: ThreadsOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", help="Say which interpreter package is in use.")] = False,
) -> None:
    """Score image files and folders; one row per file, flushed as it goes (safe to --resume)."""
    from edge.score import ScoreOptions, run_score

    options = ScoreOptions(model=model, inputs=tuple(paths), out=out, format=format,
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


# --- bench ---------------------------------------------------------------------------------------


@app.command("bench")
def bench_command(
    model: Annotated[Path, typer.Option("--model", metavar="M.tflite", help="Converted model to time.")],
    images: Annotated[list[str], typer.Option(
        "--images", metavar="PATH", help="Image files or folders for the files pipeline (default: generated).")] = [],
    video: Annotated[Path | None, typer.Option(
        "--video", metavar="FILE", help="Video for the stream pipeline (default: generated).")] = None,
    count: Annotated[int, typer.Option("--count", help="Images / frames per pipeline run.")] = 60,
    runs: Annotated[int, typer.Option("--runs", help="Bare invokes timed.")] = 50,
    repeats: Annotated[int, typer.Option("--repeats", help="Pipeline runs; the median is reported.")] = 3,
    threads: ThreadsOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Also write the figures as JSON.")] = None,
) -> None:
    """Median and p90 latency and FPS: bare invoke, files pipeline and video pipeline."""
    from edge.bench import BenchOptions, run_bench

    run_bench(BenchOptions(model=model, images=tuple(images), video=video, count=count, runs=runs,
                           repeats=repeats, threads=threads, json_out=json_out))


# --- stream --------------------------------------------------------------------------------------


def setup_logging(verbose: bool) -> None:
    """Log lines on stderr (the journal under systemd); DEBUG with --verbose."""
    logger = logging.getLogger("crack.edge")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


@app.command("stream")
def stream_command(
    model: ModelOption,
    source: Annotated[str, typer.Option(
        "--source", metavar="SRC",
        help="Camera index (0), /dev/videoN, video file, rtsp:// or http(s):// URL, GStreamer pipeline "
             "ending in appsink (contains '!'), or picamera2 (picamera2:WIDTHxHEIGHT to pick a size) "
             "for a Raspberry Pi camera.")],
    events: Annotated[Path | None, typer.Option(
        "--events", metavar="FILE.jsonl", help="Append crack_start / crack_end events here, one JSON line each.")] = None,
    snapshots: Annotated[Path | None, typer.Option(
        "--snapshots", metavar="DIR", help="Save the annotated frame of each event start here as JPEG.")] = None,
    threshold: ThresholdOption = None,
    tiles: TilesOption = None,
    tile_size: TileSizeOption = None,
    stride: StrideOption = None,
    min_frames: Annotated[int, typer.Option(
        "--min-frames", help="Consecutive crack frames that open an event, and clear frames that close it.")] = 3,
    threads: ThreadsOption = None,
    show: Annotated[bool, typer.Option(
        "--show", help="Show the annotated stream in a window (needs a desktop and an OpenCV with GUI; q quits).")] = False,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after scoring this many frames.")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", metavar="SECONDS", help="Stop after this many seconds.")] = None,
    reconnect_initial: Annotated[float, typer.Option(
        "--reconnect-initial", metavar="SECONDS",
        help="Wait after a failed attempt to reopen a lost live source; doubles after every further failure...")] = 0.5,
    reconnect_max: Annotated[float, typer.Option("--reconnect-max", metavar="SECONDS", help="...up to this wait.")] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every frame's probability.")] = False,
) -> None:
    """Watch a camera or stream: debounced crack events to JSONL, snapshots, reconnects.

    Stops cleanly on Ctrl-C / SIGTERM, closing and writing an open event."""
    from edge.stream import StreamOptions, run_stream

    setup_logging(verbose)
    options = StreamOptions(
        model=model, source=source, threads=threads, threshold=threshold, tiles=tiles,
        tile_size=tile_size, stride=stride, min_frames=min_frames, events=events, snapshots=snapshots,
        show=show, max_frames=max_frames, duration=duration, reconnect_initial=reconnect_initial,
        reconnect_max=reconnect_max, verbose=verbose,
    )
    summary = run_stream(options)
    typer.echo(summary.line())
    raise typer.Exit(summary.exit_code)


def main() -> None:
    run_app(app, "crack-edge")
