"""The rules of `make check-arm64` (benchmarks/check_arm64.py), on made-up rows: the check itself
needs root, qemu and a Debian arm64 userland, so it is not run here."""

from pathlib import Path

import pytest

from benchmarks.check_arm64 import (
    compare_fp32,
    compare_int8,
    markdown,
    scored_rows,
    select_photos,
)
from edge.errors import RuntimeFailure, UserError
from edge.results_file import ResultsContent, Row, RunIdentity

DATA = Path("/data")


def rows(probabilities: dict[str, float], threshold: float = 0.5) -> dict[str, Row]:
    return {f"/data/{name}": Row(f"/data/{name}", p, "crack" if p >= threshold else "no_crack", 1.0)
            for name, p in probabilities.items()}


def content(rows_by_path: dict[str, Row]) -> ResultsContent:
    identity = RunIdentity(model="m.tflite", model_sha256="0" * 64, threshold=0.5, tiles="whole",
                           labels=("no_crack", "crack"), input_size=32)
    return ResultsContent(identity=identity, rows=list(rows_by_path.values()))


def test_fp32_passes_within_tolerance_and_fails_beyond_it():
    here = rows({"a.jpg": 0.2, "b.jpg": 0.9})
    assert compare_fp32(here, rows({"a.jpg": 0.200004, "b.jpg": 0.9}), DATA)["passed"]
    far = compare_fp32(here, rows({"a.jpg": 0.2001, "b.jpg": 0.9}), DATA)
    assert not far["passed"]
    assert far["max_abs_diff"] == pytest.approx(1e-4)
    assert far["identical"] == 1


def test_fp32_fails_on_a_flipped_label_even_within_tolerance():
    here = rows({"a.jpg": 0.5}, threshold=0.5)
    there = rows({"a.jpg": 0.499999}, threshold=0.5)
    result = compare_fp32(here, there, DATA)
    assert result["labels_differ"] == ["a.jpg"] and not result["passed"]


def test_int8_accepts_flips_near_the_threshold_only():
    here = rows({"near.jpg": 0.45, "far.jpg": 0.2, "same.jpg": 0.9})
    near_flip = compare_int8(here, rows({"near.jpg": 0.55, "far.jpg": 0.2, "same.jpg": 0.9}),
                             threshold=0.5, margin=0.1, data=DATA)
    assert near_flip["passed"]
    assert near_flip["flipped"] == [{"photo": "near.jpg", "x86_64": 0.45, "arm64": 0.55,
                                     "x86_64_from_threshold": 0.05}]
    assert near_flip["max_abs_diff"] == pytest.approx(0.1)
    assert near_flip["mean_abs_diff"] == pytest.approx(0.1 / 3)
    assert near_flip["identical"] == 2 and near_flip["near_threshold"] == 1

    far_flip = compare_int8(here, rows({"near.jpg": 0.45, "far.jpg": 0.6, "same.jpg": 0.9}),
                            threshold=0.5, margin=0.1, data=DATA)
    assert not far_flip["passed"] and far_flip["flipped_beyond_margin"] == 1


def test_error_rows_and_missing_photos_fail_the_check():
    photos = [Path("/data/a.jpg"), Path("/data/b.jpg")]
    good = rows({"a.jpg": 0.1, "b.jpg": 0.8})
    assert scored_rows(content(good), photos, "arm64", "int8") == good
    with pytest.raises(RuntimeFailure, match="1 photo"):
        scored_rows(content(rows({"a.jpg": 0.1})), photos, "arm64", "int8")
    broken = {**good, "/data/b.jpg": Row("/data/b.jpg", None, "", None, "ImageDecodeError: truncated")}
    with pytest.raises(RuntimeFailure, match="1 error row"):
        scored_rows(content(broken), photos, "arm64", "int8")


def test_photos_are_taken_half_from_each_class_then_from_crackforest(tmp_path):
    for folder, count in (("surface_crack/test/Positive", 3), ("surface_crack/test/Negative", 3),
                          ("crackforest/image", 2)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(count):
            (tmp_path / folder / f"{i}.jpg").write_bytes(b"")
    photos = select_photos(tmp_path, surface_photos=4, crackforest_photos=1)
    assert [str(p.relative_to(tmp_path)) for p in photos] == [
        "surface_crack/test/Positive/0.jpg", "surface_crack/test/Positive/1.jpg",
        "surface_crack/test/Negative/0.jpg", "surface_crack/test/Negative/1.jpg",
        "crackforest/image/0.jpg"]
    with pytest.raises(UserError, match="wanted 3 photos, found 2"):
        select_photos(tmp_path, surface_photos=2, crackforest_photos=3)


def test_markdown_names_each_cpu_and_the_verdict():
    check = {"device": "Raspberry Pi 4", "passed": False,
             "environment": {"python": "3.13.5", "numpy": "2", "opencv": "5",
                             "interpreter": {"package": "ai_edge_litert", "version": "2"}},
             "fp32": {"max_abs_diff": 0.0},
             "int8": {"max_abs_diff": 0.2, "mean_abs_diff": 0.01, "identical": 1,
                      "flipped": [{"x86_64_from_threshold": 0.25}],
                      "flipped_beyond_margin": 1}}
    result = {"model": {"run": "demo", "threshold": {"int8": 0.4}},
              "photos": {"surface_crack/test": 1, "crackforest/image": 1},
              "arm64": {"userland": "Debian 12.0 arm64", "emulator": "qemu", "cpus": {"cortex-a72": check},
                        "int8_identical_across_cpus": True},
              "x86_64": {"machine": "x86_64", "python": "3.11",
                         "interpreter": {"package": "ai_edge_litert", "version": "2"}},
              "rules": {"fp32_tolerance": 1e-5, "int8_near_threshold_margin": 0.1},
              "int8_x86_64": {"a.jpg": 0.1, "b.jpg": 0.2}, "passed": False}
    text = markdown(result)
    assert "| cortex-a72 (Raspberry Pi 4) | 0 | 0.2000 | 0.0100 | 1 of 2 | 1 (1) | not available | NO |" in text
    assert "within 0.2500 of the threshold" in text
    assert "Debian 12.0 arm64 (Python 3.13.5," in text
    assert "Overall: FAILED." in text
