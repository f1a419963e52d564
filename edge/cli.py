"""`crack-edge` / `python -m edge`: run a converted crack model on a device. Never imports TensorFlow.

  score   files, folders, globs and @lists -> CSV/JSONL
  stream  a camera, video file, RTSP/HTTP URL, GStreamer pipeline or picamera2 -> events
  bench   interpreter and pipeline speed on this device
  report  a results file -> one self-contained HTML page for an inspector
  geojson a results file -> GeoJSON points of the photos with GPS
  calibrate  a site's labelled photos -> a copy of the model with the site's own threshold

This is the only module of `edge` that knows typer: every command is a thin layer that turns its
options into the engine's options dataclass (``ScoreOptions``, ``StreamOptions``, ``BenchOptions``)
and calls the engine. Exit codes and one-line errors: ``edge.cli_main.run_app``; a usage error
(unknown option, bad value) is one line too, see ``OneLineUsageErrors``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli_main import DEBUG_VARIABLE, OneLineUsageErrors, run_app, version_callback
from edge.collect import DEFAULT_COLLECT_MARGIN, DEFAULT_COLLECT_MB
from edge.disk_budget import DEFAULT_KEEP_DAYS, DEFAULT_MAX_DISK_MB
from edge.outbox import DEFAULT_OUTBOX_MB
from edge.errors import EXIT_USAGE, RuntimeFailure, UserError, first_line


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

ModelOption = Annotated[Path | None, typer.Option(
    "--model", metavar="M.tflite", help="Converted model. Its contract (threshold, labels, size) travels inside the .tflite; a sidecar M.json beside it must agree.")]
ThresholdOption = Annotated[float | None, typer.Option(
    "--threshold", show_default="the model's", help="Probability at or above which an image (tile) is a crack.")]
TilesOption = Annotated[str | None, typer.Option(
    "--tiles", metavar="RxC", help="Score each image as a grid of tiles; its probability is the max.")]
TileSizeOption = Annotated[int | None, typer.Option("--tile-size", metavar="PX", help="Square tiles of this size...")]
StrideOption = Annotated[int | None, typer.Option("--stride", metavar="PX", help="...every this many pixels.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", show_default="all cores", help="Interpreter threads.")]
RequireVerifiedOption = Annotated[bool, typer.Option(
    "--require-verified", help="Refuse to start unless the model's golden inputs, run here at start-up, pass "
                               "`crack-edge verify`'s rule (exit 1 when they fail, 2 when there is no usable golden file).")]
CollectOption = Annotated[Path | None, typer.Option(
    "--collect", metavar="DIR",
    help="Collect images worth labelling into DIR: files (score) or frames (stream) within --collect-margin of "
         "the threshold, and stream's event frames; DIR/labels.csv is the template to fill in for "
         "`crack data from-labels` and `crack train --init`.")]
CollectMarginOption = Annotated[float, typer.Option(
    "--collect-margin", metavar="P", help="Collect an image when |probability - threshold| is below this.")]
CollectMaxMbOption = Annotated[float, typer.Option(
    "--collect-max-mb", metavar="MB", help="Stop collecting when DIR holds this many megabytes.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="FILE.toml",
    help="Read options from this TOML file (keys: the option names with underscores, at the top level "
         "or under [score] / [stream]); the command line wins. See edge/FORMATS.md.")]


# --- --config: a TOML file under the command line ----------------------------------------------

def config_keys(function) -> dict:
    """The config keys of a command: one per option of ``function`` (its parameter names), typed
    like the option."""
    import types
    import typing

    from edge.config import ConfigKey

    keys = {}
    for name, hint in typing.get_type_hints(function).items():
        if name in ("ctx", "config", "return"):
            continue
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None -> X
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        many = typing.get_origin(hint) is list
        base = typing.get_args(hint)[0] if many else hint
        kind = {int: "int", float: "float", bool: "bool", Path: "path"}.get(base, "str")
        keys[name] = ConfigKey(name, kind, many)
    return keys


def command_values(ctx: typer.Context, command: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The command's options: the command line, over the ``--config`` file's values, over the
    defaults. ``required`` options may come from either; missing ones are a usage error."""
    from edge.config import command_settings, load_config

    values = dict(ctx.params)
    config_path = values.pop("config", None)
    if config_path is not None:
        keys = {name: config_keys(function) for name, function in CONFIG_COMMANDS.items()}
        settings = command_settings(load_config(config_path), command, keys, config_path)
        for name, value in settings.items():
            if ctx.get_parameter_source(name).name not in ("COMMANDLINE", "ENVIRONMENT"):
                values[name] = value
    for name in required:
        if values.get(name) in (None, [], ()):
            option = "PATHS" if name == "paths" else "--" + name.replace("_", "-")
            raise UserError(f"missing {option}: give it on the command line or as {name!r} in the --config file")
    return values


