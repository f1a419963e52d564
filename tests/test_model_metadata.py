"""The contract inside the .tflite: `crack convert` embeds the model card in the FlatBuffer's
metadata table; the device reads it without TensorFlow; a model copied alone scores with its own
threshold and labels; an embedded card and a sidecar that disagree are refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import EDGE_SIZE, PROJECT, darkness_model

from convert.options import ConvertOptions
from convert.pipeline import run_convert
from convert.testing import grey, write_run
from edge.classifier import CrackClassifier
from edge.contract import ModelContract
from edge.errors import UserError
from edge.model_metadata import (CONTRACT_KEY, file_sha256, read_metadata, read_model_card,
                                 sidecar_path, with_metadata)

THRESHOLD = 0.3  # not the default 0.5: a model that lost its contract would label differently
LABELS = ("intact", "cracked")
# the darkness model scores grey level 140 at 0.36: "cracked" at 0.3, "intact" at 0.5
BETWEEN_LEVEL = 140


@pytest.fixture(scope="session")
def labelled_models(tmp_path_factory) -> dict[str, Path]:
    """fp32 and int8 of the darkness model, converted once by `crack convert` with a contract of
    threshold 0.3 and labels intact/cracked."""
    run = tmp_path_factory.mktemp("labelled") / "darkness-labelled"
    levels = [10, 40, 70, 100, 120, 140, 160, 190, 220, 250]
    items = [(grey(EDGE_SIZE, level), int(level < 150)) for level in levels]
    layout = write_run(run, darkness_model(), {"train": items, "val": items, "test": items})
    ModelContract(input_size=EDGE_SIZE, threshold=THRESHOLD, labels=LABELS,
                  extra={"run": run.name, "threshold_rule": "set by the test"}).save(layout.contract)
    code = run_convert(ConvertOptions(run=run, modes=("fp32", "int8"), latency_runs=2, max_drop=100,
                                      recover=False))
    assert code == 0
    return {mode: run / "tflite" / f"model_{mode}.tflite" for mode in ("fp32", "int8")}


def alone(model: Path, folder: Path) -> Path:
    """The .tflite copied to a folder of its own, without its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(model, folder / model.name))


def test_the_card_is_embedded_under_the_projects_key(labelled_models):
    for mode, path in labelled_models.items():
        entries = read_metadata(path)
        assert "min_runtime_version" in entries  # the converter's own entries are kept
        embedded = json.loads(entries[CONTRACT_KEY])
        sidecar = json.loads(sidecar_path(path).read_text())
        assert embedded == {k: v for k, v in sidecar.items() if k != "sha256"}
        assert embedded["contract"]["threshold"] == THRESHOLD and embedded["contract"]["labels"] == list(LABELS)
        assert embedded["contract"]["extra"]["threshold_rule"] == "set by the test"
        assert embedded["mode"] == mode and embedded["source_run"]["name"] == "darkness-labelled"
        assert embedded["package_version"] and "sha256" not in embedded


def test_a_model_copied_alone_scores_with_its_own_threshold_and_labels(labelled_models, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for level in (20, BETWEEN_LEVEL, 230):
        cv2.imwrite(str(photos / f"grey_{level}.png"), np.full((40, 40, 3), level, np.uint8))
    model = alone(labelled_models["int8"], tmp_path / "device")
    out = tmp_path / "results.csv"
    result = subprocess.run([sys.executable, "-m", "edge", "score", "--model", str(model), str(photos),
                             "--out", str(out), "--no-progress"], cwd=PROJECT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "no contract" not in result.stderr
    from edge.results_file import read_results

    labels = {Path(row.path).name: row.label for row in read_results(out).rows}
    assert labels == {"grey_20.png": "cracked", f"grey_{BETWEEN_LEVEL}.png": "cracked", "grey_230.png": "intact"}


def test_reading_the_card_needs_no_tensorflow(labelled_models, tmp_path):
    model = alone(labelled_models["fp32"], tmp_path)
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge.classifier import CrackClassifier\n"
        f"c = CrackClassifier({str(model)!r})\n"
        "print(c.card_source, c.contract.threshold, '/'.join(c.contract.labels))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["embedded", str(THRESHOLD), "intact/cracked"]


def test_an_embedded_card_and_a_sidecar_that_disagree_are_refused(labelled_models, tmp_path):
    model = alone(labelled_models["fp32"], tmp_path)
    sidecar = json.loads(sidecar_path(labelled_models["fp32"]).read_text())
    sidecar["contract"]["threshold"] = 0.5  # edited by hand; its sha256 still matches the model
    sidecar_path(model).write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match=r"sidecar model_fp32.json disagrees with the contract embedded "
                                        r"in the model \(contract\)"):
        CrackClassifier(model)
    shutil.copy(sidecar_path(labelled_models["fp32"]), sidecar_path(model))
    found = read_model_card(model)
    assert found.embedded and found.sidecar and found.source == "embedded and sidecar (they agree)"


def test_rewriting_metadata_changes_no_prediction(labelled_models, tmp_path):
    content = labelled_models["int8"].read_bytes()
    again = with_metadata(content, {CONTRACT_KEY: b'{"replaced": true}', "other": b"x"})
    assert list(read_metadata_bytes(again)).count(CONTRACT_KEY) == 1
    assert read_metadata_bytes(again)[CONTRACT_KEY] == b'{"replaced": true}'
    images = np.stack([grey(EDGE_SIZE, level) for level in (0, 90, 128, 200, 255)])
    contract = ModelContract(input_size=EDGE_SIZE)
    paths = [tmp_path / "a.tflite", tmp_path / "b.tflite"]
    paths[0].write_bytes(content)
    paths[1].write_bytes(again)
    for kernels in ("xnnpack", "builtin", "reference"):
        a, b = (CrackClassifier(p, contract=contract, kernels=kernels).predict(images) for p in paths)
        np.testing.assert_array_equal(a, b)
    assert file_sha256(paths[0]) != file_sha256(paths[1])


def read_metadata_bytes(content: bytes) -> dict[str, bytes]:
    from edge.model_metadata import metadata_entries

    return metadata_entries(content)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x10\0\0\0TFL3" + b"\xff" * 8],
                         ids=["empty", "text", "truncated"])
def test_a_file_that_is_no_model_is_a_user_error(tmp_path, content):
    path = tmp_path / "broken.tflite"
    path.write_bytes(content)
    with pytest.raises(UserError, match="(is not a TFLite model|cannot read)"):
        read_metadata(path)
