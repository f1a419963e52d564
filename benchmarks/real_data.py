"""Real cracks, end to end: train from random initialisation, convert to every TFLite mode and
report Keras and each variant on the same held-out photos.

    python -m benchmarks.real_data --set surface_crack   # the original project's data and roles
    python -m benchmarks.real_data --set crackforest     # CrackForest cut into patches, split by photo

Runs the real commands (`crack data patches`, `crack train`, `crack convert`) as a user would,
then reads their metrics.json and tflite/report.json into benchmarks/results/real_data_<set>.json.
ImageNet weights cannot be downloaded on the benchmark machine, so every run here starts from
random initialisation; with ImageNet weights (the original project's setting) expect better.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import (
    RESULTS_DIR,
    SHARED_DATA,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    machine_info,
    print_table,
)

# The original project's published figures on surface_crack/valid (200 images), ImageNet weights.
ORIGINAL_PROJECT = {"accuracy": 0.985, "precision": 0.980, "recall": 0.990, "f1": 0.985}
SETS = {
    # train on train/, validate on test/, report on valid/: the original project's roles
    "surface_crack": {"img_size": 96, "epochs": 12, "batch_size": 16, "head_epochs": 0},
    "crackforest": {"img_size": 64, "epochs": 4, "batch_size": 32, "head_epochs": 0,
                    "patch_size": 64, "patch_stride": 48},
}


def crack(*args: str) -> int:
    command = [sys.executable, "-m", "convert", *args]  # `crack`
    print("$ crack " + " ".join(args), flush=True)
    return subprocess.run(command).returncode


def prepare(name: str, settings: dict, work: Path) -> tuple[Path, list[str]]:
    """The --data folder and the extra `crack train` options for a set."""
    source = SHARED_DATA / name
    if not source.is_dir():
        raise SystemExit(f"error: {source} not found (the shared real data sits beside the project)")
    if name == "surface_crack":
        return source, ["--val-split", "test", "--test-split", "valid"]
    patches = work / "crackforest_patches"
    if not (patches / "patches.csv").is_file():
        code = crack("data", "patches", "--images", str(source / "image"), "--masks",
                     str(source / "mask"), "--out", str(patches), "--size",
                     str(settings["patch_size"]), "--stride", str(settings["patch_stride"]),
                     "--overwrite")
        if code:
            raise SystemExit(f"error: crack data patches failed ({code})")
    return patches, ["--group-by-source"]


def unfinished_run_with(run: Path, settings: dict) -> bool:
    """True when an earlier benchmark run with the same settings stopped before its metrics.

    A real-data run trains for half an hour or more; if it is killed, `crack train --resume`
    goes on from the last finished epoch instead of starting over (its train_seconds then
    count only the resumed part).
    """
    if (run / "metrics.json").is_file() or not (run / "options.json").is_file():
        return False
    options = json.loads((run / "options.json").read_text())
    return all(options.get(key) == settings[key]
               for key in ("img_size", "epochs", "head_epochs", "batch_size"))


def run_set(name: str, settings: dict, work: Path, fresh: bool = False) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    data, extra = prepare(name, settings, work)
    runs = work / "runs"
    run = runs / f"bench-{name}"
    started = time.perf_counter()
    resumed = not fresh and unfinished_run_with(run, settings)
    if resumed:
        print(f"{run} was interrupted; resuming it (pass --fresh to start over)", flush=True)
        code = crack("train", "--resume", str(run))
    else:
        shutil.rmtree(run, ignore_errors=True)
        code = crack("train", "--data", str(data), "--runs-dir", str(runs), "--name", run.name,
                     "--weights", "none", "--img-size", str(settings["img_size"]),
                     "--epochs", str(settings["epochs"]), "--head-epochs", str(settings["head_epochs"]),
                     "--batch-size", str(settings["batch_size"]), "--patience", "6", *extra)
    train_seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"error: crack train failed ({code})")
    started = time.perf_counter()
    convert_code = crack("convert", "--run", str(run))
    convert_seconds = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "tflite" / "report.json").read_text())
    keys = ("accuracy", "precision", "recall", "f1", "roc_auc")
    rows = [{"model": "keras", **{k: metrics[k] for k in keys}, "size_bytes": report["keras"]["size_bytes"],
             "passed": None}]
    for variant in report["variants"]:
        if variant.get("metrics") is None:
            rows.append({"model": variant["mode"], "error": variant.get("error"), "passed": False})
            continue
        rows.append({"model": variant["mode"], **{k: variant["metrics"][k] for k in keys},
                     "size_bytes": variant["size_bytes"], "passed": variant["gate"]["passed"],
                     "agreement": variant["comparison"]["agreement"],
                     "median_ms": variant["latency"]["median_ms"]})
    int8 = next((r for r in rows if r["model"] == "int8" and "accuracy" in r), None)
    return {
        "set": name,
        "settings": settings,
        "weights": "none (random initialisation; ImageNet weights cannot be downloaded here)",
        "split_sizes": metrics["split_sizes"],
        "majority_baseline_accuracy": metrics["majority_baseline_accuracy"],
        "threshold": metrics["threshold"],
        "rows": rows,
        "int8_accuracy_drop_pp": (metrics["accuracy"] - int8["accuracy"]) * 100 if int8 else None,
        "convert_exit_code": convert_code,
        "recommended": report["recommended"],
        "train_seconds": round(train_seconds, 1),
        "train_resumed": resumed,
        "convert_seconds": round(convert_seconds, 1),
        "original_project": ORIGINAL_PROJECT if name == "surface_crack" else None,
        "run": str(run),
    }


def show(result: dict) -> None:
    print(f"\n{result['set']}: test {result['split_sizes']['test']} images, "
          f"majority-class baseline {result['majority_baseline_accuracy']:.3f}, "
          f"{result['weights']}; trained in {result['train_seconds'] / 60:.1f} min"
          f"{' (the resumed part only)' if result['train_resumed'] else ''}")
    table = [[r["model"], *(f"{r[k]:.3f}" if r.get(k) is not None else "-"
                            for k in ("accuracy", "precision", "recall", "f1", "roc_auc")),
              {True: "pass", False: "FAIL", None: ""}[r["passed"]]] for r in result["rows"]]
    if result["original_project"]:
        o = result["original_project"]
        table.append(["original (ImageNet)", f"{o['accuracy']:.3f}", f"{o['precision']:.3f}",
                      f"{o['recall']:.3f}", f"{o['f1']:.3f}", "-", ""])
    print_table(["model", "accuracy", "precision", "recall", "F1", "ROC AUC", "gate"], table)
    if result["int8_accuracy_drop_pp"] is not None:
        print(f"int8 accuracy change against Keras: {0.0 - result['int8_accuracy_drop_pp']:+.2f} pp")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("benchmarks.real_data", __doc__)
    parser.add_argument("--set", choices=sorted(SETS), action="append",
                        help="data set (repeatable; default both)")
    parser.add_argument("--epochs", type=int, help="override the set's epochs")
    parser.add_argument("--img-size", type=int, help="override the set's image size")
    parser.add_argument("--work", type=Path, default=WORK_DIR / "real_data",
                        help="scratch folder for patches and training runs (kept, so a run can resume)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over even if an interrupted run with the same settings exists")
    args = parser.parse_args(argv)
    for name in args.set or sorted(SETS):
        settings = dict(SETS[name])
        if args.epochs:
            settings["epochs"] = args.epochs
        if args.img_size:
            settings["img_size"] = args.img_size
        mark = cpu_mark()
        figures = run_set(name, settings, args.work, args.fresh)
        result = {"machine": machine_info(since=mark), **figures}
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"real_data_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        show(result)


if __name__ == "__main__":
    main()