# --- score ---------------------------------------------------------------------------------------


@app.command("score")
def score_command(
    ctx: typer.Context,
    paths: Annotated[list[str] | None, typer.Argument(
        metavar="PATHS...", show_default=False,
        help="Image files, folders (recursive), globs ('surveys/**/*.jpg') or @list.txt files.")] = None,
    model: ModelOption = None,
    out: Annotated[Path | None, typer.Option("--out", metavar="FILE", help="Results, one row per file (columns: edge/FORMATS.md).")] = None,
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
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", metavar="N", help="Refuse (error row) an image whose decode would hold more than N pixels "
                                          "(wider pixels, 16-bit or float, count by their memory).")] = 50_000_000,
    threads: ThreadsOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", help="Say which interpreter package is in use.")] = False,
    save_annotated: Annotated[Path | None, typer.Option(
        "--save-annotated", metavar="DIR", help="Write each crack photo with its label, probability and tile heat "
                                                "map below this folder (JPEG).")] = None,
    require_verified: RequireVerifiedOption = False,
    collect: CollectOption = None,
    collect_margin: CollectMarginOption = DEFAULT_COLLECT_MARGIN,
    collect_max_mb: CollectMaxMbOption = DEFAULT_COLLECT_MB,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="local|ray", help="local: this process. ray: an actor pool on a Ray cluster, each "
                                              "actor reading and scoring files itself; the same rows, written "
                                              "here (needs pip install \".\\[cluster]\").")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDR", show_default="RAY_ADDRESS, else a Ray started here",
        help="Ray cluster to run on (HOST:PORT of the head, ray://HOST:PORT or auto); with --engine ray.")] = None,
    ray_actors: Annotated[int | None, typer.Option(
        "--ray-actors", metavar="N", show_default="one per CPU of the cluster",
        help="Scoring actors (one interpreter each, one CPU each); with --engine ray.")] = None,
    ray_batch_size: Annotated[int | None, typer.Option(
        "--ray-batch-size", metavar="N", show_default="32",
        help="Files per actor call (a Ray Data batch); with --engine ray.")] = None,
    config: ConfigOption = None,
) -> None:
    """Score image files and folders; one row per file, flushed as it goes (safe to --resume)."""
    from edge.score import ScoreOptions, run_score

    v = command_values(ctx, "score", required=("paths", "model", "out"))
    options = ScoreOptions(model=v["model"], inputs=tuple(v["paths"]), out=v["out"], format=v["format"],
                           resume=v["resume"], overwrite=v["overwrite"], strict=v["strict"],
                           labels_from_folders=v["labels_from_folders"], threads=v["threads"],
                           threshold=v["threshold"], tiles=v["tiles"], tile_size=v["tile_size"],
                           stride=v["stride"], batch_size=v["batch_size"], decode_workers=v["decode_workers"],
                           max_pixels=v["max_pixels"], show_progress=v["progress"],
                           save_annotated=v["save_annotated"], require_verified=v["require_verified"],
                           collect=v["collect"], collect_margin=v["collect_margin"],
                           collect_max_mb=v["collect_max_mb"])
    ray_options = _ray_options(v)
    if v["verbose"]:
        from edge.interpreter import find_interpreter

        typer.echo(f"interpreter: {find_interpreter().describe()}", err=True)
    say = lambda line: typer.echo(line, err=True)  # noqa: E731
    try:
        if v["engine"] == "ray":
            from edge.ray_engine import run_score_ray

            summary = run_score_ray(options, ray_options, say=say)
        else:
            summary = run_score(options, say=say)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; the rows so far are in {options.out}. Continue with --resume.", err=True)
        raise typer.Exit(130) from None
    for line in summary.lines():
        typer.echo(line)
    if options.strict and summary.errors:
        raise typer.Exit(1)


