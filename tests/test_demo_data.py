"""The synthetic demo data set: layout, determinism, and that it cannot be solved by brightness."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.preprocess import load_image
from training.demo_data import (CENTRAL_BOX, CLASSES, COMPLETE_MARKER, DEFAULT_COUNT, DISTRACTORS,
                                README_NAME, DemoOptions, generate_demo, render)

ROOT = Path(__file__).resolve().parents[1]
LUMA = np.array([0.299, 0.587, 0.114])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", "data", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def make(out: Path, **kwargs) -> Path:
    generate_demo(DemoOptions(out=out, **kwargs), progress=False)
    return out


def test_cli_writes_class_folders_readme_and_marker(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--count", "3", "--size", "64", "--seed", "7")
    assert result.returncode == 0, result.stderr
    assert "6 images" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLASSES, README_NAME,
                                                            COMPLETE_MARKER])
    for cls in CLASSES:
        images = sorted((out / cls).iterdir())
        assert [p.name for p in images] == [f"{cls}_{i:05d}.png" for i in range(3)]
        for path in images:
            rgb = load_image(path)  # the project's own decoder reads them
            assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    readme = (out / README_NAME).read_text()
    assert "SYNTHETIC" in readme and "--seed 7" in readme and "generator version" in readme


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = files(make(tmp_path / "a", count=4, size=64, seed=3))
    b = files(make(tmp_path / "b", count=4, size=64, seed=3))
    c = files(make(tmp_path / "c", count=4, size=64, seed=4))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".png")]
    assert len(images) == 8
    assert all(a[k] != c[k] for k in images)


def test_bytes_do_not_depend_on_worker_processes_and_count_gives_a_prefix(tmp_path):
    one = tmp_path / "one"
    generate_demo(DemoOptions(out=one, count=5, size=48, seed=1), progress=False, workers=1)
    two = tmp_path / "two"
    generate_demo(DemoOptions(out=two, count=5, size=48, seed=1), progress=False, workers=2)
    assert files(one) == files(two)
    small = files(make(tmp_path / "small", count=2, size=48, seed=1))
    big = files(one)
    assert all(small[k] == big[k] for k in small if k.endswith(".png"))


def test_rerun_replaces_an_earlier_set_and_refuses_a_foreign_folder(tmp_path):
    out = make(tmp_path / "demo", count=4, size=32)
    make(out, count=2, size=32)
    assert all(len(list((out / cls).iterdir())) == 2 for cls in CLASSES)
    assert (out / COMPLETE_MARKER).is_file()

    photos = tmp_path / "photos"
    (photos / "crack").mkdir(parents=True)
    (photos / "crack" / "IMG_1.jpg").write_bytes(b"mine")
    result = run_cli("demo", "--out", str(photos), "--count", "2", "--size", "32")
    assert result.returncode == 2
    assert (photos / "crack" / "IMG_1.jpg").read_bytes() == b"mine"


@pytest.mark.parametrize("args", [["--count", "0"], ["--size", "8"], ["--seed", "-1"]])
def test_bad_options_are_one_line_errors(tmp_path, args):
    result = run_cli("demo", "--out", str(tmp_path / "d"), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")


# --- hard in the right way -------------------------------------------------------------------

N_PER_CLASS = 120


@pytest.fixture(scope="module")
def samples():
    return {cls: [render(11, cls, i, 128) for i in range(N_PER_CLASS)] for cls in CLASSES}


def held_out_threshold_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
    """The best threshold (either direction) on the first half, scored on the second half."""
    half = len(pos) // 2
    train = np.r_[pos[:half], neg[:half]]
    train_y = np.r_[np.ones(half), np.zeros(half)]
    best = (0.0, 0.0, 1.0)
    for t in train:
        for sign in (1.0, -1.0):
            acc = float(((sign * (train - t) >= 0) == train_y).mean())
            best = max(best, (acc, t, sign))
    _, t, sign = best
    test = np.r_[pos[half:], neg[half:]]
    test_y = np.r_[np.ones(len(pos) - half), np.zeros(len(neg) - half)]
    return float(((sign * (test - t) >= 0) == test_y).mean())


def test_brightness_and_contrast_do_not_give_the_label_away(samples):
    stats = {cls: np.array([[(s.rgb @ LUMA).mean(), (s.rgb @ LUMA).std()] for s in samples[cls]])
             for cls in CLASSES}
    for j, name in enumerate(["mean", "std"]):
        acc = held_out_threshold_accuracy(stats["crack"][:, j], stats["no_crack"][:, j])
        assert acc < 0.65, f"a threshold on the {name} brightness reaches {acc:.2f}"


def test_every_crack_is_a_visible_thin_dark_connected_structure(samples):
    for i, sample in enumerate(samples["crack"]):
        luma = sample.rgb @ LUMA
        core = (sample.crack_mask > 0.5).astype(np.uint8)
        assert 30 <= core.sum() <= 0.12 * core.size, f"crack {i}: {core.sum()} core pixels"
        n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
        longest = stats[1:, cv2.CC_STAT_WIDTH].max(initial=0)
        tallest = stats[1:, cv2.CC_STAT_HEIGHT].max(initial=0)
        assert max(longest, tallest) >= 40, f"crack {i} has no long connected part"
        touched = sample.crack_mask > 0.02
        ring = (cv2.dilate(touched.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~touched
        darker = luma[ring].mean() - luma[core > 0].mean()
        assert darker > 0.5 * luma.std(), f"crack {i} is not darker than its surroundings"
    assert all(not s.crack_mask.any() for s in samples["no_crack"])


def test_colour_specks_do_not_give_the_label_away(samples):
    """Lifting a near-black crack core to the drawn brightness once blew its noise up into coloured
    specks (in 12% of crack images, a shortcut); saturated pixels now come from paint, in both
    classes alike."""
    def specked(rgb: np.ndarray) -> bool:
        rgb = rgb.astype(int)
        return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum()) >= 3

    rate = {cls: np.mean([specked(s.rgb) for s in samples[cls]]) for cls in CLASSES}
    assert rate["crack"] <= rate["no_crack"] + 0.05, rate


def test_every_crack_runs_through_the_middle_of_the_image(samples):
    """A photo of a crack shows it, not only a sliver along a border (the first generator had
    cracks that never entered the middle 60%)."""
    size = 128
    lo, hi = (int(round(f * size)) for f in CENTRAL_BOX)
    for i, sample in enumerate(samples["crack"]):
        core = sample.crack_mask > 0.5
        assert core[lo:hi, lo:hi].sum() >= 0.15 * size, f"crack {i} keeps to the border"


def test_the_default_demo_set_has_a_test_split_of_at_least_300_images():
    """One test image must not be a whole percentage point of accuracy (600 images gave 90)."""
    from training.data import SplitFractions, split_items
    from training.options import TrainOptions

    defaults = TrainOptions()
    items = [(f"{cls}_{i:05d}.png", label) for cls, label in (("crack", 1), ("no_crack", 0))
             for i in range(DEFAULT_COUNT)]
    splits = split_items(items, SplitFractions(defaults.val_fraction, defaults.test_fraction),
                         seed=defaults.seed)
    assert len(splits["test"]) >= 300
    assert sum(label for _, label in splits["test"]) == len(splits["test"]) // 2


def dark_thin_structures(rgb: np.ndarray) -> np.ndarray:
    """How much darker than its 7x7 surroundings each pixel is (a black-hat of the luma): high
    along joints and cracks."""
    luma = (rgb @ LUMA).astype(np.uint8)
    return cv2.morphologyEx(luma, cv2.MORPH_BLACKHAT, np.ones((7, 7), np.uint8))


def test_distractors_appear_in_both_classes(samples):
    """Straight dark lines (joints, saw-cuts) are no shortcut: they are in both classes."""
    def has_straight_dark_line(rgb: np.ndarray) -> bool:
        blackhat = dark_thin_structures(rgb)
        edges = (blackhat > 20).astype(np.uint8) * 255
        lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=60, minLineLength=90,
                                maxLineGap=4)
        return lines is not None

    rate = {cls: np.mean([has_straight_dark_line(s.rgb) for s in samples[cls]])
            for cls in CLASSES}
    assert rate["no_crack"] > 0.1
    assert rate["no_crack"] > 0.5 * rate["crack"]


def test_cli_defaults_are_the_module_defaults():
    import inspect

    from training import cli
    from training.demo_data import DEFAULT_COUNT, DEFAULT_SIZE

    params = inspect.signature(cli.data_demo).parameters
    assert params["count"].default.default == DEFAULT_COUNT
    assert params["size"].default.default == DEFAULT_SIZE
    assert params["seed"].default.default == 0


# --- the recipe `make train convert` trains it with ------------------------------------------

def test_the_makefile_trains_the_demo_recipe():
    """`make train convert` trains with DEMO_EPOCHS, DEMO_IMG_SIZE and DEMO_BATCH_SIZE (the
    figures in the README were measured with them) and has no gate of its own for the demo run."""
    import re

    from training.demo_data import DEMO_BATCH_SIZE, DEMO_EPOCHS, DEMO_IMG_SIZE

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^EPOCHS\s*\?=\s*{DEMO_EPOCHS}\s*$", makefile, re.M)
    assert re.search(rf"^IMG_SIZE\s*\?=\s*{DEMO_IMG_SIZE}\s*$", makefile, re.M)
    assert re.search(rf"^BATCH\s*\?=\s*{DEMO_BATCH_SIZE}\s*$", makefile, re.M)
    assert "--batch-size $(BATCH)" in makefile
    assert "--max-drop 10" not in makefile


def make_dry_run(*arguments: str) -> str:
    """What `make -n ARGUMENTS` would run (its standard output), asserting that make accepts it."""
    done = subprocess.run(["make", "-n", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_makes_the_demo_data_again_when_its_generator_changed(tmp_path):
    """An old data set is not trained on after training/demo_data.py changed: `make` sees the
    marker older than the generator and runs `crack data demo` again; a newer marker is kept."""
    demo = tmp_path / "demo"
    demo.mkdir()
    marker = demo / COMPLETE_MARKER
    marker.write_text("{}")
    changed = (ROOT / "training" / "demo_data.py").stat().st_mtime

    os.utime(marker, (changed - 60, changed - 60))
    assert f"crack data demo --out {demo}" in make_dry_run("demo-data", f"DEMO_DIR={demo}")
    os.utime(marker, (changed + 60, changed + 60))
    assert "crack data demo" not in make_dry_run("demo-data", f"DEMO_DIR={demo}")


@pytest.mark.parametrize("overrides, weights", [
    ([], "none"),                                 # the demo: measured from random weights
    (["DATA=photos"], "auto"),                    # the user's data: ImageNet when it can be had
    (["WEIGHTS=imagenet"], "imagenet"),           # an explicit choice wins on either
    (["DATA=photos", "WEIGHTS=none"], "none"),
])
def test_make_train_starts_the_demo_from_random_weights_and_user_data_from_auto(
        tmp_path, overrides, weights):
    """The first run's figures (README) are from random initialisation; a machine that can
    download the ImageNet weights must not silently train another recipe on the demo data."""
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / COMPLETE_MARKER).write_text("{}")
    future = (ROOT / "training" / "demo_data.py").stat().st_mtime + 60
    os.utime(demo / COMPLETE_MARKER, (future, future))
    planned = make_dry_run("train", f"DEMO_DIR={demo}", *overrides)
    train = " ".join(planned.replace("\\\n", " ").split())
    assert "crack train --data" in train
    assert f"--weights {weights} " in train + " "


def test_from_scratch_the_learning_rate_decays_along_a_cosine_and_pretrained_keeps_plateaus():
    from training.callbacks import COSINE_FLOOR, cosine_learning_rate
    from training.options import TrainOptions, plan_for

    assert plan_for(TrainOptions(), pretrained=False).cosine_decay
    assert not plan_for(TrainOptions(), pretrained=True).cosine_decay
    rates = [cosine_learning_rate(epoch, 3, 15, 1e-3) for epoch in range(3, 18)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(COSINE_FLOOR * 1e-3)
    assert rates[7] == pytest.approx((1 + COSINE_FLOOR) / 2 * 1e-3)  # half-way: half-way down
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_each_sample_records_the_distractors_drawn_into_it(samples):
    """Sample.distractors (benchmarks/demo_errors.py reports errors by it) says what is in the
    pixels: a joint recorded as square to the frame lies along an axis, a slanted one mostly not;
    and each kind is drawn about as often in both classes."""
    def strongest_line_angle(rgb: np.ndarray) -> float | None:
        blackhat = dark_thin_structures(rgb)
        edges = (blackhat > max(20.0, np.percentile(blackhat, 96))).astype(np.uint8) * 255
        lines = cv2.HoughLines(edges, 1, np.pi / 180, threshold=40)
        if lines is None:
            return None
        theta = math.degrees(float(lines[0][0][1])) % 90  # 0 or 90: square to the frame
        return min(theta, 90 - theta)

    other_lines = {"step_edge", "paint_line", "cast_shadow"}
    clean = [render(12, "no_crack", i, 128) for i in range(400)]
    one_joint = {kind: [strongest_line_angle(s.rgb) for s in clean
                        if [d for d in s.distractors if d.startswith("joint")] == [kind]
                        and not other_lines & set(s.distractors)]
                 for kind in ("joint_square", "joint_slanted")}
    square = [a for a in one_joint["joint_square"] if a is not None]
    slanted = [a for a in one_joint["joint_slanted"] if a is not None]
    assert len(square) >= 20 and len(slanted) >= 8
    assert np.mean([a <= 10 for a in square]) >= 0.8  # square: within 0.05 rad (sd) of an axis
    assert np.mean([a > 10 for a in slanted]) >= 0.6  # slanted: any angle, 78% beyond 10 deg
    for kind in DISTRACTORS:
        counts = [sum(kind in s.distractors for s in samples[cls]) for cls in CLASSES]
        assert abs(counts[0] - counts[1]) <= 0.15 * N_PER_CLASS + 3, (kind, counts)
    assert all(set(s.distractors) <= set(DISTRACTORS) for cls in CLASSES for s in samples[cls])
