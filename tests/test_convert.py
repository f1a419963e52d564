"""`crack convert` end to end on tiny 32x32 models: every mode, the int8 op set and input
quantisation, published models and sidecars the edge runner accepts, the gate (a pure function)
in both directions with a model whose int8 error is known in advance, selective int8 recovery,
atomic writes and bad input. Each real conversion runs once per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT, run_crack

from convert.gate import DEFAULT_MAX_DROP, check_variant, drop_pp, recommend
from convert.modes import DEPLOY_PREFERENCE, MODE_TABLE, MODES
from convert.options import ConvertOptions, parse_modes
from convert.pipeline import run_convert
from convert.quantize import TFLiteConverterBackend, prepare_calibration
from convert.source import load_calibration_set
from convert.testing import (CONTROLLED_THRESHOLD, controlled_model, controlled_splits, flat_model,
                             crack_images, fragile_model, fragile_splits, train_small_cnn,
                             write_png, write_run)
from convert.variant import KernelEvaluation, ModelDetails, VariantResult
from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.model_metadata import file_sha256, read_model_card, read_sidecar
from training.run_layout import RunLayout, read_split

SIZE = 32
FAST = dict(latency_runs=3)


def convert(run: Path, **options) -> int:
    return run_convert(ConvertOptions(run=run, **{**FAST, **options}))


def report_of(run: Path) -> dict:
    return json.loads((run / "tflite" / "report.json").read_text())


def variant(report: dict, mode: str) -> dict:
    return next(v for v in report["variants"] if v["mode"] == mode)


# --- a tiny trained CNN converted to every mode (once per session) ----------------------------------

@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    items = crack_images(100, SIZE, seed=0)
    model = train_small_cnn(items[:60], SIZE, epochs=15)
    run = tmp_path_factory.mktemp("runs") / "cnn"
    write_run(run, model, {"train": items[:60], "val": items[60:70], "test": items[70:100]},
              threshold=0.45)
    return run, convert(run, max_drop=100)


def test_every_mode_is_published_with_a_card_the_edge_runner_accepts(converted):
    run, code = converted
    assert code == 0
    report = report_of(run)
    assert [v["mode"] for v in report["variants"]] == list(MODES)
    test_images = read_split(RunLayout(run).split_file("test"))
    for mode in MODES:
        path = run / "tflite" / f"model_{mode}.tflite"
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["schema_version"] == 1 and sidecar["sha256"] == file_sha256(path)
        assert read_sidecar(path).mode == mode  # the edge runner's own validation passes
        found = read_model_card(path)
        assert found.embedded and found.sidecar and found.card.contract.threshold == 0.45
        assert sidecar["source_run"] == {"name": "cnn", "model_sha256": file_sha256(run / "model.keras")}
        assert sidecar["details"]["metrics"]["test"]["accuracy"] == variant(report, mode)["metrics"]["accuracy"]
        classifier = CrackClassifier(path)
        assert classifier.contract.threshold == 0.45 and classifier.input_size == SIZE
        probabilities = classifier.predict(np.zeros((2, SIZE, SIZE, 3), np.uint8))
        assert probabilities.shape == (2,) and np.all((0 <= probabilities) & (probabilities <= 1))
        entry = variant(report, mode)
        assert entry["size_bytes"] == path.stat().st_size and entry["sha256"] == file_sha256(path)
        assert entry["latency"]["median_ms"] > 0 and entry["latency"]["p90_ms"] >= entry["latency"]["median_ms"]
        assert entry["metrics"]["roc_auc"] is not None
        assert entry["comparison"]["agreement"] > 0.8
        assert entry["conversion"]["optimizations"] == list(MODE_TABLE[mode].optimizations)
    assert report["test_set"]["count"] == len(test_images)
    assert report["keras"]["metrics"]["accuracy"] > 0.6  # the CNN learnt something
    # float variants reproduce the Keras probabilities
    assert variant(report, "fp32")["comparison"]["max_abs_prob_diff"] < 1e-4
    for name in ("report.md", "report.png"):
        assert (run / "tflite" / name).stat().st_size > 0
    assert report["recommended"] in MODES
    assert f"Deploy `{report['recommended_file']}`" in (run / "tflite" / "report.md").read_text()


def test_nothing_that_goes_to_a_device_names_a_build_machine_path(converted):
    run, _ = converted
    root = str(run.parent)
    for path in (run / "tflite").glob("*.json"):
        assert root not in path.read_text(), path.name
    assert root not in (run / "tflite" / "report.md").read_text()
    assert root.encode() not in (run / "tflite" / "model_int8.tflite").read_bytes()


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
    assert report_of(run)["calibration"]["source"] == "splits/train.csv"
    assert report_of(run)["calibration"]["count"] == 60  # default 200, capped by the split


def test_calibration_dir_and_input_range_anchoring(tmp_path):
    frames = tmp_path / "frames"
    for i in range(5):
        write_png(frames / f"cam_{i}.png", np.full((48, 40, 3), 60 + 10 * i, np.uint8))
    (frames / "notes.txt").write_text("not an image")
    images = load_calibration_set(RunLayout(tmp_path), SIZE, count=3, seed=0, directory=frames)
    assert len(images) == 3 and images.labels is None and images.images.shape == (3, SIZE, SIZE, 3)
    assert images.source == "frames"
    calibration = prepare_calibration(images.images, images.source)
    assert (calibration.observed_min, calibration.observed_max) == (images.images.min(), images.images.max())
    assert calibration.images.min() == 0 and calibration.images.max() == 255
    assert len(calibration.anchored) == 2
    changed = (calibration.images != images.images).any(axis=-1).sum()
    assert changed == 2  # two pixels of all calibration pixels, nothing else
    full = prepare_calibration(np.stack([np.zeros((SIZE, SIZE, 3), np.uint8),
                                         np.full((SIZE, SIZE, 3), 255, np.uint8)]), "x")
    assert full.anchored == ()


def test_quantised_variants_are_evaluated_under_every_kernel_set(converted):
    run, _ = converted
    report = report_of(run)
    assert [k["kernels"] for k in variant(report, "fp32")["kernel_sets"]] == ["xnnpack"]
    for mode in ("fp16", "dynamic", "int8"):
        kernel_sets = variant(report, mode)["kernel_sets"]
        assert [k["kernels"] for k in kernel_sets] == ["xnnpack", "builtin", "reference"]
        assert all(k["whole_split"] and k["images"] == 30 for k in kernel_sets)  # 30 <= 64 reference images
        assert kernel_sets[0]["metrics"] == variant(report, mode)["metrics"]
    text = (run / "tflite" / "report.md").read_text()
    assert "## Kernel sets" in text and "| int8 | reference |" in text.replace(" (worst)", "")


# --- the gate on a model whose int8 error is designed (one real conversion) ------------------------

@pytest.fixture(scope="session")
def controlled_run(tmp_path_factory):
    """10 test images; 2 mid-grey "no crack" ones sit just above a rounding midpoint of the int8
    sigmoid output (steps of 1/256), so int8 labels exactly those 2 "crack": 20 pp of accuracy
    (100% -> 80%) and 20 pp of F1 (1.0 -> 0.8) lost. Converted once, gated at 19.9 pp."""
    run = tmp_path_factory.mktemp("runs") / "controlled"
    write_run(run, controlled_model(SIZE), controlled_splits(SIZE, flips=2, clear=4),
              threshold=CONTROLLED_THRESHOLD)
    code = convert(run, modes=("fp32", "fp16", "int8"), recover=False, max_drop=19.9, reference_images=4,
                   golden_count=2)
    return run, code, report_of(run)


def test_the_measured_int8_drop_fails_a_gate_just_under_it(controlled_run):
    run, code, report = controlled_run
    int8 = variant(report, "int8")
    assert int8["gate"]["accuracy_drop_pp"] == pytest.approx(20.0, abs=1e-9)
    assert int8["gate"]["f1_drop_pp"] == pytest.approx(20.0, abs=1e-9)
    assert int8["comparison"]["disagreements"] == 2 and not int8["comparison"]["collapsed"]
    assert code == 1 and not int8["gate"]["passed"]
    assert report["failed"] == ["int8"]
    assert [variant(report, m)["gate"]["accuracy_drop_pp"] for m in ("fp32", "fp16")] == [0.0, 0.0]
    passed = [v for v in report["variants"] if v["gate"]["passed"]]
    assert [v["mode"] for v in passed] == ["fp32", "fp16"] and report["recommended"] == "fp16"
    assert "**FAIL**" in (run / "tflite" / "report.md").read_text()
    # the reference kernels ran on 4 of the 10 images: reported, never gating
    reference = variant(report, "int8")["kernel_sets"][2]
    assert reference["kernels"] == "reference" and reference["images"] == 4 and not reference["whole_split"]
    assert "| 4 (subset) |" in (run / "tflite" / "report.md").read_text()
    # the failed model is still published, labelled failed in its card
    assert read_sidecar(run / "tflite" / "model_int8.tflite").details["gate"]["passed"] is False


def _hand_made(accuracy: float, f1: float, mode: str = "int8", collapsed: bool = False,
               integer_only: bool = True, kernels: tuple[tuple[str, float, bool], ...] = ()) -> VariantResult:
    """A variant result as the pipeline builds it, without converting anything."""
    def evaluation(name, acc, whole):
        return KernelEvaluation(name, 10 if whole else 4, whole, {"accuracy": acc, "f1": f1},
                                {"collapsed": collapsed, "std_ratio": 0.0 if collapsed else 1.0})

    details = ModelDetails(input={}, output={}, ops={}, tensor_types={}, integer_only=integer_only,
                           input_raw_pixels=True)
    evaluations = (evaluation("xnnpack", accuracy, True),) + tuple(evaluation(*k) for k in kernels)
    return VariantResult(mode=mode, conversion={}, evaluations=evaluations, details=details, size_bytes=10)


@pytest.mark.parametrize("max_drop, passed", [(19.9, False), (20.0, True), (20.1, True)])
def test_gate_boundaries_on_the_measured_drop(controlled_run, max_drop, passed):
    """The same numbers the real conversion measured, gated at either side of 20 pp."""
    _, _, report = controlled_run
    measured = variant(report, "int8")["metrics"]
    keras = report["keras"]["metrics"]
    gate = check_variant(keras, _hand_made(measured["accuracy"], measured["f1"]), max_drop)
    assert gate.passed is passed
    assert gate.accuracy_drop_pp == pytest.approx(20.0, abs=1e-9)


def test_gate_rules_on_hand_made_results():
    keras = {"accuracy": 1.0, "f1": 1.0}
    assert drop_pp(1.0, 0.8) == 20.0 and check_variant(keras, _hand_made(0.8, 0.8), 20.0).passed
    assert check_variant(keras, _hand_made(1.0, 1.0), 0.0).passed
    collapsed = check_variant(keras, _hand_made(1.0, 1.0, collapsed=True), 5)
    assert not collapsed.passed and "collapsed" in collapsed.reasons[0]
    assert not check_variant(keras, _hand_made(1.0, 1.0, integer_only=False), 5).passed
    assert check_variant(keras, _hand_made(1.0, 1.0, mode="dynamic", integer_only=False), 5).passed
    failed = check_variant(keras, replace(_hand_made(1.0, 1.0), evaluations=(), error="boom"), 5)
    assert not failed.passed and "boom" in failed.reasons[0]
    # the worst kernel set on the whole split gates; a subset is reported, never gated
    worst = check_variant(keras, _hand_made(1.0, 1.0, kernels=(("builtin", 0.9, True),
                                                                ("reference", 0.5, False))), 5)
    assert not worst.passed and worst.worst_kernels == "builtin" and worst.accuracy_drop_pp == 10.0
    assert "(builtin kernels)" in worst.reasons[0]


@pytest.mark.parametrize("reference_spread, collapsed", [
    (0.4, True),     # a trained model whose int8 copy says one value for everything: TF issue 40183
    (0.008, True),   # just over two output steps of spread, which int8 could have kept
    (0.007, False),  # under two steps (an untrained model): one int8 value is resolution, not collapse
    (0.0, False)])
def test_a_constant_variant_has_collapsed_only_if_the_keras_spread_was_there_to_keep(reference_spread,
                                                                                     collapsed):
    from convert.evaluate import COLLAPSE_MIN_REFERENCE_STD, compare_with_reference

    reference = 0.5 + reference_spread * np.array([-1.0, 1.0, -1.0, 1.0])  # std = reference_spread
    constant = np.full(4, 0.5)
    comparison = compare_with_reference(reference, constant, 0.5)
    assert comparison["collapsed"] is collapsed
    assert comparison["reference_std"] == pytest.approx(reference_spread)
    assert comparison["collapse_judged"] is (reference_spread >= 0.008)
    assert COLLAPSE_MIN_REFERENCE_STD == pytest.approx(2 / 256)
    # a variant that keeps a fair share of the spread never collapses
    assert not compare_with_reference(reference, 0.5 + (reference - 0.5) * 0.2, 0.5)["collapsed"]


def test_the_console_names_the_kernel_set_whose_change_the_gate_judged():
    """The accuracy shown is the default kernels'; the change beside it is the gate's (the worst
    kernel set's), so the line names that set when it is another one."""
    from convert.pipeline import accuracy_figures

    keras = {"accuracy": 0.9, "f1": 0.9}
    worse_elsewhere = _hand_made(0.92, 0.92, kernels=(("builtin", 0.91, True),))
    line = accuracy_figures(replace(worse_elsewhere, gate=check_variant(keras, worse_elsewhere, 1)))
    assert line == ("accuracy 92.00% (+1.00 pp on builtin kernels), "
                    "F1 92.00% (+2.00 pp on builtin kernels)")
    worst_here = _hand_made(0.89, 0.9, kernels=(("builtin", 0.9, True),))
    line = accuracy_figures(replace(worst_here, gate=check_variant(keras, worst_here, 1)))
    assert line == "accuracy 89.00% (-1.00 pp), F1 90.00% (+0.00 pp)"


def test_recommendation_is_full_integer_first_among_those_that_passed():
    def sized(mode, size, passed):
        result = _hand_made(1.0 if passed else 0.0, 1.0, mode=mode)
        return replace(result, size_bytes=size,
                       gate=check_variant({"accuracy": 1.0, "f1": 1.0}, result, 1.0))

    variants = [sized("fp32", 100, True), sized("int8", 25, False), sized("dynamic", 26, True)]
    assert recommend(variants) == "dynamic"
    assert recommend([variants[1]]) is None
    # the first run's case: dynamic's file is a little smaller, but int8 passed and is preferred
    passed = [sized("fp32", 100, True), sized("dynamic", 24, True), sized("int8", 25, True),
              sized("int8_litert", 23, True)]
    assert recommend(passed) == "int8"
    assert recommend(passed[:2] + passed[3:]) == "int8_litert"
    assert recommend([replace(passed[2], size_bytes=0)]) is None  # not published
    assert set(DEPLOY_PREFERENCE) == set(MODE_TABLE)  # every mode has its place


def test_runs_on_the_generated_demo_data_get_the_normal_gate(tmp_path):
    """There is no special gate for the first run any more: a run whose images come from a folder
    that `crack data demo` made (its .complete marker) is gated at DEFAULT_MAX_DROP, 1 pp."""
    images = crack_images(4, SIZE, seed=0)
    run = tmp_path / "run"
    write_run(run, controlled_model(SIZE), {"train": images, "test": images})
    data_root = run / "images"  # write_run keeps images in images/<split>/
    (data_root / ".complete").write_text('{"generator_version": 3, "count": 2}\n')
    convert(run, modes=("fp32",), reference_images=2, golden_count=2)
    report = report_of(run)
    assert DEFAULT_MAX_DROP == 1.0
    assert (report["max_drop_pp"], report["max_drop_reason"]) == (1.0, "default")
    assert variant(report, "fp32")["gate"]["max_drop_pp"] == 1.0


# --- selective int8 ------------------------------------------------------------------------------

def test_collapsed_int8_is_detected_and_recovered_by_selective_quantisation(tmp_path):
    run = tmp_path / "fragile"
    write_run(run, fragile_model(SIZE), fragile_splits(SIZE))
    (run / "tflite").mkdir()
    (run / "tflite" / "model_int8_selective.tflite").write_bytes(b"stale")  # replaced below
    code = convert(run, modes=("int8",))
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
    card = read_sidecar(path)
    assert card.mode == "int8_selective"
    assert card.details["conversion"]["kept_in_float"] == [layer["tensor_name"] for layer in kept]
    assert CrackClassifier(path).predict(np.full((1, SIZE, SIZE, 3), 245, np.uint8))[0] > 0.5
    assert "kept in float" in (run / "tflite" / "report.md").read_text()


def test_a_near_constant_model_is_judged_on_accuracy_not_called_collapsed(tmp_path, capsys):
    """An untrained model (as a two-epoch run from random weights) whose probabilities vary less
    than two steps of an int8 output comes out of int8 as one value: that is the output's
    resolution, not TF issue 40183, so the gate judges accuracy and agreement, and says why."""
    run = tmp_path / "flat"
    write_run(run, flat_model(SIZE), fragile_splits(SIZE))  # greys 10..245, half of them cracks
    assert convert(run, modes=("int8",)) == 0
    int8 = variant(report_of(run), "int8")
    assert int8["metrics"]["distinct_values"] == 1  # int8 says one value for every image ...
    assert 0 < int8["comparison"]["reference_std"] < 2 / 256  # ... of a Keras spread under 2 steps
    assert not int8["comparison"]["collapsed"] and int8["gate"]["passed"]
    assert int8["comparison"]["agreement"] == 1.0
    assert "collapse not judged: the Keras model's probabilities hardly vary" in capsys.readouterr().out


# --- atomic writes ---------------------------------------------------------------------------------

@pytest.fixture
def run_copy(tmp_path, controlled_run):
    """A copy of the controlled run's layout (no tflite/) that a test may break."""
    run = tmp_path / "run"
    shutil.copytree(controlled_run[0], run, ignore=shutil.ignore_patterns("tflite"))
    return run


def test_a_crash_while_writing_keeps_the_old_model_and_leaves_no_partial_file(run_copy, monkeypatch):
    out = run_copy / "tflite"
    out.mkdir()
    old_model, old_sidecar = out / "model_fp32.tflite", out / "model_fp32.json"
    old_model.write_bytes(b"old model")
    old_sidecar.write_text('{"sha256": "old"}')
    real_fsync = os.fsync

    def failing_fsync(fd):  # the disk fills up after the bytes went to the temporary file
        if ".tflite." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        convert(run_copy, modes=("fp32",))
    assert old_model.read_bytes() == b"old model" and old_sidecar.read_text() == '{"sha256": "old"}'
    assert sorted(p.name for p in out.iterdir()) == ["model_fp32.json", "model_fp32.tflite"]


# --- bad input -------------------------------------------------------------------------------------

def test_missing_run_is_a_one_line_error_from_the_real_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convert", "convert", "--run", str(tmp_path / "nope")],
                            cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: run not found: {tmp_path / 'nope'}"]


@pytest.mark.parametrize("breakage, words", [
    ("no_model", ["no model.keras"]),
    ("no_test", ["no test split"]),
    ("no_contract", ["no contract.json"]),
    ("corrupt_zip", ["corrupt", "model.keras"]),
    ("corrupt_keras", ["cannot load", "model.keras"]),
    ("missing_calibration_dir", ["calibration directory not found"]),
    ("empty_test", ["test split", "is empty"]),
    ("contract_threshold_text", ["field 'threshold' must be a number"]),
])
def test_bad_input_is_a_one_line_user_error_and_writes_nothing(run_copy, breakage, words):
    options = {}
    if breakage == "no_model":
        (run_copy / "model.keras").unlink()
    elif breakage == "no_test":
        (run_copy / "splits" / "test.csv").unlink()
    elif breakage == "no_contract":
        (run_copy / "contract.json").unlink()
    elif breakage == "corrupt_zip":
        data = (run_copy / "model.keras").read_bytes()
        (run_copy / "model.keras").write_bytes(data[: len(data) // 3])
    elif breakage == "corrupt_keras":
        with zipfile.ZipFile(run_copy / "model.keras", "w") as archive:
            archive.writestr("config.json", '{"class_name": "Nonsense", "config": {}}')
            archive.writestr("metadata.json", "{}")
    elif breakage == "missing_calibration_dir":
        options["calibration_dir"] = run_copy / "no_frames"
    elif breakage == "empty_test":
        (run_copy / "splits" / "test.csv").write_text("path,label\n")
    elif breakage == "contract_threshold_text":
        contract = json.loads((run_copy / "contract.json").read_text())
        (run_copy / "contract.json").write_text(json.dumps({**contract, "threshold": "0.5"}))
    with pytest.raises(UserError) as caught:
        convert(run_copy, **options)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not (run_copy / "tflite" / "report.json").exists()


def test_unknown_mode_is_refused_by_the_command(tmp_path):
    with pytest.raises(UserError, match="unknown mode 'int4'; choose from fp32, fp16, dynamic, int8"):
        run_crack("convert", "--run", str(tmp_path), "--modes", "fp32,int4")


def test_a_conversion_error_is_a_failed_variant_not_a_crash(run_copy, monkeypatch):
    real_convert = TFLiteConverterBackend.convert

    def half_broken(self, mode, calibration):
        if mode == "fp16":
            from convert.quantize import ConversionError

            raise ConversionError("op FOO is not supported")
        return real_convert(self, mode, calibration)

    monkeypatch.setattr(TFLiteConverterBackend, "convert", half_broken)
    assert convert(run_copy, modes=("fp32", "fp16")) == 1
    report = report_of(run_copy)
    assert report["failed"] == ["fp16"] and report["recommended"] == "fp32"
    assert "op FOO is not supported" in variant(report, "fp16")["gate"]["reasons"][0]
    assert not (run_copy / "tflite" / "model_fp16.tflite").exists()
    assert "fp16` failed: conversion or evaluation failed" in (run_copy / "tflite" / "report.md").read_text()


def test_modes_parse_and_options_validate(tmp_path):
    assert parse_modes(["int8,fp32", "fp32"]) == ("fp32", "int8")
    assert parse_modes(None) == MODES == ("fp32", "fp16", "dynamic", "int8")
    with pytest.raises(UserError, match="unknown mode"):
        parse_modes(["fp8"])
    with pytest.raises(UserError, match="max-drop"):
        ConvertOptions(run=tmp_path, max_drop=-1)
    with pytest.raises(UserError, match="calibration-size"):
        ConvertOptions(run=tmp_path, calibration_size=0)
    assert ConvertOptions(run=tmp_path).max_drop is None  # DEFAULT_MAX_DROP
