"""int8 quality (issue 13, "int8 quality on marginal models"): the output bias correction of full
int8 (convert.output_bias) and litert-quantizer as a second int8 backend (mode int8_litert), on
tiny models whose int8 error is known in advance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from convert.modes import LITERT_MODE, MODE_TABLE, MODES, REQUESTABLE
from convert.options import ConvertOptions, parse_modes
from convert.output_bias import correct_output_bias, find_head, int8_head_outputs, with_bias_change
from convert.pipeline import run_convert
from convert.quantize import Calibration, TFLiteConverterBackend, prepare_calibration
from convert.testing import grey, write_run
from edge.classifier import CrackClassifier

SIZE = 32
SLOPE = 4.0  # logit = SLOPE * (grey / 127.5 - 1) + bias
LEVELS = list(range(0, 256, 8)) + [255]


def grey_model(bias: float):
    """Global average pool -> Dense(1, sigmoid): the logit is an exact function of the grey level."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.full((3, 1), SLOPE / 3, np.float32), np.array([bias], np.float32)])
    return model


def logit_of(level: int, bias: float) -> float:
    return SLOPE * (level / 127.5 - 1) + bias


def sigmoid(value):
    return 1 / (1 + np.exp(-np.asarray(value, np.float64)))


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    return prepare_calibration(np.stack([grey(SIZE, level) for level in LEVELS]), "grey levels")


def int8_of(model, calibration: Calibration) -> bytes:
    backend = TFLiteConverterBackend(model)
    try:
        return backend.convert("int8", calibration)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def offset_int8(calibration) -> bytes:
    """int8 of a model whose bias is 0.5 above the reference's: an int8 logit error of +0.5 on
    every image, the kind of shift measured on the marginal demo run."""
    return int8_of(grey_model(0.5), calibration)


def test_the_head_and_its_logit_are_found(offset_int8, calibration):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=offset_int8,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    assert find_head(interpreter) is not None
    logits, saturated, probabilities, step = int8_head_outputs(offset_int8, calibration.images)
    expected = np.array([logit_of(level, 0.5) for level in LEVELS])
    assert not saturated[1:-1].any()
    assert np.abs(logits - expected).max() < 3 * step
    assert np.abs(probabilities - sigmoid(logits)).max() <= 1 / 256 + 1e-6


