"""Adapting to a new surface with a few labelled photos: concrete -> asphalt and asphalt -> concrete.

    python -m benchmarks.adapt_surface                 # 10, 20 and 50 labelled images per class
    python -m benchmarks.adapt_surface --sizes 50      # one size only

The two surfaces of ../shared/data: concrete (surface_crack) and asphalt (CrackForest cut into
64 px patches with `crack data patches`, split by photo: every fifth photo is asphalt's test set).
A source model per surface is trained once from random initialisation at 64 px (`crack train`;
kept in benchmarks/work/adapt_surface/runs and reused). Then, for each direction and each N:

    before        the source model on the target's test images, at its own threshold
    recalibrated  the source model, threshold chosen on the N + N labelled target images as
                  `crack calibrate` chooses it (best F1 if clearly better there, else kept)
    adapted       `crack train --init SOURCE` on the N + N images (the default small-data recipe)
    from scratch  `crack train --weights none` on the same N + N images, as many epochs

The labelled images are split per class into training and validation (a fifth, at least 2) as a
user's run would split them; the test set is the same for every row. The CPU time of each
training is its process's user + system time. Target: with 50 per class, adapted at least 10
points above before and above from scratch, in at most 5 minutes of CPU.
Results: benchmarks/results/adapt_surface.json.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import RESULTS_DIR, SHARED_DATA, WORK_DIR, argument_parser, cpu_mark, machine_info, print_table

IMG_SIZE = 64
PATCH_STRIDE = 48
ASPHALT_TEST_EVERY = 5  # photo number % 5 == 0: asphalt's test photos
ASPHALT_SOURCE_PER_CLASS = 700  # patches per class the asphalt source model trains on
TEST_PER_CLASS = 200
SIZES = (10, 20, 50)
SOURCE_TRAINING = ["--weights", "none", "--img-size", str(IMG_SIZE), "--epochs", "10", "--head-epochs", "0",
                   "--batch-size", "32", "--patience", "6"]
FEW_BATCH = "16"
SCRATCH_EPOCHS = 13  # the adapted run's 3 head + 10 fine-tuning epochs
TARGET_CPU_SECONDS = 300
TARGET_GAIN = 0.10


def crack(*args: str) -> tuple[int, float]:
    """Run `crack ARGS`; (exit code, CPU seconds it used)."""
    print("$ crack " + " ".join(args), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = subprocess.run([sys.executable, "-m", "convert", *args]).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return code, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def link_all(items: list[tuple[Path, int]], folder: Path) -> None:
    """crack/ and no_crack/ below ``folder``, holding symbolic links to ``items``."""
    for name in ("crack", "no_crack"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for path, label in items:
        (folder / ("crack" if label else "no_crack") / path.name).symlink_to(path.resolve())


def sample(items: list[tuple[Path, int]], per_class: int, rng: np.random.Generator) -> list[tuple[Path, int]]:
    chosen = []
    for label in (1, 0):
        pool = [item for item in items if item[1] == label]
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), min(per_class, len(pool)), replace=False))]
    return chosen


class Surfaces:
    """Where each surface's images are: the pool labelled images are drawn from, the test set,
    and the data folder its source model trains on."""

    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        rng = np.random.default_rng(seed)
        concrete = SHARED_DATA / "surface_crack"
        if not concrete.is_dir() or not (SHARED_DATA / "crackforest").is_dir():
            raise SystemExit(f"error: the shared data is not at {SHARED_DATA}")
        self.pool = {"concrete": [(p, 1) for p in images_in(concrete / "train" / "Positive")]
                     + [(p, 0) for p in images_in(concrete / "train" / "Negative")]}
        self.test = {"concrete": [(p, 1) for p in images_in(concrete / "valid" / "Positive")]
                     + [(p, 0) for p in images_in(concrete / "valid" / "Negative")]}
        self.source_data = {"concrete": (concrete, ["--val-split", "test", "--test-split", "valid"])}
        patches = self._asphalt_patches()
        is_test = lambda path: int(path.name.split("__")[0]) % ASPHALT_TEST_EVERY == 0  # noqa: E731
        everything = [(p, 1) for p in images_in(patches / "crack")] + [(p, 0) for p in images_in(patches / "no_crack")]
        self.pool["asphalt"] = [item for item in everything if not is_test(item[0])]
        self.test["asphalt"] = sample([item for item in everything if is_test(item[0])], TEST_PER_CLASS, rng)
        source = work / "asphalt_source"
        if not source.is_dir():
            link_all(sample(self.pool["asphalt"], ASPHALT_SOURCE_PER_CLASS, rng), source)
        self.source_data["asphalt"] = (source, ["--group-by-source"])

    def _asphalt_patches(self) -> Path:
        patches = self.work / "crackforest_patches"
        if not (patches / "patches.csv").is_file():
            code, _ = crack("data", "patches", "--images", str(SHARED_DATA / "crackforest" / "image"),
                            "--masks", str(SHARED_DATA / "crackforest" / "mask"), "--out", str(patches),
                            "--size", str(IMG_SIZE), "--stride", str(PATCH_STRIDE), "--overwrite")
            if code:
                raise SystemExit(f"error: crack data patches failed ({code})")
        return patches

    def few(self, target: str, per_class: int, seed: int) -> Path:
        """train/ val/ test/ for N labelled target images per class; test/ is the target's test set."""
        folder = self.work / "few" / f"{target}-{per_class}-seed{seed}"
        if folder.is_dir():
            return folder
        chosen = sample(self.pool[target], per_class, np.random.default_rng([seed, per_class]))
        val_count = max(2, per_class // 5)
        for label in (1, 0):
            mine = [item for item in chosen if item[1] == label]
            link_all(mine[val_count:], folder / "train")
            link_all(mine[:val_count], folder / "val")
        link_all(self.test[target], folder / "test")
        return folder


def source_run(surfaces: Surfaces, surface: str, runs: Path) -> Path:
    run = runs / f"source-{surface}"
    if (run / "metrics.json").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    data, extra = surfaces.source_data[surface]
    code, _ = crack("train", "--data", str(data), "--runs-dir", str(runs), "--name", run.name,
                    *SOURCE_TRAINING, *extra)
    if code:
        raise SystemExit(f"error: training the {surface} source model failed ({code})")
    return run


def labelled(folder: Path, splits: tuple[str, ...]) -> list[tuple[Path, int]]:
    return [(path, int(name == "crack")) for split in splits for name in ("crack", "no_crack")
            for path in images_in(folder / split / name)]


def keras_scores(run: Path, items: list[tuple[Path, int]]):
    """(labels, Keras probabilities, the run's contract)."""
    from training.predict import load_run_model, predict_files

    model, contract = load_run_model(run)
    scored = predict_files(model, contract, [path for path, _ in items])
    return (np.array([label for _, label in items]), np.array([p for _, p, _ in scored], np.float64),
            contract)


def figures(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    from edge.metrics import binary_report

    report = binary_report(labels, probabilities, threshold)
    return {key: report[key] for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "threshold")}


def train_few(name: str, runs: Path, data: Path, options: list[str]) -> dict:
    run = runs / name
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    code, cpu = crack("train", "--data", str(data), "--runs-dir", str(runs), "--name", name,
                      "--batch-size", FEW_BATCH, *options)
    if code:
        raise SystemExit(f"error: crack train failed for {name} ({code})")
    metrics = json.loads((run / "metrics.json").read_text())
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # 0.8 GB a run; model.keras and metrics stay
    return {**{key: metrics[key] for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "threshold")},
            "accuracy_at_0_5": metrics["at_0_5"]["accuracy"], "cpu_seconds": round(cpu, 1),
            "wall_seconds": round(time.perf_counter() - started, 1)}


