"""Edge throughput of ResNet50V2 at 224x224, fp32 and full int8, on this machine:

- bare interpreter invoke (one preprocessed image per invoke);
- `score`'s pipeline on a folder of real photos (../shared/data/crackforest/image, 480x320 JPEG);
- `stream`'s pipeline on a video file made from those photos, against bare invoke and against
  its limit: the capture thread decodes each frame and makes the model's input of it (colour
  conversion, resize) while the interpreter invokes, but that work shares the cores with the
  interpreter, so the best a frame can take is the bare invoke time plus that preprocessing cost
  spread over the cores (target: stream at least 0.95 of the limit). `stream` runs as it does by
  default (two interpreters side by side on 2+ cores, edge/scoring_pool.py); the same stream with
  one interpreter of every thread (`--interpreters 1`) is measured beside it;
- the naive way: Keras `model.predict` on one frame at a time, as the original project would run
  on a device, and our int8 pipeline's speed-up over it.

    python -m benchmarks.edge_throughput [--size 224] [--images 120] [--repeats 7]

The rates are measured in turns (bare, score, stream preprocessing, stream, one-interpreter
stream) in every round, and
each result is the median over the rounds of the rate next to its bare rate; each round records
how many cores other processes kept busy meanwhile. Weights are random (ImageNet weights cannot
be downloaded here); they do not change the speed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from training import tensorflow_env

tensorflow_env.prepare()  # before anything imports TensorFlow

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.machine import (  # noqa: E402
    RESULTS_DIR,
    SHARED_DATA,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    describe_machine,
    machine_info,
    median_of,
    other_processes_cores,
    print_table,
)

STREAM_LIMIT_TARGET = 0.95  # stream fps / the limit (bare invoke + preprocessing spread over the cores)


def real_photos(limit: int) -> list[Path]:
    folder = SHARED_DATA / "crackforest" / "image"
    photos = sorted(folder.glob("*.jpg"))[:limit]
    if photos:
        return photos
    from edge.bench import write_synthetic_images  # no real data beside the project

    return write_synthetic_images(WORK_DIR / "edge_throughput" / "photos", limit)


def video_from(photos: list[Path], path: Path, frames: int) -> Path:
    """A Motion-JPEG video of ``frames`` frames, the photos in turn (at the first photo's size)."""
    first = cv2.imread(str(photos[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for index in range(frames):
        writer.write(cv2.resize(cv2.imread(str(photos[index % len(photos)])), (width, height)))
    writer.release()
    return path


def stream_preprocessing(video: Path, size: int) -> dict:
    """What the stream spends on each frame besides invoking, on one thread (median ms): decoding
    it from the video, and making the model's input of it (``edge.tiling.prepare_frame``: colour
    conversion and resize, as the capture thread does)."""
    from edge.sources import open_once, parse_source
    from edge.tiling import TileGrid, prepare_frame

    decode, prepare = [], []
    with open_once(parse_source(str(video))) as source:
        while True:
            started = time.perf_counter()
            ok, frame = source.read()
            decoded = time.perf_counter()
            if not ok:
                break
            prepare_frame(frame, TileGrid(), size)
            decode.append((decoded - started) * 1000.0)
            prepare.append((time.perf_counter() - decoded) * 1000.0)
    return {"decode_ms": median_of(decode), "prepare_ms": median_of(prepare)}


def stream_limits(bare_ms: float, decode_ms: float, prepare_ms: float, cores: int) -> dict:
    """The best stream rates the CPU allows: a frame costs the bare invoke time plus its
    preprocessing spread over the cores (the interpreter uses them all). ``stream_limit_fps``
    counts decoding and preparing; ``stream_limit_prepare_only_fps`` only the colour conversion and
    resize that once ran between invokes (a stricter limit: decoding costs CPU too)."""
    return {"stream_limit_fps": 1000.0 / (bare_ms + (decode_ms + prepare_ms) / cores),
            "stream_limit_prepare_only_fps": 1000.0 / (bare_ms + prepare_ms / cores)}


def convert_models(size: int, folder: Path, calibration: np.ndarray):
    """(keras model, {mode: .tflite path}) for a random-weight ResNet50V2 built as training does."""
    from convert.quantize import TFLiteConverterBackend, prepare_calibration
    from edge.atomic_files import write_bytes_atomic
    from training.model import build_classifier

    model, _, _ = build_classifier(size, "none")
    folder.mkdir(parents=True, exist_ok=True)
    backend = TFLiteConverterBackend(model)
    paths = {}
    try:
        for mode in ("fp32", "int8"):
            content = backend.convert(mode, prepare_calibration(calibration, "crackforest photos")
                                      if mode == "int8" else None)
            paths[mode] = folder / f"resnet50v2_{size}_{mode}.tflite"
            write_bytes_atomic(paths[mode], content)  # a running reader keeps its mmap intact
    finally:
        backend.close()
    return model, paths


def keras_one_at_a_time(model, photos: list[Path], size: int, repeats: int) -> float:
    """Frames per second of decode + resize + model.predict on one frame, like a naive loop."""
    from edge.preprocess import load_for_model

    model.predict(load_for_model(photos[0], size)[None].astype("float32"), verbose=0)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for photo in photos:
            model.predict(load_for_model(photo, size)[None].astype("float32"), verbose=0)
        rates.append(len(photos) / (time.perf_counter() - started))
    return float(np.median(rates))


def paired_figures(classifier, model: Path, photos: list[Path], video: Path, threads: int,
                   repeats: int, runs: int) -> dict:
    """Bare invoke, `score`, the stream's preprocessing and `stream`, measured in turns
    ``repeats`` times. A shared machine's speed drifts from minute to minute, so each pipeline rate
    is divided by the bare rate (or the limit) measured next to it, and the medians of those
    ratios are reported."""
    from edge.bench import bare_invoke, files_pipeline, video_pipeline

    cores = os.cpu_count() or 1
    rounds = []
    for _ in range(repeats):
        mark = cpu_mark()
        bare = bare_invoke(classifier, max(5, runs // repeats))
        files = files_pipeline(classifier, photos, 1)
        preprocessing = stream_preprocessing(video, classifier.input_size)
        stream = video_pipeline(model, video, None, 1)  # as `stream` runs by default
        single = video_pipeline(model, video, threads, 1, interpreters=1)  # one interpreter, every thread
        limits = stream_limits(bare["median_ms"], preprocessing["decode_ms"],
                               preprocessing["prepare_ms"], cores)
        rounds.append({"bare_invoke_fps": bare["fps"], "bare_median_ms": bare["median_ms"],
                       "bare_p90_ms": bare["p90_ms"], "score_fps": files["fps"],
                       "stream_fps": stream["fps"], "stream_startup_s": stream["startup_s"],
                       "score_ratio": files["fps"] / bare["fps"],
                       "stream_ratio": stream["fps"] / bare["fps"],
                       "stream_decode_ms": preprocessing["decode_ms"],
                       "stream_prepare_ms": preprocessing["prepare_ms"], **limits,
                       "stream_limit_ratio": stream["fps"] / limits["stream_limit_fps"],
                       "stream_limit_prepare_only_ratio":
                           stream["fps"] / limits["stream_limit_prepare_only_fps"],
                       "stream_one_interpreter_fps": single["fps"],
                       "stream_one_interpreter_limit_ratio": single["fps"] / limits["stream_limit_fps"],
                       "other_processes_cores": other_processes_cores(mark)})
    keys = [key for key in rounds[0] if key != "other_processes_cores"]
    return {key: median_of([r[key] for r in rounds]) for key in keys} | {"rounds": rounds}


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.edge_throughput", __doc__)
    parser.add_argument("--size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--images", type=int, default=120,
                        help="real photos scored by `score` and written into the video for `stream` "
                             "(at most the 118 CrackForest photos)")
    parser.add_argument("--video-frames", type=int, default=240,
                        help="frames of the video `stream` reads (the photos in turn)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of bare, score and stream")
    parser.add_argument("--runs", type=int, default=700, help="bare invokes timed, over all rounds")
    parser.add_argument("--keras-images", type=int, default=20,
                        help="photos for the Keras model.predict one-frame-at-a-time comparison")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "edge_throughput.json", help="results JSON")
    args = parser.parse_args(argv)

    from edge.bench import PIPELINE_TARGET
    from edge.classifier import CrackClassifier
    from edge.preprocess import load_for_model
    from edge.score import ScoreOptions
    from edge.scoring_pool import plan_for

    mark = cpu_mark()
    info = machine_info()
    print(f"machine: {describe_machine(info, load=False)}", flush=True)
    photos = real_photos(args.images)
    work = WORK_DIR / "edge_throughput"
    calibration = np.stack([load_for_model(p, args.size) for p in photos[:16]])
    model, paths = convert_models(args.size, work, calibration)
    video = video_from(photos, work / f"video_{os.getpid()}.avi", args.video_frames)  # a run's own
    result: dict = {"machine": info, "size": args.size, "photos": len(photos),
                    "photo_source": str(photos[0].parent), "video_frames": args.video_frames,
                    "stream_limit": "bare invoke ms + (decode + prepare ms per frame) / cores",
                    "stream_interpreters": len(plan_for(paths["int8"], None, None)),
                    "stream_limit_target": STREAM_LIMIT_TARGET,
                    "score_settings": {"batch_size": ScoreOptions.batch_size,
                                       "decode_workers": ScoreOptions.decode_workers},
                    "variants": {}}
    try:
        for mode, path in paths.items():
            classifier = CrackClassifier(path, threads=info["threads"])
            figures = paired_figures(classifier, path, photos, video, info["threads"], args.repeats, args.runs)
            result["variants"][mode] = {**figures, "size_bytes": path.stat().st_size}
            print(f"{mode}: bare {figures['bare_invoke_fps']:.1f} fps, score {figures['score_fps']:.1f}, "
                  f"stream {figures['stream_fps']:.1f}, stream limit {figures['stream_limit_fps']:.1f}",
                  flush=True)
    finally:
        video.unlink(missing_ok=True)
    keras_fps = keras_one_at_a_time(model, photos[: args.keras_images], args.size, args.repeats)
    result["keras_one_at_a_time_fps"] = keras_fps
    int8 = result["variants"]["int8"]
    result["int8_score_speedup_over_keras"] = int8["score_fps"] / keras_fps
    rows = [[mode, f"{v['bare_median_ms']:.1f}", f"{v['bare_invoke_fps']:.1f}", f"{v['score_fps']:.1f}",
             f"{v['score_ratio']:.2f}", f"{v['stream_fps']:.1f}", f"{v['stream_ratio']:.2f}"]
            for mode, v in result["variants"].items()]
    rows.append(["keras predict, 1 frame", "", "", f"{keras_fps:.1f}", "", "", ""])
    print()
    print_table(["ResNet50V2 " + str(args.size), "invoke ms", "invoke fps", "score fps",
                 "score/bare", "stream fps", "stream/bare"], rows)
    print(f"int8 score pipeline vs Keras one frame at a time: "
          f"{result['int8_score_speedup_over_keras']:.1f}x; pipeline target >= {PIPELINE_TARGET:.2f} of bare invoke")
    print()
    print_table(["stream, " + str(args.size) + " px", "invoke ms", "decode ms", "prepare ms", "limit fps",
                 "stream fps", "stream/bare", "stream/limit", "w/o decode", "1 interp./limit", "other cores"],
                [[mode, f"{v['bare_median_ms']:.2f}", f"{v['stream_decode_ms']:.2f}",
                  f"{v['stream_prepare_ms']:.2f}", f"{v['stream_limit_fps']:.1f}", f"{v['stream_fps']:.1f}",
                  f"{v['stream_ratio']:.3f}", f"{v['stream_limit_ratio']:.3f}",
                  f"{v['stream_limit_prepare_only_ratio']:.3f}",
                  f"{v['stream_one_interpreter_limit_ratio']:.3f}",
                  f"{median_of([r['other_processes_cores'] or 0.0 for r in v['rounds']]):.2f}"]
                 for mode, v in result["variants"].items()])
    print(f"limit per frame = bare invoke (one interpreter, every thread) + (decode + prepare) / "
          f"{os.cpu_count()} cores ('w/o decode': prepare only); stream: `stream` as it runs by default "
          f"({result['stream_interpreters']} interpreters side by side); '1 interp.': --interpreters 1; "
          f"medians over {args.repeats} paired rounds; target stream/limit >= {STREAM_LIMIT_TARGET:.2f}")
    result["machine"] = machine_info(since=mark)
    print(f"machine: {describe_machine(result['machine'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