def _ray_options(v: dict[str, Any]):
    """``RayOptions`` for --engine ray (None for local); Ray itself is imported only to run."""
    from edge.ray_engine import DEFAULT_RAY_BATCH_SIZE, RayOptions, check_engine

    given = any(v[name] is not None for name in ("ray_address", "ray_actors", "ray_batch_size"))
    check_engine(v["engine"], given)
    if v["engine"] != "ray":
        return None
    return RayOptions(address=v["ray_address"], actors=v["ray_actors"],
                      batch_size=DEFAULT_RAY_BATCH_SIZE if v["ray_batch_size"] is None else v["ray_batch_size"])


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
    """Log lines on stderr (the journal under systemd), URL credentials masked; DEBUG with --verbose."""
    from edge.secrets import MaskingFormatter

    logger = logging.getLogger("crack.edge")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


@app.command("stream")
def stream_command(
    ctx: typer.Context,
    model: ModelOption = None,
    source: Annotated[str | None, typer.Option(
        "--source", metavar="SRC",
        help="Camera index (0), /dev/videoN, video file, rtsp:// or http(s):// URL, GStreamer pipeline "
             "ending in appsink (contains '!'), or picamera2 (picamera2:WIDTHxHEIGHT to pick a size) "
             "for a Raspberry Pi camera.")] = None,
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
    threads: Annotated[int | None, typer.Option(
        "--threads", show_default="all cores, one fewer on an Arm board with 4+",
        help="Interpreter threads in all, shared among the interpreters (3 over 2: 2 and 1).")] = None,
    interpreters: Annotated[int | None, typer.Option(
        "--interpreters", metavar="N", show_default="2 on 2 or more cores, memory permitting",
        help="Interpreters scoring frames side by side (faster on a small CPU; each holds a copy of the "
             "weights); 1 gives the lowest latency.")] = None,
    show: Annotated[bool, typer.Option(
        "--show", help="Show the annotated stream in a window (needs a desktop and an OpenCV with GUI; q quits).")] = False,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after scoring this many frames.")] = None,
    duration: Annotated[float | None, typer.Option(
        "--duration", metavar="SECONDS", help="Stop after this many seconds.")] = None,
    reconnect_initial: Annotated[float, typer.Option(
        "--reconnect-initial", metavar="SECONDS",
        help="Wait after a failed attempt to reopen a lost live source; doubles after every further failure...")] = 0.5,
    reconnect_max: Annotated[float, typer.Option("--reconnect-max", metavar="SECONDS", help="...up to this wait.")] = 10.0,
    stall_timeout: Annotated[float | None, typer.Option(
        "--stall-timeout", metavar="SECONDS",
        help="Exit with code 3 when the source delivers no frame for this long (systemd restarts it).")] = None,
    status_interval: Annotated[float, typer.Option(
        "--status-interval", metavar="SECONDS", help="Log a status line (FPS, events, temperature, throttling, "
                                                     "memory) this often.")] = 60.0,
    max_disk_mb: Annotated[float, typer.Option(
        "--max-disk-mb", metavar="MB", help="Keep events files and snapshots within this much disk, deleting "
                                            "the oldest first (0: no limit).")] = DEFAULT_MAX_DISK_MB,
    keep_days: Annotated[float, typer.Option(
        "--keep-days", metavar="DAYS", help="Delete rotated events files and snapshots older than this "
                                            "(0: keep).")] = DEFAULT_KEEP_DAYS,
    rotate: Annotated[int, typer.Option("--rotate", metavar="0|90|180|270",
                                        help="Turn camera frames clockwise by this many degrees.")] = 0,
    hflip: Annotated[bool, typer.Option("--hflip", help="Mirror frames left to right.")] = False,
    vflip: Annotated[bool, typer.Option("--vflip", help="Mirror frames top to bottom.")] = False,
    resolution: Annotated[str | None, typer.Option(
        "--resolution", metavar="WxH", help="Capture size of a camera (e.g. 1920x1080).")] = None,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", metavar="URL", help="POST each event as JSON here, through an outbox on disk; retried "
                                         "with backoff until a 2xx answer.")] = None,
    webhook_snapshots: Annotated[bool, typer.Option(
        "--webhook-snapshots", help="Put the snapshot JPEG in the webhook body (base64).")] = False,
    mqtt: Annotated[str | None, typer.Option(
        "--mqtt", metavar="mqtt://HOST:PORT/TOPIC", help="Publish each event with QoS 1, through the outbox "
                                                         "(needs pip install 'crackkit[mqtt]').")] = None,
    outbox: Annotated[Path | None, typer.Option(
        "--outbox", metavar="FILE", show_default="beside --events",
        help="The outbox of events not yet delivered (SQLite).")] = None,
    outbox_mb: Annotated[float, typer.Option(
        "--outbox-mb", metavar="MB", help="Outbox size; when full the oldest undelivered events are dropped.")
    ] = DEFAULT_OUTBOX_MB,
    serve: Annotated[str | None, typer.Option(
        "--serve", metavar="HOST:PORT", help="Serve the live preview page (127.0.0.1 unless a host is given; "
                                             "0.0.0.0:8080 for the LAN).")] = None,
    serve_token: Annotated[str | None, typer.Option(
        "--serve-token", metavar="TOKEN", help="Require this token (?token= or Authorization: Bearer) "
                                               "for the preview page and its endpoints.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every frame's probability.")] = False,
    require_verified: RequireVerifiedOption = False,
    collect: CollectOption = None,
    collect_margin: CollectMarginOption = DEFAULT_COLLECT_MARGIN,
    collect_max_mb: CollectMaxMbOption = DEFAULT_COLLECT_MB,
    config: ConfigOption = None,
) -> None:
    """Watch a camera or stream: debounced crack events to JSONL, snapshots, reconnects.

    Stops cleanly on Ctrl-C / SIGTERM, closing and writing an open event."""
    import dataclasses

    from edge.secrets import mask_urls
    from edge.stream import StreamOptions, run_stream

    v = command_values(ctx, "stream", required=("model", "source"))
    setup_logging(v["verbose"])
    options = StreamOptions(**{f.name: v[f.name] for f in dataclasses.fields(StreamOptions) if f.name in v})
    try:
        summary = run_stream(options)
    except (UserError, RuntimeFailure) as exc:  # no camera password in an error either
        raise type(exc)(mask_urls(str(exc))) from None
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        raise RuntimeFailure(f"unexpected {mask_urls(first_line(exc))} (a bug: please report it; "
                             f"{DEBUG_VARIABLE}=1 shows the traceback)") from None
    typer.echo(summary.line())
    raise typer.Exit(summary.exit_code)


