"""`crack-edge score` on 12 MP survey photos (4032x3024 JPEG, quality 92), int8 at 224 px, against
its limit:

- decode cost per photo on one thread, before (a full decode, then the resize) and after (the
  JPEG decoded at reduced scale, 1/8 here, as ``edge.preprocess.load_for_model`` does);
- bare invoke (one preprocessed image per invoke);
- the limit per photo: libjpeg still reads every coefficient at 1/8 scale, and on a machine of N
  cores that work competes with the interpreter, so the best a photo can take is the bare invoke
  time plus the reduced decode cost spread over the cores;
- `score`'s rate (in-process ``run_score`` with default options, writing its CSV), its ratio to the
  limit (target at least 0.90) and to bare invoke;
- the same in CPU time, which other processes on a shared machine change far less than the
  rates: CPU ms per photo of bare invoke plus reduced decode against `score`'s (1.0: the pipeline
  wastes nothing; wall-clock rates need the cores free to reach the limit);
- peak memory (resident set of a fresh `crack-edge score` process) on one 12, 24 and 48 MP photo,
  whole and in 2x3 tiles: it stays flat as photos grow;
- with ``--parity-model``: |probability from the reduced decode - from a full decode| of trained
  models on the survey photos, CrackForest photos upscaled to 12 MP and as they are (480x320),
  and the surface_crack test photos (224x224).

    python -m benchmarks.survey_photos [--photos 32] [--rounds 5] [--model M.tflite] [--skip-memory]
        [--parity-model runs/NAME/tflite/model_int8.tflite ...]

The photos are mosaics of the real CrackForest photos at their own resolution (a real photo's
detail and file size, about 3.4 MB, unlike an upscaled photo), written once to benchmarks/work.
The model is edge_throughput's random-weight ResNet50V2 int8 (converted here when missing);
weights do not change the speed. Bare invoke, the decode costs and `score` are measured in turns
in every round, each round's ratios are taken against the figures measured next to them, and
the medians over the rounds are reported, with how many cores other processes kept busy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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

LIMIT_TARGET = 0.90  # score rate / the limit (bare invoke + reduced decode / cores)
QUALITY = 92
PHOTO_SIZE = (3024, 4032)  # 12 MP, height x width
MEMORY_SIZES = {"12 MP": (3024, 4032), "24 MP": (4000, 6000), "48 MP": (6000, 8000)}
DEFAULT_MODEL = WORK_DIR / "edge_throughput" / "resnet50v2_224_int8.tflite"
WORK = WORK_DIR / "survey_photos"


def source_photos() -> list[np.ndarray]:
    """The real photos the survey photos are made of, all landscape (or noise without them)."""
    paths = sorted((SHARED_DATA / "crackforest" / "image").glob("*.jpg"))
    photos = [cv2.imread(str(path)) for path in paths]
    photos = [photo if photo.shape[0] <= photo.shape[1] else cv2.transpose(photo) for photo in photos]
    if photos:
        return photos
    rng = np.random.default_rng(0)
    return [cv2.GaussianBlur(rng.integers(0, 256, (320, 480, 3), np.uint8), (3, 3), 0)]


def mosaic(photos: list[np.ndarray], height: int, width: int, first: int) -> np.ndarray:
    """A ``height`` x ``width`` picture tiled from the photos at their own size, from ``first``."""
    tile_h, tile_w = photos[0].shape[:2]
    rows, cols = -(-height // tile_h), -(-width // tile_w)
    picked = [cv2.resize(photos[(first + i) % len(photos)], (tile_w, tile_h))
              for i in range(rows * cols)]
    grid = np.vstack([np.hstack(picked[r * cols:(r + 1) * cols]) for r in range(rows)])
    return np.ascontiguousarray(grid[:height, :width])


def write_photos(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """``count`` distinct JPEGs of ``height`` x ``width`` at QUALITY (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"survey_{width}x{height}_{i:03d}.jpg" for i in range(count)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        photos = source_photos()
        for index, path in enumerate(paths):
            if path in missing:
                image = mosaic(photos, height, width, first=index * 7)
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
                assert ok
                path.write_bytes(data.tobytes())
    return paths


def int8_model(size: int, photos: list[Path]) -> Path:
    """edge_throughput's int8 model at ``size``, converted into this benchmark's folder if missing."""
    existing = WORK_DIR / "edge_throughput" / f"resnet50v2_{size}_int8.tflite"
    if existing.is_file():
        return existing
    from benchmarks.edge_throughput import convert_models
    from edge.preprocess import load_for_model

    calibration = np.stack([load_for_model(path, size) for path in photos[:16]])
    return convert_models(size, WORK / "models", calibration)[1]["int8"]


def decode_costs(photos: list[Path], size: int) -> dict:
    """Median ms per photo on one thread: the full decode and resize `score` used to do, and the
    reduced decode ``load_for_model`` does now (file read, header and EXIF included in both)."""
    from edge.preprocess import ImageFile, frame_to_rgb, load_for_model, resize_for_model

    full, reduced, reduced_cpu = [], [], []
    for path in photos:
        started = time.perf_counter()
        with ImageFile(path) as image:
            frame_to_rgb(resize_for_model(image.decode_stored(1), size))
        middle, cpu = time.perf_counter(), process_cpu_ms()
        load_for_model(path, size)
        reduced.append((time.perf_counter() - middle) * 1000.0)
        reduced_cpu.append(process_cpu_ms() - cpu)
        full.append((middle - started) * 1000.0)
    with ImageFile(photos[0]) as image:
        reduction = image.reduction_for(min(image.upright_size), size)
    return {"full_decode_ms": median_of(full), "reduced_decode_ms": median_of(reduced),
            "reduced_decode_cpu_ms": median_of(reduced_cpu), "reduction": reduction}


def process_cpu_ms() -> float:
    """CPU time this process (all its threads) has used, in ms."""
    return time.process_time() * 1000.0


def score_rate(model: Path, folder: Path, out: Path) -> dict:
    """`crack-edge score` with default options, in-process: photos per second and its summary."""
    from edge.score import ScoreOptions, run_score

    cpu = process_cpu_ms()
    summary = run_score(ScoreOptions(model=model, inputs=(str(folder),), out=out, overwrite=True,
                                     show_progress=False), say=lambda line: None)
    if summary.errors:
        raise SystemExit(f"error: {summary.errors} photo(s) failed to score; see {out}")
    return {"score_fps": summary.images_per_second, "threads": summary.threads,
            "score_cpu_ms": (process_cpu_ms() - cpu) / summary.scored}


def paired_rounds(model: Path, photos: list[Path], folder: Path, rounds: int, runs: int,
                  decode_photos: int) -> dict:
    from edge.bench import bare_invoke
    from edge.classifier import CrackClassifier

    classifier = CrackClassifier(model)
    cores = os.cpu_count() or 1
    results = []
    for index in range(rounds):
        mark, cpu = cpu_mark(), process_cpu_ms()
        bare = bare_invoke(classifier, runs)
        bare_cpu_ms = (process_cpu_ms() - cpu) / (runs + 3)  # bare_invoke warms up with 3
        costs = decode_costs(photos[:decode_photos], classifier.input_size)
        scored = score_rate(model, folder, WORK / f"results_{os.getpid()}.csv")
        limit_ms = bare["median_ms"] + costs["reduced_decode_ms"] / cores
        limit_fps = 1000.0 / limit_ms
        results.append({"bare_median_ms": bare["median_ms"], "bare_fps": bare["fps"], **costs,
                        "limit_ms": limit_ms, "limit_fps": limit_fps, **scored,
                        "score_limit_ratio": scored["score_fps"] / limit_fps,
                        "score_bare_ratio": scored["score_fps"] / bare["fps"],
                        "decode_speedup": costs["full_decode_ms"] / costs["reduced_decode_ms"],
                        "bare_cpu_ms": bare_cpu_ms,
                        "score_cpu_ratio": (bare_cpu_ms + costs["reduced_decode_cpu_ms"])
                        / max(scored["score_cpu_ms"], 1e-9),
                        "other_processes_cores": other_processes_cores(mark)})
        print(f"round {index + 1}: bare {bare['median_ms']:.1f} ms, decode full "
              f"{costs['full_decode_ms']:.1f} ms / reduced {costs['reduced_decode_ms']:.1f} ms, "
              f"score {scored['score_fps']:.1f} photos/s = {results[-1]['score_limit_ratio']:.2f} "
              f"of the limit {limit_fps:.1f}; other processes "
              f"{results[-1]['other_processes_cores']} cores", flush=True)
    keys = [key for key in results[0] if key not in ("other_processes_cores", "reduction", "threads")]
    return ({key: median_of([r[key] for r in results]) for key in keys}
            | {"reduction": results[0]["reduction"], "threads": results[0]["threads"],
               "input_size": classifier.input_size, "rounds": results})


def upscaled_photos(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """The first ``count`` CrackForest photos upscaled to ``height`` x ``width``, JPEG QUALITY."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted((SHARED_DATA / "crackforest" / "image").glob("*.jpg"))[:count]:
        path = folder / f"{source.stem}_{width}x{height}.jpg"
        if not path.is_file():
            image = cv2.imread(str(source))
            if image.shape[0] > image.shape[1]:
                image = cv2.transpose(image)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
            assert ok
            path.write_bytes(data.tobytes())
        paths.append(path)
    return paths


def decode_parity(model: Path, sets: dict[str, list[Path]]) -> dict:
    """|probability from the reduced decode - probability from a full decode| per set of photos:
    what a model trained on full decodes sees change (max, mean, and the reduction used)."""
    from edge.classifier import CrackClassifier
    from edge.preprocess import ImageFile, load_for_model, load_image, resize_for_model

    classifier = CrackClassifier(model)
    size = classifier.input_size
    figures = {}
    for name, photos in sets.items():
        if not photos:
            continue
        reduced = classifier.predict(np.stack([load_for_model(p, size) for p in photos]))
        full = classifier.predict(np.stack([resize_for_model(load_image(p), size) for p in photos]))
        gaps = np.abs(np.asarray(reduced, float) - np.asarray(full, float))
        with ImageFile(photos[0]) as image:
            reduction = image.reduction_for(min(image.upright_size), size)
        figures[name] = {"photos": len(photos), "reduction": reduction,
                         "max_abs_dp": float(gaps.max()), "mean_abs_dp": float(gaps.mean()),
                         "labels_changed": int(np.sum((np.asarray(reduced) >= classifier.contract.threshold)
                                                      != (np.asarray(full) >= classifier.contract.threshold)))}
    return {"model": str(model), "input_size": size, "sets": figures}


MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
sys.stderr.buffer.write(stderr)
"""


def peak_memory_mb(model: Path, photo: Path, out: Path, tiles: str | None) -> float:
    """Peak resident memory of a fresh `crack-edge score` process on one photo. A small helper
    process starts it and reads its own peak with wait4 (a child of this big process would
    report this process's peak: Linux folds the forking parent's memory into it)."""
    args = [sys.executable, "-m", "edge", "score", "--model", str(model), str(photo),
            "--out", str(out), "--overwrite", "--no-progress"]
    if tiles:
        args += ["--tiles", tiles]
    helper = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True,
                            timeout=600)
    code, peak_kb = map(int, helper.stdout.split())
    if code != 0:
        raise SystemExit(f"error: crack-edge score failed on {photo} ({code}): {helper.stderr.strip()}")
    return peak_kb / 1024


def memory_figures(model: Path, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    figures = []
    for name, (height, width) in sizes.items():
        (photo,) = write_photos(WORK / "memory", 1, height, width)
        row = {"photo": name, "width": width, "height": height,
               "file_mb": photo.stat().st_size / 1e6}
        for tiles in (None, "2x3"):
            key = "peak_mb_tiles_2x3" if tiles else "peak_mb"
            row[key] = peak_memory_mb(model, photo, WORK / "memory.csv", tiles)
        figures.append(row)
        print(f"{name} ({width}x{height}, {row['file_mb']:.1f} MB): peak {row['peak_mb']:.0f} MB, "
              f"in 2x3 tiles {row['peak_mb_tiles_2x3']:.0f} MB", flush=True)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.survey_photos", __doc__)
    parser.add_argument("--photos", type=int, default=32, help="12 MP photos `score` reads per round")
    parser.add_argument("--decode-photos", type=int, default=6,
                        help="photos timed for the decode costs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of bare, decode and score")
    parser.add_argument("--runs", type=int, default=60, help="bare invokes timed per round")
    parser.add_argument("--size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--model", type=Path, default=None,
                        help="int8 .tflite to score with (default: edge_throughput's, converted "
                             "here when missing)")
    parser.add_argument("--photo-size", type=int, nargs=2, default=PHOTO_SIZE,
                        metavar=("HEIGHT", "WIDTH"), help="size of the survey photos")
    parser.add_argument("--parity-model", type=Path, action="append", default=[],
                        help="a trained .tflite whose probabilities from reduced and full decodes "
                             "are compared (repeatable; the random-weight benchmark model's output "
                             "barely moves, so it is not)")
    parser.add_argument("--parity-photos", type=int, default=200,
                        help="at most this many photos of each set in the comparison")
    parser.add_argument("--skip-memory", action="store_true",
                        help="leave out the peak memory on 12, 24 and 48 MP photos")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "survey_photos.json",
                        help="results JSON")
    args = parser.parse_args(argv)
    if min(args.photo_size) < 1 or args.photos < 1 or args.rounds < 1:
        raise SystemExit("error: --photos, --rounds and --photo-size must be positive")
    return run(args)


def run(args: argparse.Namespace) -> dict:
    mark = cpu_mark()
    print(f"machine: {describe_machine(machine_info(), load=False)}", flush=True)
    height, width = args.photo_size
    folder = WORK / f"photos_{width}x{height}_{args.photos}"
    photos = write_photos(folder, args.photos, height, width)
    model = args.model or int8_model(args.size, photos)
    figures = paired_rounds(model, photos, folder, args.rounds, args.runs,
                            min(args.decode_photos, len(photos)))
    memory = [] if args.skip_memory else memory_figures(model, MEMORY_SIZES)
    real = SHARED_DATA / "crackforest" / "image", SHARED_DATA / "surface_crack" / "test"
    parity_sets = {"survey mosaics": photos,
                   "CrackForest upscaled": upscaled_photos(WORK / "upscaled", args.parity_photos,
                                                           height, width) if args.parity_model else [],
                   "CrackForest 480x320 as is": sorted(real[0].glob("*.jpg")),
                   "surface_crack test 224x224": sorted(real[1].glob("*/*.jpg"))}
    parity = [decode_parity(m, {name: paths[:args.parity_photos] for name, paths in parity_sets.items()})
              for m in args.parity_model]
    result = {"model": str(model), "photos": len(photos), "photo_size": [width, height],
              "photo_mb": median_of([p.stat().st_size / 1e6 for p in photos]),
              "photo_source": "mosaics of crackforest/image at their own resolution, JPEG q92",
              "limit": "bare invoke ms + reduced decode ms / cores", "limit_target": LIMIT_TARGET,
              **figures, "peak_memory": memory, "decode_parity": parity}
    cores = os.cpu_count() or 1
    print()
    print_table([f"{width}x{height} photo, {figures['input_size']} px", "median of rounds"], [
        ["decode before (full), ms", f"{figures['full_decode_ms']:.1f}"],
        [f"decode after (1/{figures['reduction']}), ms", f"{figures['reduced_decode_ms']:.1f}"],
        ["decode speed-up", f"{figures['decode_speedup']:.1f}x"],
        ["bare invoke, ms", f"{figures['bare_median_ms']:.1f}"],
        [f"limit = bare + reduced decode / {cores} cores, ms", f"{figures['limit_ms']:.1f}"],
        ["limit, photos/s", f"{figures['limit_fps']:.1f}"],
        ["score, photos/s", f"{figures['score_fps']:.1f}"],
        [f"score / limit (target >= {LIMIT_TARGET:.2f})", f"{figures['score_limit_ratio']:.2f}"],
        ["score / bare invoke", f"{figures['score_bare_ratio']:.2f}"],
        ["CPU ms per photo: bare invoke + reduced decode",
         f"{figures['bare_cpu_ms']:.1f} + {figures['reduced_decode_cpu_ms']:.1f}"],
        ["CPU ms per photo: score", f"{figures['score_cpu_ms']:.1f}"],
        ["(bare + decode CPU) / score CPU", f"{figures['score_cpu_ratio']:.2f}"],
        ["other processes' cores meanwhile", f"{median_of([r['other_processes_cores'] or 0.0 for r in figures['rounds']]):.2f}"]])
    if memory:
        print()
        print_table(["photo", "file MB", "peak MB", "peak MB, 2x3 tiles"],
                    [[m["photo"], f"{m['file_mb']:.1f}", f"{m['peak_mb']:.0f}",
                      f"{m['peak_mb_tiles_2x3']:.0f}"] for m in memory])
    if parity:
        print()
        print_table(["|p reduced - p full|", "model", "px", "photos", "reduction", "max",
                     "mean", "labels changed"],
                    [[name, "/".join(Path(check["model"]).parts[-3:]), str(check["input_size"]),
                      str(f["photos"]), f"1/{f['reduction']}", f"{f['max_abs_dp']:.4f}",
                      f"{f['mean_abs_dp']:.4f}", str(f["labels_changed"])]
                     for check in parity for name, f in check["sets"].items()])
    result["machine"] = machine_info(since=mark)
    print(f"machine: {describe_machine(result['machine'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