def test_a_bias_change_moves_only_the_logit(offset_int8, calibration):
    logits, _, _, step = int8_head_outputs(offset_int8, calibration.images)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    graph = Interpreter(model_content=offset_int8,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    graph.allocate_tensors()
    head = find_head(graph)
    bias_scale = next(t for t in graph.get_tensor_details() if t["index"] == head.bias)["quantization"][0]
    changed = with_bias_change(offset_int8, head.bias, int(round(1.0 / bias_scale)))
    after, _, _, _ = int8_head_outputs(changed, calibration.images)
    inside = (logits > -2.5) & (logits < 2.5)  # far from both ends of the logit's int8 range
    assert np.abs((logits - after)[inside] - 1.0).max() < 2 * step
    assert len(changed) == pytest.approx(len(offset_int8), abs=64)


def test_a_constant_int8_logit_error_is_measured_and_taken_out(offset_int8, calibration):
    reference = np.array([sigmoid(logit_of(level, 0.0)) for level in LEVELS])
    corrected, correction = correct_output_bias(offset_int8, calibration.images, reference)
    assert correction.applied, correction.reason
    assert correction.logit_shift == pytest.approx(0.5, abs=0.05)
    assert correction.calibration_mean_abs_prob_diff_after < correction.calibration_mean_abs_prob_diff_before / 4
    probabilities = _probabilities(corrected, calibration.images)
    assert np.abs(probabilities - reference).max() < 0.02
    assert json.dumps(correction.to_dict())  # goes into the report as it is


def test_an_accurate_int8_model_is_left_alone(calibration):
    content = int8_of(grey_model(0.1), calibration)  # (a zero bias is left out of the graph)
    reference = np.array([sigmoid(logit_of(level, 0.1)) for level in LEVELS])
    unchanged, correction = correct_output_bias(content, calibration.images, reference)
    assert not correction.applied and unchanged == content
    assert abs(correction.logit_shift) <= max(correction.logit_step, 2 * correction.logit_shift_std_error)


def test_a_model_without_an_int8_logit_is_not_corrected(calibration):
    backend = TFLiteConverterBackend(grey_model(0.0))
    try:
        content = backend.convert("fp32", None)
    finally:
        backend.close()
    unchanged, correction = correct_output_bias(content, calibration.images, np.full(len(LEVELS), 0.5))
    assert unchanged == content and not correction.applied and "head" in correction.reason


def _probabilities(content: bytes, images: np.ndarray) -> np.ndarray:
    from convert.output_bias import _probabilities as run

    return run(content, images, 1)


# --- the pipeline: the correction in the report, and litert-quantizer side by side ---------------

def test_modes_litert_is_requestable_but_not_made_by_default():
    assert LITERT_MODE in REQUESTABLE and LITERT_MODE not in MODES
    assert parse_modes("int8_litert,int8") == ("int8", LITERT_MODE)
    assert MODE_TABLE["int8"].output_bias_correction and MODE_TABLE[LITERT_MODE].output_bias_correction
    assert MODE_TABLE[LITERT_MODE].settings()["backend"] == "litert-quantizer"
    with pytest.raises(ValueError, match="litert-quantizer"):
        MODE_TABLE[LITERT_MODE].apply(object())


def _grey_run(tmp_path, bias: float = 0.1):
    train = [(grey(SIZE, level), int(level > 127)) for level in LEVELS]
    test = [(grey(SIZE, level), int(level > 127)) for level in range(4, 256, 16)]
    return write_run(tmp_path / "grey", grey_model(bias), {"train": train, "val": train[:4], "test": test})


def test_the_report_says_what_the_correction_did(tmp_path):
    layout = _grey_run(tmp_path)
    run_convert(ConvertOptions(run=layout.root, modes=("int8",), latency_runs=2, reference_images=0,
                               golden_count=2, max_drop=100))
    report = json.loads((layout.root / "tflite" / "report.json").read_text())
    correction = report["variants"][0]["conversion"]["output_bias_correction"]
    assert set(correction) >= {"applied", "reason", "logit_shift", "logit_step", "images"}
    assert report["options"]["bias_correction"] is True
    run_convert(ConvertOptions(run=layout.root, modes=("int8",), latency_runs=2, reference_images=0,
                               golden_count=2, max_drop=100, bias_correction=False))
    report = json.loads((layout.root / "tflite" / "report.json").read_text())
    assert report["variants"][0]["conversion"]["output_bias_correction"] is False


def test_litert_quantizer_makes_an_integer_only_int8_beside_the_converter(tmp_path):
    pytest.importorskip("litert_quantizer")
    from convert.inspect_model import inspect_tflite

    layout = _grey_run(tmp_path)
    code = run_convert(ConvertOptions(run=layout.root, modes=("int8", LITERT_MODE), latency_runs=2,
                                      reference_images=0, golden_count=2, max_drop=5))
    report = json.loads((layout.root / "tflite" / "report.json").read_text())
    assert [v["mode"] for v in report["variants"]] == ["int8", LITERT_MODE]
    litert = report["variants"][1]
    assert litert["error"] is None, litert["error"]
    assert litert["conversion"]["converter"]["name"] == "litert-quantizer"
    assert "min and max over every" in litert["conversion"]["calibration_statistics"]
    path = layout.root / "tflite" / f"model_{LITERT_MODE}.tflite"
    info = inspect_tflite(path.read_bytes())
    assert info["integer_only"], info["tensor_types"]
    classifier = CrackClassifier(path)
    assert classifier.input_dtype == np.int8
    scale, zero = classifier.input_quantization
    assert math.isclose(scale, 1.0, rel_tol=1e-6) and zero == -128  # raw pixels, shifted by 128
    # a grey model is exact enough in int8 for both backends to agree with Keras on every image
    assert litert["comparison"]["agreement"] == 1.0 and litert["gate"]["passed"]
    assert code == 0
