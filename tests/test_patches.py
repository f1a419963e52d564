"""Cutting photo + mask pairs into crack / no_crack patches, with synthetic masks whose labels
are known exactly."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.preprocess import load_image
from edge.tiling import window_starts
from training.patches import PatchOptions, binarize_mask, cut_patches, label_windows

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", "data", "patches", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_pair(root: Path, stem: str, rgb: np.ndarray, mask: np.ndarray,
               photo_ext: str = ".jpg") -> None:
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 100] if photo_ext == ".jpg" else []
    assert cv2.imwrite(str(root / "image" / f"{stem}{photo_ext}"), bgr, params)
    assert cv2.imwrite(str(root / "mask" / f"{stem}.png"), mask)


def vertical_line_mask(height: int = 192, width: int = 288, x0: int = 140, value: int = 255):
    mask = np.zeros((height, width), np.uint8)
    mask[:, x0:x0 + 3] = value  # a 3 px wide crack over the full height
    return mask


def options(root: Path, out: str = "out", **kwargs) -> PatchOptions:
    return PatchOptions(images=root / "image", masks=root / "mask", out=root / out, **kwargs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the rule on synthetic masks ---------------------------------------------------------------

def test_window_starts_cover_the_whole_length():
    assert window_starts(288, 96, 48) == [0, 48, 96, 144, 192]
    assert window_starts(320, 96, 48) == [0, 48, 96, 144, 192, 224]  # last one flush
    assert window_starts(96, 96, 48) == [0]
    assert window_starts(95, 96, 48) == []


@pytest.mark.parametrize("raw,expected", [
    (np.array([[0, 1], [1, 0]], np.uint8), [[False, True], [True, False]]),
    (np.array([[0, 255], [3, 200]], np.uint8), [[False, True], [False, True]]),  # JPEG noise
    (np.array([[0, 65535], [0, 0]], np.uint16), [[False, True], [False, False]]),
])
def test_binarize_mask(raw, expected):
    assert binarize_mask(raw).tolist() == expected


def test_binarize_colour_mask():
    raw = np.zeros((2, 2, 3), np.uint8)
    raw[0, 1] = (255, 255, 255)
    raw[1, 0, 2] = 255
    assert binarize_mask(raw).tolist() == [[False, True], [True, False]]


def test_a_vertical_line_labels_each_column_of_windows():
    """Line at x = 140..142; windows start at x = 0, 48, 96, 144, 192 (size 96, margin 12).
    x=0: far from it -> no_crack; x=48: line inside but in the right margin -> dropped;
    x=96: line in the centre -> crack; x=144: line 2-4 px left of the border, inside the
    clearance -> dropped; x=192: far -> no_crack."""
    crack = vertical_line_mask() > 0
    windows = label_windows(crack, size=96, stride=48, min_fraction=0.01, margin=12, clearance=4)
    assert windows.ys == [0, 48, 96] and windows.xs == [0, 48, 96, 144, 192]
    row = ["no_crack", None, "crack", None, "no_crack"]
    assert windows.labels == row * 3
    assert windows.fractions[2] == pytest.approx(3 * 96 / 96 ** 2)
    assert windows.fractions[0] == 0.0
    # without a clearance, the window just right of the line is crack-free
    no_clear = label_windows(crack, 96, 48, 0.01, 12, clearance=0)
    assert no_clear.labels[3] == "no_crack"
    # without a margin, the line at the right border of the x=48 window counts
    no_margin = label_windows(crack, 96, 48, 0.01, 0, clearance=4)
    assert no_margin.labels[1] == "crack"


def test_too_few_crack_pixels_is_ambiguous_not_crack():
    mask = np.zeros((96, 96), bool)
    mask[40:49, 40:50] = True  # 90 pixels < 1% of 96*96 = 92.16 -> need 93
    assert label_windows(mask, 96, 48, 0.01, 12, 4).labels == [None]
    mask[40, 50:53] = True  # 93 pixels
    assert label_windows(mask, 96, 48, 0.01, 12, 4).labels == ["crack"]
    assert label_windows(mask, 96, 48, 0.02, 12, 4).labels == [None]


def test_cut_writes_named_patches_with_the_photo_pixels_and_a_csv(tmp_path):
    rgb = photo(192, 288)
    write_pair(tmp_path, "road7", rgb, vertical_line_mask(), photo_ext=".png")
    summary = cut_patches(options(tmp_path), progress=False)
    assert summary.photos == 1 and summary.dropped == 6
    assert summary.per_class == {"crack": 3, "no_crack": 6}
    out = tmp_path / "out"
    crack = sorted(p.name for p in (out / "crack").iterdir())
    assert crack == [f"road7__y{y}_x96.png" for y in (0, 48, 96)]
    no_crack = sorted(p.name for p in (out / "no_crack").iterdir())
    assert no_crack == sorted(f"road7__y{y}_x{x}.png" for y in (0, 48, 96) for x in (0, 192))
    patch = load_image(out / "crack" / "road7__y48_x96.png")
    assert np.array_equal(patch, rgb[48:144, 96:192])  # lossless copy of the photo's pixels

    rows = read_csv(out / "patches.csv")
    assert list(rows[0]) == ["path", "source", "y", "x", "label", "crack_fraction"]
    assert len(rows) == 9
    by_path = {r["path"]: r for r in rows}
    row = by_path["crack/road7__y48_x96.png"]
    assert (row["source"], row["y"], row["x"], row["label"]) == ("road7", "48", "96", "crack")
    assert float(row["crack_fraction"]) == pytest.approx(0.03125)
    assert all((out / r["path"]).is_file() for r in rows)


def test_zero_one_masks_portrait_photos_and_determinism(tmp_path):
    mask = np.zeros((480, 320), np.uint8)
    mask[200:203, :] = 1  # horizontal crack, 0/1 mask, portrait photo
    write_pair(tmp_path, "328", photo(480, 320, seed=1), mask)
    first = cut_patches(options(tmp_path, "a"), progress=False)
    second = cut_patches(options(tmp_path, "b"), progress=False)
    assert first.per_class["crack"] > 0 and first.per_class["no_crack"] > 0
    assert first.per_class == second.per_class
    a, b = tmp_path / "a", tmp_path / "b"
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert (a / "patches.csv").read_bytes() == (b / "patches.csv").read_bytes()
    for row in read_csv(a / "patches.csv"):
        y, x = int(row["y"]), int(row["x"])
        has_crack = mask[y:y + 96, x:x + 96].any()
        assert has_crack == (row["label"] == "crack")


def test_small_photos_are_skipped_with_a_warning(tmp_path):
    write_pair(tmp_path, "big", photo(192, 288), vertical_line_mask())
    write_pair(tmp_path, "tiny", photo(64, 64), np.zeros((64, 64), np.uint8))
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "tiny.jpg" in result.stderr and "warning" in result.stderr
    assert "3 crack, 6 no_crack, 6 ambiguous dropped" in result.stdout
    assert not list((tmp_path / "out").rglob("tiny__*"))


def test_a_second_run_needs_overwrite(tmp_path):
    write_pair(tmp_path, "a", photo(192, 288), vertical_line_mask())
    cut_patches(options(tmp_path), progress=False)
    args = ["--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
            "--out", str(tmp_path / "out"), "--size", "64", "--stride", "64"]
    assert_one_line_error(run_cli(*args), "--overwrite")
    result = run_cli(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    sizes = {load_image(p).shape for p in (tmp_path / "out").rglob("*.png")}
    assert sizes == {(64, 64, 3)}  # no 96 px patch of the first run is left


# --- errors: one line, exit code 2 -------------------------------------------------------------

def test_missing_folders(tmp_path):
    write_pair(tmp_path, "a", photo(96, 96), np.zeros((96, 96), np.uint8))
    result = run_cli("--images", str(tmp_path / "nope"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "--images", "nope")
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "nomask"),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "--masks", "nomask")


def test_no_pairs(tmp_path):
    write_pair(tmp_path, "a", photo(96, 96), np.zeros((96, 96), np.uint8))
    (tmp_path / "mask" / "a.png").rename(tmp_path / "mask" / "a_mask.png")
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "no photo/mask pairs")


def test_size_mismatch_names_the_files(tmp_path):
    write_pair(tmp_path, "ok", photo(96, 128), np.zeros((96, 128), np.uint8))
    write_pair(tmp_path, "bad", photo(96, 128), np.zeros((128, 96), np.uint8))
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "bad.png", "bad.jpg", "96x128", "128x96")
    assert not (tmp_path / "out").exists()  # checked before anything is written


@pytest.mark.parametrize("args,words", [
    (["--stride", "0"], ["--stride"]),
    (["--stride", "-4"], ["--stride"]),
    (["--size", "0"], ["--size"]),
    (["--crack-min-fraction", "0"], ["--crack-min-fraction"]),
    (["--crack-margin", "48"], ["--crack-margin"]),
    (["--clearance", "-1"], ["--clearance"]),
    (["--size", "200"], ["no photo", "200"]),
])
def test_bad_options(tmp_path, args, words):
    write_pair(tmp_path, "a", photo(96, 128), np.zeros((96, 128), np.uint8))
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"), *args)
    assert_one_line_error(result, *words)


def test_unreadable_mask(tmp_path):
    write_pair(tmp_path, "a", photo(96, 128), np.zeros((96, 128), np.uint8))
    (tmp_path / "mask" / "a.png").write_bytes(b"not a png")
    result = run_cli("--images", str(tmp_path / "image"), "--masks", str(tmp_path / "mask"),
                     "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "a.png")


def test_cli_defaults_are_the_module_defaults():
    import inspect

    from training import cli
    from training.patches import (DEFAULT_CLEARANCE, DEFAULT_CRACK_MIN_FRACTION, DEFAULT_SIZE,
                                  DEFAULT_STRIDE)

    params = inspect.signature(cli.data_patches).parameters
    assert params["size"].default.default == DEFAULT_SIZE
    assert params["stride"].default.default == DEFAULT_STRIDE
    assert params["crack_min_fraction"].default.default == DEFAULT_CRACK_MIN_FRACTION
    assert params["clearance"].default.default == DEFAULT_CLEARANCE
    assert params["crack_margin"].default.default is None  # size // 8
