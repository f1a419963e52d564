"""`crack convert` end to end on tiny 32x32 models: every mode, the int8 op set and input
quantisation, sidecars the edge runner accepts, the gate in both directions with a model whose
int8 error is known in advance, selective int8 recovery, atomic writes and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convert.gate import check_variant, drop_pp, recommend
from convert.options import MODES, ConvertOptions, parse_modes
from convert.quantize import prepare_calibration
from convert.source import load_calibration_set
from convert.testing import (CONTROLLED_THRESHOLD, controlled_model, controlled_splits,
                             crack_images, fragile_model, fragile_splits, train_small_cnn,
                             write_png, write_run)
from edge.classifier import CrackClassifier, file_sha256, read_sidecar
from edge.errors import UserError
from training.run_layout import RunLayout, read_split

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
FAST = ["--latency-runs", "3"]


def crack(*args: str) -> int:
    """Run the real `crack` entry point in-process; its exit code."""
    from training.cli import main

    saved = sys.argv
    sys.argv = ["crack", *args]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def report_of(run: Path) -> dict:
    return json.loads((run / "tflite" / "report.json").read_text())


def variant(report: dict, mode: str) -> dict:
    return next(v for v in report["variants"] if v["mode"] == mode)


# --- a tiny trained CNN converted to every mode (once for the module) ----------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    items = crack_images(100, SIZE, seed=0)
    model = train_small_cnn(items[:60], SIZE, epochs=15)
    run = tmp_path_factory.mktemp("runs") / "cnn"
    write_run(run, model, {"train": items[:60], "val": items[60:70], "test": items[70:100]},
              threshold=0.45)
    code = crack("convert", "--run", str(run), "--max-drop", "100", *FAST)
    return run, code


def test_every_mode_is_written_with_a_sidecar_the_edge_runner_accepts(converted):
    run, code = converted
    assert code == 0
    report = report_of(run)
    assert [v["mode"] for v in report["variants"]] == list(MODES)
    test_images = read_split(RunLayout(run).split_file("test"))
    for mode in MODES:
        path = run / "tflite" / f"model_{mode}.tflite"
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["sha256"] == file_sha256(path)
        assert read_sidecar(path)["mode"] == mode  # the edge runner's own check passes
        assert sidecar["contract"]["threshold"] == 0.45  # from the run's contract.json
        assert sidecar["source_run"]["name"] == "cnn"
        assert sidecar["metrics"]["test"]["accuracy"] == variant(report, mode)["metrics"]["accuracy"]
        classifier = CrackClassifier(path)
        assert classifier.contract.threshold == 0.45 and classifier.input_size == SIZE
        probabilities = classifier.predict(np.zeros((2, SIZE, SIZE, 3), np.uint8))
        assert probabilities.shape == (2,) and np.all((0 <= probabilities) & (probabilities <= 1))
        entry = variant(report, mode)
        assert entry["size_bytes"] == path.stat().st_size
        assert entry["latency"]["median_ms"] > 0 and entry["latency"]["p90_ms"] >= entry["latency"]["median_ms"]
        assert entry["metrics"]["roc_auc"] is not None
        assert entry["comparison"]["agreement"] > 0.8
    assert report["test_set"]["count"] == len(test_images)
    assert report["keras"]["metrics"]["accuracy"] > 0.6  # the CNN learnt something
    # float variants reproduce the Keras probabilities
    assert variant(report, "fp32")["comparison"]["max_abs_prob_diff"] < 1e-4
    for name in ("report.md", "report.png"):
        assert (run / "tflite" / name).stat().st_size > 0
    assert report["recommended"] in MODES
    assert f"Deploy `{report['recommended_file']}`" in (run / "tflite" / "report.md").read_text()


def test_full_int8_is_integer_only_with_raw_pixel_input(converted):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from convert.inspect_model import inspect_tflite

    run, _ = converted
    path = run / "tflite" / "model_int8.tflite"
    info = inspect_tflite(path.read_bytes())
    assert info["integer_only"] and not info["custom_ops"]
    assert set(info["tensor_types"]) <= {"INT8", "UINT8", "INT32"}
    assert "DEQUANTIZE" not in info["ops"] and {"CONV_2D", "FULLY_CONNECTED", "LOGISTIC"} <= set(info["ops"])
    # the same seen by the interpreter (without the XNNPACK delegate rewriting the graph)
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    assert {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()} <= {"int8", "uint8", "int32"}
    classifier = CrackClassifier(path)
    assert classifier.input_dtype == np.uint8
    assert classifier.input_quantization == (1.0, 0)
    assert np.dtype(classifier._output["dtype"]) == np.uint8
    report = report_of(run)
    assert report["int8_input"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0, "raw_pixels": True}
    assert "scale 1 and zero point 0" in (run / "tflite" / "report.md").read_text()
    # other modes keep float input
    assert CrackClassifier(run / "tflite" / "model_dynamic.tflite").input_dtype == np.float32


def test_calibration_comes_only_from_the_training_split_and_is_deterministic(converted):
    run, _ = converted
    layout = RunLayout(run)
    train = {p for p, _ in read_split(layout.split_file("train"))}
    held_out = {p for s in ("val", "test") for p, _ in read_split(layout.split_file(s))}
    first = load_calibration_set(layout, SIZE, count=25, seed=0)
    again = load_calibration_set(layout, SIZE, count=25, seed=0)
    assert len(first) == 25 and first.paths == again.paths
    assert np.array_equal(first.images, again.images)
    assert set(first.paths) <= train and not set(first.paths) & held_out
    assert load_calibration_set(layout, SIZE, count=25, seed=1).paths != first.paths
    assert report_of(run)["calibration"]["source"].endswith("train.csv")
    assert report_of(run)["calibration"]["count"] == 60  # default 200, capped by the split


def test_calibration_dir_and_input_range_anchoring(tmp_path):
    frames = tmp_path / "frames"
    for i in range(5):
        write_png(frames / f"cam_{i}.png", np.full((48, 40, 3), 60 + 10 * i, np.uint8))
    (frames / "notes.txt").write_text("not an image")
    images = load_calibration_set(RunLayout(tmp_path), SIZE, count=3, seed=0, directory=frames)
    assert len(images) == 3 and images.labels is None and images.images.shape == (3, SIZE, SIZE, 3)
    calibration = prepare_calibration(images.images, images.source)
    assert (calibration.observed_min, calibration.observed_max) == (images.images.min(), images.images.max())
    assert calibration.images.min() == 0 and calibration.images.max() == 255
    assert len(calibration.anchored) == 2
    changed = (calibration.images != images.images).any(axis=-1).sum()
    assert changed == 2  # two pixels of all calibration pixels, nothing else
    full = prepare_calibration(np.stack([np.zeros((SIZE, SIZE, 3), np.uint8),
                                         np.full((SIZE, SIZE, 3), 255, np.uint8)]), "x")
    assert full.anchored == ()


# --- the gate, in both directions, on a model whose int8 error is designed ------------------------

@pytest.fixture(scope="module")
def controlled_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "controlled"
    write_run(run, controlled_model(SIZE), controlled_splits(SIZE, flips=2, clear=4),
              threshold=CONTROLLED_THRESHOLD)
    return run


@pytest.mark.parametrize("max_drop, expected", [(19.9, 1), (20.0, 0), (20.1, 0)])
def test_gate_exit_code_just_under_and_over_the_measured_drop(controlled_run, max_drop, expected):
    # 10 test images; 2 mid-grey "no crack" ones sit just above a rounding midpoint of the int8
    # sigmoid output (steps of 1/256), so int8 labels exactly those 2 "crack": 20 pp of accuracy
    # (100% -> 80%) and 20 pp of F1 (1.0 -> 0.8) lost, measured on a real conversion.
    code = crack("convert", "--run", str(controlled_run), "--modes", "int8", "--no-recover",
                 "--max-drop", str(max_drop), *FAST)
    report = report_of(controlled_run)
    int8 = variant(report, "int8")
    assert int8["gate"]["accuracy_drop_pp"] == pytest.approx(20.0, abs=1e-9)
    assert int8["gate"]["f1_drop_pp"] == pytest.approx(20.0, abs=1e-9)
    assert int8["comparison"]["disagreements"] == 2 and not int8["comparison"]["collapsed"]
    assert code == expected
    assert int8["gate"]["passed"] is (expected == 0)
    assert report["failed"] == ([] if expected == 0 else ["int8"])
    assert report["recommended"] == (None if expected else "int8")
    markdown = (controlled_run / "tflite" / "report.md").read_text()
    assert ("**FAIL**" in markdown) is bool(expected)
    # the failed model is still written (and labelled failed in its sidecar) after the report
    sidecar = json.loads((controlled_run / "tflite" / "model_int8.json").read_text())
    assert sidecar["gate"]["passed"] is (expected == 0)


def test_float_variants_pass_the_controlled_gate(controlled_run):
    code = crack("convert", "--run", str(controlled_run), "--modes", "fp32,fp16", "--max-drop", "0", *FAST)
    assert code == 0
    report = report_of(controlled_run)
    assert [v["gate"]["accuracy_drop_pp"] for v in report["variants"]] == [0.0, 0.0]
    assert report["calibration"] is None  # no int8 requested: no calibration


# --- selective int8 ------------------------------------------------------------------------------

def test_collapsed_int8_is_detected_and_recovered_by_selective_quantisation(tmp_path):
    run = tmp_path / "fragile"
    write_run(run, fragile_model(SIZE), fragile_splits(SIZE))
    (run / "tflite").mkdir()
    (run / "tflite" / "model_int8_selective.tflite").write_bytes(b"stale")  # replaced below
    code = crack("convert", "--run", str(run), "--modes", "int8", *FAST)
    assert code == 1  # the requested int8 failed, even though a recovered variant exists
    report = report_of(run)
    int8 = variant(report, "int8")
    assert int8["comparison"]["collapsed"] and not int8["gate"]["passed"]
    assert any("collapsed" in reason for reason in int8["gate"]["reasons"])
    assert int8["input_raw_pixels"]  # calibration pixels were 10..245: anchoring made it (1, 0)
    assert report["calibration"]["observed_pixel_range"] == [10, 245] and report["calibration"]["anchored"]
    selective = variant(report, "int8_selective")
    assert selective["gate"]["passed"] and selective["comparison"]["agreement"] == 1.0
    kept = report["selective"]["kept_in_float"]
    assert kept and "fragile" in kept[0]["tensor_name"] and kept[0]["rmse_scale"] > 10
    assert report["recommended"] == "int8_selective"
    path = run / "tflite" / "model_int8_selective.tflite"
    assert read_sidecar(path)["conversion"]["kept_in_float"] == [layer["tensor_name"] for layer in kept]
    assert CrackClassifier(path).predict(np.full((1, SIZE, SIZE, 3), 245, np.uint8))[0] > 0.5
    assert "kept in float" in (run / "tflite" / "report.md").read_text()


# --- atomic writes ---------------------------------------------------------------------------------

def test_a_crash_while_writing_leaves_no_partial_model_and_keeps_the_old_one(controlled_run, monkeypatch):
    out = controlled_run / "tflite"
    out.mkdir(exist_ok=True)
    old_model, old_sidecar = out / "model_fp32.tflite", out / "model_fp32.json"
    old_model.write_bytes(b"old model")
    old_sidecar.write_text('{"sha256": "old"}')
    for name in ("model_fp16.tflite", "model_fp16.json"):
        (out / name).unlink(missing_ok=True)
    real_fsync = os.fsync

    def failing_fsync(fd):  # the disk fills up after the bytes went to the temporary file
        if ".tflite." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        crack("convert", "--run", str(controlled_run), "--modes", "fp16", *FAST)
    assert not (out / "model_fp16.tflite").exists() and not (out / "model_fp16.json").exists()
    with pytest.raises(OSError, match="No space left"):
        crack("convert", "--run", str(controlled_run), "--modes", "fp32", *FAST)
    assert old_model.read_bytes() == b"old model" and old_sidecar.read_text() == '{"sha256": "old"}'
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# --- bad input -------------------------------------------------------------------------------------

def _one_line_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err


@pytest.fixture
def tiny_run(tmp_path, controlled_run):
    """A copy of the controlled run's layout that a test may break."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(controlled_run, run, ignore=shutil.ignore_patterns("tflite"))
    return run


