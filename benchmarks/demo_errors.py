"""Where a model trained on the demo data errs: the error rate on its test split by what the
generator drew into each image (straight joints square to the frame or at a slant, step edges,
paint lines, dark blobs, cast shadows, JPEG), per class. The generator is replayed from the data
folder's .complete marker (seed and size), so only the run and its data folder are needed.

    python -m benchmarks.demo_errors [--run runs/latest]

Reads the run's test_predictions.csv (labels at the run's threshold) and options.json (its data
folder); writes results/demo_errors.json. Not part of `make bench`: it needs a demo run.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from benchmarks.machine import PROJECT, RESULTS_DIR, argument_parser, print_table

NOTHING = "none"  # an image with no distractor (JPEG aside)


def data_folder(layout) -> Path:
    """The data folder a run was trained on (its options.json; relative to the project root when
    the run was started from it)."""
    from training.options import TrainOptions

    data = TrainOptions.from_dict(json.loads(layout.options.read_text(encoding="utf-8"))).data
    if data is None:
        raise ValueError(f"{layout.options} names no data folder")
    return data if data.is_absolute() or not (PROJECT / data).is_dir() else PROJECT / data


def demo_marker(data: Path) -> dict:
    from training.demo_data import COMPLETE_MARKER, GENERATOR_VERSION

    marker_path = data / COMPLETE_MARKER
    if not marker_path.is_file():
        raise ValueError(f"{data} is not demo data made by `crack data demo` (no {COMPLETE_MARKER})")
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    if marker.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(f"{data} was made by generator version {marker.get('generator_version')}, "
                         f"this one is version {GENERATOR_VERSION}: the replay would differ")
    return marker


def error_table(rows: list[dict], seed: int, size: int) -> dict:
    """{class: {distractor: {"images", "wrong"}}} over ``rows`` (test_predictions.csv rows),
    with "all" and NOTHING; an image with two joints counts once per kind."""
    from training.demo_data import parse_file_name, render

    table: dict[str, dict[str, Counter]] = {}
    for row in rows:
        name = Path(row["path"]).name
        parsed = parse_file_name(name)
        if parsed is None:
            raise ValueError(f"{name} is not a demo image name (crack_NNNNN.png, no_crack_NNNNN.png)")
        cls, index = parsed
        drawn = set(render(seed, cls, index, size).distractors)
        wrong = int(row["predicted"]) != int(row["label"])
        kinds = ["all", *sorted(drawn)] + ([NOTHING] if not drawn - {"jpeg"} else [])
        for kind in kinds:
            counts = table.setdefault(cls, {}).setdefault(kind, Counter())
            counts["images"] += 1
            counts["wrong"] += wrong
    return {cls: {kind: dict(counts) for kind, counts in by_kind.items()}
            for cls, by_kind in sorted(table.items())}


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.demo_errors", __doc__)
    parser.add_argument("--run", type=Path, default=PROJECT / "runs" / "latest",
                        help="a `crack train` run on demo data")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo_errors.json", help="results JSON")
    args = parser.parse_args(argv)
    from training.run_layout import RunLayout

    layout = RunLayout(args.run)
    if not layout.test_predictions.is_file() or not layout.options.is_file():
        parser.error(f"{args.run} is not a finished `crack train` run (no test_predictions.csv)")
    try:
        data = data_folder(layout)
        marker = demo_marker(data)
        with layout.test_predictions.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        table = error_table(rows, int(marker["seed"]), int(marker["size"]))
    except (ValueError, KeyError, OSError) as error:
        parser.error(str(error))

    total_wrong = sum(kinds["all"]["wrong"] for kinds in table.values())
    lines = []
    for cls, kinds in table.items():
        for kind, counts in sorted(kinds.items(), key=lambda item: (item[0] != "all", item[0])):
            lines.append([cls, kind, str(counts["images"]), str(counts["wrong"]),
                          f"{counts['wrong'] / counts['images']:.3f}",
                          f"{counts['wrong'] / total_wrong:.2f}" if total_wrong else "-"])
    print_table(["class", "drawn", "images", "wrong", "error rate", "share of all errors"], lines)
    result = {"run": str(args.run.resolve()), "data": str(data), "generator": marker,
              "images": len(rows), "wrong": total_wrong, "by_class": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
