"""`score` cost against the amount of work: 100, 1,000 and 5,000 images (224x224 crops cut from
the CrackForest photos), each scored in a fresh process; time per image should stay flat (linear
total time) and so should peak memory.

    python -m benchmarks.scaling [--counts 100 1000 5000] [--model M.tflite]

Without --model, the int8 ResNet50V2 made by benchmarks.edge_throughput is used (run it first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.machine import (
    RESULTS_DIR,
    SHARED_DATA,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    machine_info,
    print_table,
)

CROP = 224
DEFAULT_MODEL = WORK_DIR / "edge_throughput" / "resnet50v2_224_int8.tflite"


def make_crops(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEG crops cut at random places from the real photos (or from noise without them)."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) == count:
        return folder
    for path in existing:
        path.unlink()
    photos = [cv2.imread(str(p)) for p in sorted((SHARED_DATA / "crackforest" / "image").glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    if not photos:
        photos = [rng.integers(0, 255, (320, 480, 3), np.uint8)]
    for i in range(count):
        photo = photos[i % len(photos)]
        y = int(rng.integers(0, photo.shape[0] - CROP + 1))
        x = int(rng.integers(0, photo.shape[1] - CROP + 1))
        cv2.imwrite(str(folder / f"crop_{i:05d}.jpg"), photo[y:y + CROP, x:x + CROP])
    return folder


def child(model: Path, folder: Path, out: Path) -> None:
    """Runs in its own process: score the folder and print seconds and peak RSS as JSON."""
    import resource

    from edge.score import ScoreOptions, run_score

    started = time.perf_counter()
    summary = run_score(ScoreOptions(model=model, inputs=(str(folder),), out=out, overwrite=True,
                                     show_progress=False), say=lambda line: None)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "scored": summary.scored, "errors": summary.errors,
                      "peak_rss_mb": peak_kb / 1024}))


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.scaling", __doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000, 5000], help="images per `score` run")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="TFLite model to score with (edge_throughput writes the default)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scaling.json", help="results JSON")
    args = parser.parse_args(argv)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
        return {}
    if not args.model.is_file():
        raise SystemExit(f"error: model {args.model} not found; run python -m benchmarks.edge_throughput "
                         "first or pass --model")
    mark = cpu_mark()
    rows, results = [], []
    for count in args.counts:
        folder = make_crops(WORK_DIR / "scaling" / f"crops_{count}", count)
        out = WORK_DIR / "scaling" / f"results_{count}.csv"
        completed = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--child",
                                    str(args.model), str(folder), str(out)],
                                   capture_output=True, text=True, check=True)
        measured = json.loads(completed.stdout.strip().splitlines()[-1])
        measured.update(count=count, ms_per_image=measured["seconds"] * 1000 / count)
        results.append(measured)
        rows.append([count, f"{measured['seconds']:.1f}", f"{measured['ms_per_image']:.2f}",
                     f"{measured['peak_rss_mb']:.0f}"])
        print(f"{count} images: {measured['seconds']:.1f} s, peak {measured['peak_rss_mb']:.0f} MB", flush=True)
    print_table(["images", "seconds", "ms/image", "peak RSS MB"], rows)
    result = {"machine": machine_info(since=mark), "model": str(args.model), "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
