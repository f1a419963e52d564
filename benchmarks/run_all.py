"""`make bench`: every benchmark in turn, then the README's Performance table from their results.

    python -m benchmarks.run_all [--skip-real-data]

Each script also runs on its own (python -m benchmarks.<name>) and writes
benchmarks/results/<name>.json. Real-data training takes most of the time (about an hour on 2
cores); --skip-real-data leaves those results as they are.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.machine import argument_parser

STEPS = [
    ("conversion: size and latency per variant", ["benchmarks.bench_convert"]),
    ("edge throughput: bare invoke, score, stream, Keras", ["benchmarks.edge_throughput"]),
    ("survey photos: score on 12 MP JPEGs against its limit", ["benchmarks.survey_photos"]),
    ("live preview: stream with one viewer against none", ["benchmarks.preview_viewer"]),
    ("scaling: 100 / 1,000 / 5,000 images", ["benchmarks.scaling"]),
    ("training input pipeline vs model", ["benchmarks.input_pipeline"]),
    ("real data: surface_crack and crackforest", ["benchmarks.real_data"]),
    ("adapting to a new surface: concrete <-> asphalt", ["benchmarks.adapt_surface"]),
    ("int8 quality on a marginal model and a healthy one", ["benchmarks.int8_marginal"]),
]
REAL_DATA_TRAINING = ("benchmarks.real_data", "benchmarks.adapt_surface")  # --skip-real-data


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("benchmarks.run_all", __doc__)
    parser.add_argument("--skip-real-data", action="store_true",
                        help="skip the real-data training runs (the slow part) and keep their last results")
    args = parser.parse_args(argv)
    failed = []
    for title, module in STEPS:
        if args.skip_real_data and module[0] in REAL_DATA_TRAINING:
            continue
        print(f"\n=== {title} ===", flush=True)
        if subprocess.run([sys.executable, "-m", *module]).returncode:
            failed.append(module[0])
    subprocess.run([sys.executable, "-m", "benchmarks.summary"])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