def one_case(surfaces: Surfaces, runs: Path, source: str, target: str, per_class: int, seed: int,
             before: dict, source_scores) -> dict:
    from edge.calibrate import calibrate_threshold
    from edge.labelled_photos import LabelledScores

    data = surfaces.few(target, per_class, seed)
    few = labelled(data, ("train", "val"))
    few_labels, few_probabilities, contract = keras_scores(runs / f"source-{source}", few)
    # the rule of `crack calibrate` / `crack-edge calibrate`, on the N + N photos
    calibration = calibrate_threshold(
        LabelledScores(few_labels, few_probabilities, files=len(few), unreadable=0, unlabelled=0),
        contract, site=target, scored_with="model.keras (Keras)")
    test_labels, test_probabilities = source_scores
    recalibrated = {**figures(test_labels, test_probabilities, calibration.threshold), "rule": calibration.rule}
    adapted = train_few(f"adapt-{source}-to-{target}-{per_class}", runs, data,
                        ["--init", str(runs / f"source-{source}")])
    scratch = train_few(f"scratch-{target}-{per_class}", runs, data,
                        ["--weights", "none", "--img-size", str(IMG_SIZE), "--epochs", str(SCRATCH_EPOCHS),
                         "--head-epochs", "0"])
    return {"source": source, "target": target, "per_class": per_class, "train_images": len(labelled(data, ("train",))),
            "val_images": len(labelled(data, ("val",))), "before": before, "recalibrated": recalibrated,
            "adapted": adapted, "from_scratch": scratch}


