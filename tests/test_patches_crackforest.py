"""Integration: cut real CrackForest photos and check every label against the masks."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.preprocess import load_image
from training.patches import PatchOptions, cut_patches

# Five labelled photos, two of them with separate crack fragments (040, 084). The labelled
# photos are all landscape 480x320, so one of them is also cut turned to portrait ("001t").
STEMS = ["001", "040", "084", "102", "118"]


@pytest.mark.shared_data
@pytest.mark.parametrize("size,stride", [(96, 48), (64, 32)])
def test_crackforest_patch_labels_agree_with_the_masks(tmp_path, shared_data, size, stride):
    source = shared_data / "crackforest"
    for sub, ext in (("image", ".jpg"), ("mask", ".png")):
        (tmp_path / sub).mkdir()
        for stem in STEMS:
            (tmp_path / sub / f"{stem}{ext}").symlink_to(source / sub / f"{stem}{ext}")
    portrait = {
        "image": cv2.transpose(cv2.imread(str(source / "image" / "001.jpg"))),
        "mask": cv2.transpose(cv2.imread(str(source / "mask" / "001.png"), cv2.IMREAD_UNCHANGED)),
    }
    for sub, pixels in portrait.items():
        assert cv2.imwrite(str(tmp_path / sub / "001t.png"), pixels)

    options = PatchOptions(images=tmp_path / "image", masks=tmp_path / "mask",
                           out=tmp_path / "out", size=size, stride=stride)
    summary = cut_patches(options, progress=False)
    assert summary.photos == len(STEMS) + 1
    assert summary.per_class["crack"] > 0 and summary.per_class["no_crack"] > 0

    out = tmp_path / "out"
    with (out / "patches.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(summary.per_class.values())
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.png")} == {r["path"] for r in rows}

    masks = {s: cv2.imread(str(source / "mask" / f"{s}.png"), cv2.IMREAD_GRAYSCALE) > 0
             for s in STEMS}
    photos = {s: load_image(source / "image" / f"{s}.jpg") for s in STEMS}
    masks["001t"], photos["001t"] = masks["001"].T, photos["001"].transpose(1, 0, 2)
    margin, need = options.margin, int(np.ceil(0.01 * size * size))
    for row in rows:
        stem, y, x = row["source"], int(row["y"]), int(row["x"])
        assert Path(row["path"]).name == f"{stem}__y{y}_x{x}.png"
        window = masks[stem][y:y + size, x:x + size]
        assert window.shape == (size, size)
        if row["label"] == "crack":
            centre = window[margin:size - margin, margin:size - margin]
            assert centre.sum() >= need, row
        else:
            assert row["label"] == "no_crack"
            assert not window.any(), row
        patch = load_image(out / row["path"])
        assert np.array_equal(patch, photos[stem][y:y + size, x:x + size])
    turned = [r for r in rows if r["source"] == "001t"]
    assert max(int(r["y"]) for r in turned) == 480 - size
    assert max(int(r["x"]) for r in turned) == 320 - size
