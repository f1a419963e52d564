"""Finding labelled images, splitting them, and the one-line errors for bad data folders."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.contract import folder_label
from training.data import SplitFractions, scan, source_of, split_items


def write_images(folder: Path, count: int, prefix: str = "img", size: int = 8) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(path), np.full((size, size, 3), i % 256, np.uint8))
        paths.append(path)
    return paths


@pytest.mark.parametrize("name,label", [("Positive", 1), ("NEGATIVE", 0), ("crack", 1),
                                        ("No_Crack", 0), ("Cracked", 1), ("uncracked", 0),
                                        ("1", 1), ("0", 0), ("walls", None)])
def test_class_folder_names_are_recognised_case_insensitively(name, label):
    assert folder_label(name) == label


def test_one_pool_is_split_70_15_15_stratified_and_deterministically(tmp_path):
    write_images(tmp_path / "Positive", 40)
    write_images(tmp_path / "Negative", 60)
    first = scan(tmp_path, seed=3)
    again = scan(tmp_path, seed=3)
    other = scan(tmp_path, seed=4)
    assert first.splits == again.splits
    assert first.splits != other.splits
    counts = first.counts()
    assert counts["test"] == {"crack": 6, "no_crack": 9, "total": 15}
    assert counts["val"] == {"crack": 6, "no_crack": 9, "total": 15}
    assert counts["train"] == {"crack": 28, "no_crack": 42, "total": 70}
    every = [path for items in first.splits.values() for path, _ in items]
    assert len(every) == len(set(every)) == 100
    labels = {Path(path).parent.name: label for items in first.splits.values() for path, label in items}
    assert labels == {"Positive": 1, "Negative": 0}
    assert not first.presplit


def test_presplit_folders_are_used_as_they_are_and_roles_can_be_swapped(tmp_path):
    for split, n in (("train", 6), ("valid", 3), ("test", 2)):
        write_images(tmp_path / split / "Positive", n)
        write_images(tmp_path / split / "Negative", n)
    found = scan(tmp_path)
    assert found.presplit
    assert {k: v["total"] for k, v in found.counts().items()} == {"train": 12, "val": 6, "test": 4}
    assert all("/valid/" in path for path, _ in found.splits["val"])
    swapped = scan(tmp_path, val_name="test", test_name="valid")
    assert all("/test/" in path for path, _ in swapped.splits["val"])
    assert all("/valid/" in path for path, _ in swapped.splits["test"])


def test_positive_option_names_the_crack_folder(tmp_path):
    write_images(tmp_path / "defect", 10)
    write_images(tmp_path / "sound", 10)
    with pytest.raises(UserError, match="unknown class folder name"):
        scan(tmp_path)
    found = scan(tmp_path, positive="Defect")
    assert {Path(p).parent.name for p, label in found.splits["train"] if label == 1} == {"defect"}


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    write_images(tmp_path / "crack", 20)
    write_images(tmp_path / "no_crack", 20)
    (tmp_path / "crack" / "empty.jpg").write_bytes(b"")
    (tmp_path / "crack" / "text.png").write_text("not an image")
    good = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes()
    (tmp_path / "no_crack" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "no_crack" / "notes.txt").write_text("ignored: not an image suffix")
    found = scan(tmp_path)
    assert sorted(Path(p).name for p, _ in found.skipped) == ["empty.jpg", "text.png", "truncated.jpg"]
    kept = [p for items in found.splits.values() for p, _ in items]
    assert len(kept) == 40 and not any("truncated" in p or "notes" in p for p in kept)


@pytest.mark.parametrize("layout,message", [
    (None, "data folder not found"),
    ({}, "has no class folders"),
    ({"crack": 5}, "only one class"),
    ({"crack": 5, "no_crack": 0}, "has no images"),
    ({"apples": 5, "pears": 5}, "unknown class folder name"),
])
def test_bad_data_folders_are_one_line_errors_with_exit_code_2(tmp_path, layout, message):
    data = tmp_path / "data"
    if layout is not None:
        data.mkdir()
        for name, count in layout.items():
            (data / name).mkdir()
            write_images(data / name, count)
    result = subprocess.run([sys.executable, "-m", "training", "train", "--data", str(data),
                             "--runs-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists()


def test_source_names_of_patches_and_grid_crops():
    assert source_of("/x/crack/001__y48_x96.png") == "001"
    assert source_of("/x/Positive/IMG_1234_3_5.jpg") == "IMG_1234"
    assert source_of("/x/no_crack/photo.jpg") == "photo"


def test_group_by_source_never_puts_one_photo_in_two_splits():
    items = []
    for photo in range(20):
        for patch in range(10):
            label = int(patch < (3 if photo % 2 else 6))
            items.append((f"/d/{'crack' if label else 'no_crack'}/{photo:03d}__y{patch}_x0.png", label))
    splits = split_items(items, SplitFractions(), seed=0, group_by_source=True)
    sources = {name: {source_of(p) for p, _ in group} for name, group in splits.items()}
    assert not sources["train"] & sources["val"]
    assert not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    assert sum(len(group) for group in splits.values()) == 200
    for name in ("val", "test"):
        assert 20 <= len(splits[name]) <= 40  # about 15% of 200, in whole photos of 10
        assert Counter(label for _, label in splits[name]).keys() == {0, 1}
    assert splits == split_items(items, SplitFractions(), seed=0, group_by_source=True)