# --- info and verify: what a model says about itself, and whether this device agrees ------------


@app.command("info")
def info_command(
    model: Annotated[Path, typer.Argument(metavar="M.tflite", help="Converted model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the readable block.")] = False,
) -> None:
    """What a model says about itself: contract, source run, mode, golden inputs, tensors."""
    import json

    from edge.model_info import describe_model

    info = describe_model(model)
    typer.echo(json.dumps(info.to_dict(), indent=2) if as_json else info.text())


@app.command("verify")
def verify_command(
    model: Annotated[Path, typer.Option("--model", metavar="M.tflite", help="Converted model; its golden "
                                        "inputs file (named in its card) must lie beside it.")],
    threads: ThreadsOption = None,
    kernels: Annotated[str, typer.Option("--kernels", help="Kernel set: xnnpack (what score and stream use), "
                                         "builtin or reference.")] = "xnnpack",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the readable block.")] = False,
    images: Annotated[list[str], typer.Option(
        "--images", metavar="DIR", help="Also score your own photos below class folders (with "
                                        "--labels-from-folders): reports accuracy, does not gate.")] = [],
    labels_from_folders: Annotated[bool, typer.Option(
        "--labels-from-folders", help="Take the ground truth of --images from class folder names, as score does.")] = False,
) -> None:
    """Run the model's golden inputs here; exit 0 when this device agrees with the build machine,
    1 when it does not, 2 when the model or its golden inputs are unusable. With --images: accuracy,
    precision, recall and F1 on your labelled photos, and the golden check when it can run; exit 0."""
    import json

    from edge.errors import EXIT_RUNTIME
    from edge.verify import VerifyOptions, verify_model

    if images or labels_from_folders:
        from edge.verify_photos import PhotoCheckOptions, check_photos

        if not (images and labels_from_folders):
            raise UserError("--images and --labels-from-folders go together: the photos' class folders "
                            "are their ground truth")
        checked = check_photos(PhotoCheckOptions(model=model, images=tuple(images), threads=threads,
                                                 kernels=kernels))
        typer.echo(json.dumps(checked.to_dict(), indent=2) if as_json else checked.text())
        return
    result = verify_model(VerifyOptions(model=model, threads=threads, kernels=kernels))
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.text())
    if not result.passed:
        raise typer.Exit(EXIT_RUNTIME)


