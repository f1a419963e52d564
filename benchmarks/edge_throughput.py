"""Edge throughput of ResNet50V2 at 224x224, fp32 and full int8, on this machine:

- bare interpreter invoke (one preprocessed image per invoke);
- `score`'s pipeline on a folder of real photos (../shared/data/crackforest/image, 480x320 JPEG);
- `stream`'s pipeline on a video file made from those photos;
- the naive way: Keras `model.predict` on one frame at a time, as the original project would run
  on a device, and our int8 pipeline's speed-up over it.

    python -m benchmarks.edge_throughput [--size 224] [--images 120] [--repeats 5]

Weights are random (ImageNet weights cannot be downloaded here); they do not change the speed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    print_table,
)


def real_photos(limit: int) -> list[Path]:
    folder = SHARED_DATA / "crackforest" / "image"
    photos = sorted(folder.glob("*.jpg"))[:limit]
    if photos:
        return photos
    from edge.bench import write_synthetic_images  # no real data beside the project

    return write_synthetic_images(WORK_DIR / "edge_throughput" / "photos", limit)


def video_from(photos: list[Path], path: Path) -> Path:
    first = cv2.imread(str(photos[0]))
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for photo in photos:
        writer.write(cv2.resize(cv2.imread(str(photo)), (width, height)))
    writer.release()
    return path


def convert_models(size: int, folder: Path, calibration: np.ndarray):
    """(keras model, {mode: .tflite path}) for a random-weight ResNet50V2 built as training does."""
    from convert.quantize import TFLiteConverterBackend, prepare_calibration
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
            paths[mode].write_bytes(content)
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
    """Bare invoke, `score` and `stream`, measured in turns ``repeats`` times. A shared machine's
    speed drifts from minute to minute, so each pipeline rate is divided by the bare rate measured
    next to it, and the medians of those ratios are reported."""
    from edge.bench import bare_invoke, files_pipeline, video_pipeline

    rounds = []
    for _ in range(repeats):
        bare = bare_invoke(classifier, max(5, runs // repeats))
        files = files_pipeline(classifier, photos, 1)
        stream = video_pipeline(model, video, threads, 1)
        rounds.append({"bare_invoke_fps": bare["fps"], "bare_median_ms": bare["median_ms"],
                       "bare_p90_ms": bare["p90_ms"], "score_fps": files["fps"],
                       "stream_fps": stream["fps"], "stream_startup_s": stream["startup_s"],
                       "score_ratio": files["fps"] / bare["fps"],
                       "stream_ratio": stream["fps"] / bare["fps"]})
    return {key: median_of([r[key] for r in rounds]) for key in rounds[0]} | {"rounds": rounds}


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.edge_throughput", __doc__)
    parser.add_argument("--size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--images", type=int, default=120,
                        help="real photos scored by `score` and written into the video for `stream` "
                             "(at most the 118 CrackForest photos)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of bare, score and stream")
    parser.add_argument("--runs", type=int, default=50, help="bare invokes timed, over all rounds")
    parser.add_argument("--keras-images", type=int, default=20,
                        help="photos for the Keras model.predict one-frame-at-a-time comparison")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "edge_throughput.json", help="results JSON")
    args = parser.parse_args(argv)

    from edge.bench import PIPELINE_TARGET
    from edge.classifier import CrackClassifier
    from edge.preprocess import load_for_model
    from edge.score import ScoreOptions

    mark = cpu_mark()
    info = machine_info()
    print(f"machine: {describe_machine(info, load=False)}", flush=True)
    photos = real_photos(args.images)
    work = WORK_DIR / "edge_throughput"
    calibration = np.stack([load_for_model(p, args.size) for p in photos[:16]])
    model, paths = convert_models(args.size, work, calibration)
    video = video_from(photos, work / "photos.avi")
    result: dict = {"machine": info, "size": args.size, "photos": len(photos),
                    "photo_source": str(photos[0].parent),
                    "score_settings": {"batch_size": ScoreOptions.batch_size,
                                       "decode_workers": ScoreOptions.decode_workers},
                    "variants": {}}
    for mode, path in paths.items():
        classifier = CrackClassifier(path, threads=info["threads"])
        figures = paired_figures(classifier, path, photos, video, info["threads"], args.repeats, args.runs)
        result["variants"][mode] = {**figures, "size_bytes": path.stat().st_size}
        print(f"{mode}: bare {figures['bare_invoke_fps']:.1f} fps, score {figures['score_fps']:.1f}, "
              f"stream {figures['stream_fps']:.1f}", flush=True)
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
    result["machine"] = machine_info(since=mark)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
