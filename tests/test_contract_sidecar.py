"""The one sidecar schema (edge.contract.ModelCard): every malformed sidecar is refused with a
UserError naming the field (exit 2 from the real `crack-edge score`, before any row), a model with
no contract warns loudly, and models that are not a crack classifier's shape are refused at load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT

from edge.classifier import CrackClassifier
from edge.contract import SIDECAR_SCHEMA_VERSION, ModelCard, ModelContract
from edge.errors import UserError
from edge.model_metadata import file_sha256, sidecar_path


def crack_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=PROJECT, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture
def model_copy(tmp_path):
    """The line model (fp32, no embedded card) with a valid sidecar, in a folder of its own."""
    from edge_models import line_model_path

    source = line_model_path()
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(source, folder / "model_fp32.tflite")
    shutil.copy(sidecar_path(source), folder / "model_fp32.json")
    return folder / "model_fp32.tflite"


def valid_sidecar(model: Path) -> dict:
    return json.loads(sidecar_path(model).read_text())


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    target = data
    for name in parents:
        target = target[name]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


_DELETE = object()

BAD_FIELDS = [
    ("threshold given as text", "contract.threshold", "0.5", "field 'contract.threshold' must be a number"),
    ("threshold out of range", "contract.threshold", 1.5, "threshold 1.5 is outside 0..1"),
    ("unknown resize", "contract.resize", "letterbox", "resize 'letterbox'"),
    ("input size as text", "contract.input_size", "32", "field 'contract.input_size' must be a whole number"),
    ("input size as bool", "contract.input_size", True, "field 'contract.input_size' must be a whole number"),
    ("labels not a pair", "contract.labels", ["crack"], "field 'contract.labels' must be a list of two"),
    ("label not text", "contract.labels", ["ok", 1], "field 'contract.labels[1]' must be text"),
    ("extra not an object", "contract.extra", [], "field 'contract.extra' must be an object"),
    ("unknown contract key", "contract.mean", [0.5], "unknown field(s) contract.mean"),
    ("no contract", "contract", _DELETE, "field 'contract' is missing"),
    ("contract a list", "contract", [], "field 'contract' must be an object"),
    ("no schema version", "schema_version", _DELETE, "field 'schema_version' is missing"),
    ("newer schema", "schema_version", SIDECAR_SCHEMA_VERSION + 1, "newer than this crackkit reads"),
    ("mode a number", "mode", 8, "field 'mode' must be text"),
    ("source run missing", "source_run", _DELETE, "field 'source_run' is missing"),
    ("source hash not hex", "source_run.model_sha256", "xyz", "field 'source_run.model_sha256' must be a sha256"),
    ("sha256 missing", "sha256", _DELETE, "field 'sha256' is missing"),
    ("details a list", "details", [], "field 'details' must be an object"),
    ("golden with a folder", "golden", {"file": "../x.npz", "sha256": "0" * 64}, "field 'golden.file'"),
]


@pytest.mark.parametrize("case, field, value, words", BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_a_malformed_sidecar_is_refused_naming_the_field(model_copy, case, field, value, words):
    sidecar_path(model_copy).write_text(json.dumps(_set(valid_sidecar(model_copy), field, value)))
    with pytest.raises(UserError) as caught:
        CrackClassifier(model_copy)
    message = str(caught.value)
    assert words in message and "sidecar model_fp32.json" in message and "\n" not in message


@pytest.mark.parametrize("content, words", [
    (b"[1, 2]", "must be a JSON object, got list"),
    (b"{not json", "is not valid JSON"),
    ('{"contract": "caf\xe9"}'.encode("latin-1"), "is not UTF-8 text"),
], ids=["list", "not-json", "not-utf8"])
def test_a_sidecar_of_the_wrong_shape_is_refused(model_copy, content, words):
    sidecar_path(model_copy).write_bytes(content)
    with pytest.raises(UserError, match=words):
        CrackClassifier(model_copy)


def test_a_sidecar_of_another_model_is_refused(model_copy):
    sidecar_path(model_copy).write_text(json.dumps({**valid_sidecar(model_copy), "sha256": "a" * 64}))
    with pytest.raises(UserError, match="does not match its sidecar model_fp32.json"):
        CrackClassifier(model_copy)


def test_card_round_trip_and_what_the_embedded_copy_leaves_out(model_copy):
    card = ModelCard.load(sidecar_path(model_copy))
    assert card.sha256 == file_sha256(model_copy)
    assert ModelCard.from_dict(card.to_dict(), "x") == card
    assert "sha256" not in card.embedded().to_dict() and card.differences(card.embedded()) == []
    edited = ModelCard.from_dict({**card.to_dict(), "contract": card.contract.with_threshold(0.9).to_dict()}, "x")
    assert card.differences(edited) == ["contract"]
    assert ModelContract.from_dict({"input_size": 64, "threshold": 1}).threshold == 1.0  # an int is a number


def test_score_refuses_a_bad_sidecar_with_exit_2_before_writing_anything(model_copy, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "grey.png"), np.full((40, 40, 3), 128, np.uint8))
    sidecar_path(model_copy).write_text(json.dumps(_set(valid_sidecar(model_copy), "contract.threshold", "0.7")))
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", str(model_copy), str(photos), "--out", str(out), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: sidecar model_fp32.json: field 'contract.threshold' must be a number, got text '0.7'"]
    assert not out.exists()


def test_a_model_without_any_contract_warns_loudly_and_uses_0_5(model_copy, tmp_path):
    sidecar_path(model_copy).unlink()
    photos = tmp_path / "photos"
    photos.mkdir()
    import cv2

    cv2.imwrite(str(photos / "grey.png"), np.full((40, 40, 3), 128, np.uint8))
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", str(model_copy), str(photos), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert "model_fp32.tflite has no contract" in warnings[0] and "threshold 0.5" in warnings[0]


def _tflite(tmp_path: Path, name: str, build) -> Path:
    import keras
    import tensorflow as tf

    inputs, outputs = build(keras)
    content = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, build, words", [
    ("softmax.tflite",
     lambda k: (lambda i: (i, k.layers.Dense(2, activation="softmax")(k.layers.GlobalAveragePooling2D()(i))))(
         k.Input((32, 32, 3))),
     "outputs 2 values per image"),
    ("wide.tflite",
     lambda k: (lambda i: (i, k.layers.Dense(1, activation="sigmoid")(k.layers.GlobalAveragePooling2D()(i))))(
         k.Input((32, 48, 3))),
     "takes input of shape [1, 32, 48, 3]"),
    ("grey.tflite",
     lambda k: (lambda i: (i, k.layers.Dense(1, activation="sigmoid")(k.layers.GlobalAveragePooling2D()(i))))(
         k.Input((32, 32, 1))),
     "takes input of shape [1, 32, 32, 1]"),
], ids=["2-class-softmax", "not-square", "one-channel"])
def test_a_model_that_is_not_a_crack_classifier_is_refused_at_load(tmp_path, name, build, words):
    path = _tflite(tmp_path, name, build)
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]")) as caught:
        CrackClassifier(path)
    assert "\n" not in str(caught.value)
    if name == "softmax.tflite":  # through the real command: exit 2, no output file
        out = tmp_path / "rows.csv"
        photo = tmp_path / "grey.png"
        import cv2

        cv2.imwrite(str(photo), np.full((40, 40, 3), 128, np.uint8))
        result = crack_edge("score", "--model", str(path), str(photo), "--out", str(out), "--no-progress")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: softmax.tflite outputs 2 values")
        assert not out.exists()