def verdict(cases: list[dict]) -> list[dict]:
    checks = []
    for case in cases:
        if case["per_class"] != 50:
            continue
        adapted, before, scratch = (case[k]["accuracy"] for k in ("adapted", "before", "from_scratch"))
        checks.append({"direction": f"{case['source']} -> {case['target']}",
                       "gain_over_before_pp": round((adapted - before) * 100, 1),
                       "gain_over_scratch_pp": round((adapted - scratch) * 100, 1),
                       "adapted_cpu_seconds": case["adapted"]["cpu_seconds"],
                       "met": adapted - before >= TARGET_GAIN and adapted > scratch
                       and case["adapted"]["cpu_seconds"] <= TARGET_CPU_SECONDS})
    return checks


def show(result: dict) -> None:
    rows = []
    for case in result["cases"]:
        rows.append([f"{case['source']} -> {case['target']}", case["per_class"],
                     *(f"{case[k]['accuracy']:.3f}" for k in ("before", "recalibrated", "adapted", "from_scratch")),
                     f"{case['adapted']['cpu_seconds']:.0f}", f"{case['from_scratch']['cpu_seconds']:.0f}"])
    print_table(["direction", "N/class", "before", "recalibrated", "adapted", "from scratch",
                 "adapt CPU s", "scratch CPU s"], rows)
    for check in result["target"]:
        print(f"{check['direction']}, 50 per class: adapted {check['gain_over_before_pp']:+.1f} pp over before, "
              f"{check['gain_over_scratch_pp']:+.1f} pp over from scratch, {check['adapted_cpu_seconds']:.0f} CPU s: "
              f"{'met' if check['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("benchmarks.adapt_surface", __doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="labelled images per class, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="which labelled images are drawn")
    parser.add_argument("--work", type=Path, default=WORK_DIR / "adapt_surface",
                        help="scratch folder: patches, source runs (kept and reused), adapted runs")
    parser.add_argument("--sources-only", action="store_true", help="train the two source models and stop")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    runs = args.work / "runs"
    mark = cpu_mark()
    surfaces = Surfaces(args.work, args.seed)
    sources = {surface: source_run(surfaces, surface, runs) for surface in ("concrete", "asphalt")}
    if args.sources_only:
        return
    cases = []
    for source, target in (("concrete", "asphalt"), ("asphalt", "concrete")):
        labels, probabilities, contract = keras_scores(sources[source], surfaces.test[target])
        scores = (labels, probabilities)
        before = figures(labels, probabilities, contract.threshold)
        for per_class in sizes:
            cases.append(one_case(surfaces, runs, source, target, per_class, args.seed, before, scores))
    source_metrics = {surface: {key: json.loads((run / "metrics.json").read_text())[key]
                                for key in ("accuracy", "roc_auc", "threshold", "split_sizes")}
                      for surface, run in sources.items()}
    result = {"machine": machine_info(since=mark), "img_size": IMG_SIZE, "seed": args.seed,
              "test_images": {target: len(items) for target, items in surfaces.test.items()},
              "sources": source_metrics, "cases": cases}
    result["target"] = verdict(cases)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "adapt_surface.json").write_text(json.dumps(result, indent=2) + "\n")
    show(result)


if __name__ == "__main__":
    main()