# --- calibrate: a site's own threshold, without retraining --------------------------------------


@app.command("calibrate")
def calibrate_command(
    model: Annotated[Path, typer.Option("--model", metavar="M.tflite", help="The deployed model (its card "
                                        "holds the threshold to replace).")],
    data: Annotated[list[str], typer.Option(
        "--data", metavar="SITE_DIR", help="The site's labelled photos below class folders (crack/no_crack, "
                                           "Positive/Negative, ...), as score --labels-from-folders reads them.")],
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="M_SITE.tflite", show_default="M_<site>.tflite beside the model",
        help="The calibrated copy (its sidecar and golden inputs are written beside it).")] = None,
    site: Annotated[str | None, typer.Option("--site", show_default="the SITE_DIR folder's name",
                                             help="The site's name, recorded in the copy's card.")] = None,
    target_recall: Annotated[float | None, typer.Option(
        "--target-recall", metavar="R", help="Choose the highest threshold that finds this share of the "
                                             "site's cracks (default: the best-F1 threshold if the photos show it clearly "
                                             "better than the model's, else the model's is kept).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out (never the model).")] = False,
    threads: ThreadsOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Choose a site's threshold from its labelled photos, scored with this model here (the model's
    own stays unless the photos clearly show a better one); write a copy of the model carrying it.
    Prints accuracy before and after. The original is never changed."""
    from edge.calibrate import CalibrateOptions, run_calibrate

    say = lambda line: typer.echo(line, err=True)  # noqa: E731
    result = run_calibrate(CalibrateOptions(model=model, data=tuple(data), out=out, site=site,
                                            target_recall=target_recall, overwrite=overwrite,
                                            threads=threads, show_progress=progress), say=say)
    for line in result.lines():
        typer.echo(line)


# --- report and geojson: what an inspector opens ------------------------------------------------

ResultsArgument = Annotated[Path, typer.Argument(metavar="RESULTS", help="A results file of `crack-edge score` "
                                                 "(CSV or JSONL, finished or partial).")]
ResultsFormatOption = Annotated[str | None, typer.Option(
    "--format", metavar="csv|jsonl", show_default="recognised from the file", help="Format of RESULTS.")]


@app.command("report")
def report_command(
    results: ResultsArgument,
    out: Annotated[Path, typer.Option("--out", metavar="FILE.html", help="The report: one self-contained HTML file.")],
    format: ResultsFormatOption = None,
    base: Annotated[Path | None, typer.Option(
        "--base", metavar="DIR", show_default="the current folder",
        help="Folder that relative photo paths in RESULTS are under (where score ran).")] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", help="Most likely cracks shown as thumbnails.")] = 24,
    uncertain: Annotated[int, typer.Option("--uncertain", metavar="N", help="Uncertain photos shown.")] = 24,
    margin: Annotated[float, typer.Option(
        "--margin", help="A photo whose probability is within this of the threshold is uncertain.")] = 0.1,
    thumbnail: Annotated[int, typer.Option("--thumbnail", metavar="PX", help="Long side of a thumbnail.")] = 240,
) -> None:
    """One HTML page: counts, histogram, top cracks with heat maps, uncertain photos, folders, map."""
    from edge.report import ReportOptions, run_report

    summary = run_report(ReportOptions(results=results, out=out, format=format, base=base, top=top,
                                       uncertain=uncertain, margin=margin, thumbnail=thumbnail))
    typer.echo(summary.line())


@app.command("geojson")
def geojson_command(
    results: ResultsArgument,
    out: Annotated[Path, typer.Option("--out", metavar="FILE.geojson", help="GeoJSON FeatureCollection to write.")],
    format: ResultsFormatOption = None,
) -> None:
    """Photos with a GPS position as GeoJSON points (probability, label, tiles) for QGIS."""
    from edge.geojson import GeoJsonOptions, run_geojson

    typer.echo(run_geojson(GeoJsonOptions(results=results, out=out, format=format)).line())


# the commands whose options a --config file holds: [score] and [stream]
CONFIG_COMMANDS = {"score": score_command, "stream": stream_command}


def main() -> None:
    run_app(app, "crack-edge")
