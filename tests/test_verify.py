"""Golden inputs, `crack-edge verify` and `crack-edge info` on models made by the real `crack
convert`: a healthy model passes on every kernel set of this machine, a deliberately perturbed one
fails (exit 1), an unusable model or golden file is exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT
from test_model_metadata import LABELS, THRESHOLD, alone, labelled_models  # noqa: F401 - fixture

from edge.errors import UserError
from edge.golden import MIN_MEAN_ABS_DP_BOUND, GoldenSet, golden_path
from edge.interpreter import KERNEL_SETS
from edge.model_metadata import sidecar_path
from edge.verify import VerifyOptions, verify_model


def crack_edge(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], cwd=PROJECT, capture_output=True,
                          text=True, timeout=180)


def deployed(model: Path, folder: Path) -> Path:
    """What a user copies to a device: the .tflite and its golden file, no sidecar."""
    copy = alone(model, folder)
    shutil.copy(golden_path(model), golden_path(copy))
    return copy


def test_the_golden_file_holds_both_classes_near_and_far_inputs(labelled_models):
    golden = GoldenSet.load(golden_path(labelled_models["int8"]), input_size=32)
    assert len(golden) == 10  # the whole (small) test split: fewer images than golden_count
    assert set(golden.labels.tolist()) == {0, 1}
    assert golden.kernel_names == tuple(KERNEL_SETS) and golden.kernel_probabilities.shape == (3, 10)
    assert golden.threshold == THRESHOLD and golden.margin >= 0.05
    assert golden.mean_abs_dp_bound >= MIN_MEAN_ABS_DP_BOUND
    np.testing.assert_array_equal(golden.build, golden.kernel_probabilities[0])  # xnnpack
    assert np.abs(golden.keras - golden.build).max() < 0.05  # int8 of a smooth model


@pytest.mark.parametrize("mode", ["fp32", "int8"])
@pytest.mark.parametrize("kernels", list(KERNEL_SETS))
def test_a_healthy_model_passes_on_every_kernel_set(labelled_models, tmp_path, mode, kernels):
    result = verify_model(VerifyOptions(deployed(labelled_models[mode], tmp_path), kernels=kernels))
    assert result.passed, result.text()
    assert result.vs_build.labels_kept == result.inputs and result.flipped_far == []
    if kernels == "xnnpack":  # the very kernels that made the golden file
        assert result.vs_build.max_abs_dp == 0.0


def test_verify_command_passes_with_exit_0(labelled_models, tmp_path):
    result = crack_edge("verify", "--model", deployed(labelled_models["int8"], tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("verify model_int8.tflite with model_int8.golden.npz: 10 golden inputs")
    assert lines[-1] == "PASS"
    assert any(line.strip().startswith("vs build machine  labels  10/10") for line in lines)
    data = json.loads(crack_edge("verify", "--model", deployed(labelled_models["int8"], tmp_path / "j"),
                                 "--json").stdout)
    assert data["passed"] is True and data["vs_keras"]["total"] == 10


def perturbed(model: Path, folder: Path, weight: float) -> Path:
    """The fp32 darkness model with its three Dense weights (-2.0) patched to ``weight``: the
    same card and golden file, other arithmetic, like a device whose kernels compute wrongly."""
    copy = deployed(model, folder)
    content = copy.read_bytes()
    original = np.full(3, -2.0, np.float32).tobytes()
    assert content.count(original) == 1
    copy.write_bytes(content.replace(original, np.full(3, weight, np.float32).tobytes()))
    return copy


def test_verify_fails_a_model_whose_probabilities_drift(labelled_models, tmp_path):
    model = perturbed(labelled_models["fp32"], tmp_path, weight=-2.4)
    result = crack_edge("verify", "--model", model)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("FAIL: mean |dp|") and "exceeds" in last
    details = verify_model(VerifyOptions(model))
    assert details.flipped_far == [] and details.vs_build.mean_abs_dp > details.mean_abs_dp_bound


def test_verify_fails_a_model_whose_labels_flip(labelled_models, tmp_path):
    result = verify_model(VerifyOptions(perturbed(labelled_models["fp32"], tmp_path, weight=2.0)))
    assert not result.passed and result.flipped_far
    assert "changed label" in result.reasons[0]


def test_verify_refuses_an_unusable_model_or_golden_file_with_exit_2(labelled_models, tmp_path):
    model = deployed(labelled_models["int8"], tmp_path / "missing")
    golden_path(model).unlink()
    result = crack_edge("verify", "--model", model)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: golden inputs model_int8.golden.npz not found beside model_int8.tflite: copy it with the model")
    model = deployed(labelled_models["int8"], tmp_path / "changed")
    golden_path(model).write_bytes(golden_path(model).read_bytes() + b"x")
    with pytest.raises(UserError, match="do not match model_int8.tflite's card"):
        verify_model(VerifyOptions(model))
    bare = tmp_path / "bare" / "model.tflite"  # a model with no card at all
    bare.parent.mkdir()
    from edge_models import line_model_path

    shutil.copy(line_model_path(), bare)
    result = crack_edge("verify", "--model", bare)
    assert result.returncode == 2 and "has no model card" in result.stderr


def test_a_truncated_golden_file_is_unusable(labelled_models, tmp_path):
    path = golden_path(labelled_models["int8"])
    broken = tmp_path / "broken.golden.npz"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot be read"):
        GoldenSet.load(broken)


def test_info_prints_what_the_model_says_about_itself(labelled_models, tmp_path):
    model = deployed(labelled_models["int8"], tmp_path)
    result = crack_edge("info", model)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "card       embedded" in text
    assert f"threshold  {THRESHOLD:g} (set by the test)" in text
    assert f"labels     {LABELS[0]} / {LABELS[1]}" in text
    assert "mode       int8: full integer" in text and "source     run darkness-labelled" in text
    assert "golden     model_int8.golden.npz, 10 inputs" in text
    assert "input    serving_default" in text and "uint8 [1, 32, 32, 3], scale 1, zero point 0" in text
    data = json.loads(crack_edge("info", model, "--json").stdout)
    assert data["card"]["contract"]["labels"] == list(LABELS) and data["card_source"] == "embedded"
    assert data["outputs"][0]["dtype"] == "uint8"
    assert not sidecar_path(model).exists()