def test_missing_run_is_a_one_line_error_from_the_real_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training", "convert", "--run", str(tmp_path / "nope")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: run not found: {tmp_path / 'nope'}"]


@pytest.mark.parametrize("breakage, words", [
    ("no_model", ["no model.keras"]),
    ("no_test", ["no test split"]),
    ("no_contract", ["no contract.json"]),
    ("corrupt_zip", ["corrupt", "model.keras"]),
    ("corrupt_keras", ["cannot load", "model.keras"]),
    ("unknown_mode", ["unknown mode 'int4'", "fp32, fp16, dynamic, int8"]),
    ("missing_calibration_dir", ["calibration directory not found"]),
    ("empty_test", ["test split", "is empty"]),
])
def test_bad_input_exits_2_with_one_line(tiny_run, capsys, breakage, words):
    args = ["convert", "--run", str(tiny_run), *FAST]
    if breakage == "no_model":
        (tiny_run / "model.keras").unlink()
    elif breakage == "no_test":
        (tiny_run / "splits" / "test.csv").unlink()
    elif breakage == "no_contract":
        (tiny_run / "contract.json").unlink()
    elif breakage == "corrupt_zip":
        data = (tiny_run / "model.keras").read_bytes()
        (tiny_run / "model.keras").write_bytes(data[: len(data) // 3])
    elif breakage == "corrupt_keras":
        with zipfile.ZipFile(tiny_run / "model.keras", "w") as archive:
            archive.writestr("config.json", '{"class_name": "Nonsense", "config": {}}')
            archive.writestr("metadata.json", "{}")
    elif breakage == "unknown_mode":
        args += ["--modes", "fp32,int4"]
    elif breakage == "missing_calibration_dir":
        args += ["--calibration-dir", str(tiny_run / "no_frames")]
    elif breakage == "empty_test":
        (tiny_run / "splits" / "test.csv").write_text("path,label\n")
    assert crack(*args) == 2
    _one_line_error(capsys, *words)
    assert not (tiny_run / "tflite" / "report.json").exists()


def test_a_conversion_error_is_a_failed_variant_not_a_crash(tiny_run, monkeypatch):
    from convert import quantize

    class HalfBroken(quantize.TFLiteConverterBackend):
        name = "half-broken"

        def convert(self, mode, calibration):
            if mode == "fp16":
                raise quantize.ConversionError("op FOO is not supported")
            return super().convert(mode, calibration)

    monkeypatch.setitem(quantize.BACKENDS, "half-broken", HalfBroken)
    code = crack("convert", "--run", str(tiny_run), "--modes", "fp32,fp16", "--backend", "half-broken", *FAST)
    assert code == 1
    report = report_of(tiny_run)
    assert report["failed"] == ["fp16"] and report["recommended"] == "fp32"
    assert "op FOO is not supported" in variant(report, "fp16")["gate"]["reasons"][0]
    assert not (tiny_run / "tflite" / "model_fp16.tflite").exists()
    assert "fp16` failed: conversion or evaluation failed" in (tiny_run / "tflite" / "report.md").read_text()


# --- units ---------------------------------------------------------------------------------------

def test_modes_parse_and_options_validate(tmp_path):
    assert parse_modes(["int8,fp32", "fp32"]) == ("fp32", "int8")
    assert parse_modes(None) == MODES
    with pytest.raises(UserError, match="unknown mode"):
        parse_modes(["fp8"])
    with pytest.raises(UserError, match="max-drop"):
        ConvertOptions(run=tmp_path, max_drop=-1)
    with pytest.raises(UserError, match="calibration-size"):
        ConvertOptions(run=tmp_path, calibration_size=0)


def test_gate_boundaries_and_recommendation():
    keras = {"accuracy": 1.0, "f1": 1.0}
    at_limit = check_variant(keras, {"accuracy": 0.8, "f1": 0.8}, {"collapsed": False}, 20.0)
    assert drop_pp(1.0, 0.8) == 20.0 and at_limit.passed
    assert not check_variant(keras, {"accuracy": 0.8, "f1": 0.8}, None, 19.99).passed
    assert check_variant(keras, {"accuracy": 1.0, "f1": 1.0}, None, 0.0).passed
    collapsed = check_variant(keras, {"accuracy": 1.0, "f1": 1.0}, {"collapsed": True, "std_ratio": 0.0}, 5)
    assert not collapsed.passed and "collapsed" in collapsed.reasons[0]
    assert not check_variant(keras, {"accuracy": 1.0, "f1": 1.0}, None, 5, must_be_integer_only=True,
                             integer_only=False).passed
    assert not check_variant(keras, None, None, 5, error="boom").passed
    variants = [{"mode": "fp32", "size_bytes": 100, "gate": {"passed": True}},
                {"mode": "int8", "size_bytes": 25, "gate": {"passed": False}},
                {"mode": "dynamic", "size_bytes": 26, "gate": {"passed": True}}]
    assert recommend(variants) == "dynamic"
    assert recommend([variants[1]]) is None
