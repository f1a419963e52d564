"""End to end: a tiny real training run (ResNet50V2 at 32x32, random initialisation, a few dozen
generated images, one epoch per phase) and the files, numbers and exit codes it must produce."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.contract import ModelContract
from edge.metrics import binary_report
from training.demo_data import DemoOptions, generate_demo

SIZE = 32
METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "confusion_matrix",
               "threshold", "weights", "img_size", "split_sizes"}


def crack(args: list[str]) -> int:
    from training.cli import main

    saved = sys.argv
    sys.argv = ["crack", *args]
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    generate_demo(DemoOptions(out=data, count=20, size=48, seed=1))
    (data / "crack" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code = crack(["train", "--data", str(data), "--runs-dir", str(root / "runs"), "--name", "tiny",
                  "--img-size", str(SIZE), "--weights", "none", "--head-epochs", "1",
                  "--epochs", "1", "--batch-size", "8"])
    assert code == 0
    return root / "runs" / "tiny"


@pytest.mark.slow
def test_a_tiny_run_writes_every_output(tiny_run):
    for name in ("model.keras", "contract.json", "metrics.json", "history.csv", "train.log",
                 "options.json", "test_predictions.csv", "splits/train.csv", "splits/val.csv",
                 "splits/test.csv", "plots/curves.png", "plots/confusion_matrix.png",
                 "plots/roc_pr.png", "plots/misclassified.png"):
        path = tiny_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    # weights only, not the optimizer state: 23.6M float32 parameters are 94 MB, Adam would add 188
    assert 90e6 < (tiny_run / "model.keras").stat().st_size < 110e6
    assert (tiny_run / "tensorboard").is_dir() and any((tiny_run / "tensorboard").rglob("*tfevents*"))
    latest = tiny_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == tiny_run.resolve()
    with (tiny_run / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1]  # phase 1 epoch 0, phase 2 epoch 1
    log = (tiny_run / "train.log").read_text()
    assert "broken.jpg" in log and "skipped 1 unreadable file" in log
    # convolution weights do not depend on the input size: the original count at 32x32 too
    assert "parameters: 23,566,849 (23,521,409 trainable, 45,440 non-trainable)" in log


@pytest.mark.slow
def test_metrics_agree_with_the_confusion_matrix_and_the_predictions(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["weights"] == "none" and metrics["img_size"] == SIZE
    sizes = metrics["split_sizes"]
    assert sum(sizes.values()) == 40  # the truncated file was skipped
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert tn + fp + fn + tp == sizes["test"]
    assert metrics["accuracy"] == pytest.approx((tp + tn) / sizes["test"])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(2 * precision * recall / (precision + recall)
                                          if precision + recall else 0.0)
    with (tiny_run / "test_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    again = binary_report(labels, scores, metrics["threshold"])
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert again["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-5)
    contract = ModelContract.load(tiny_run / "contract.json")
    assert contract.input_size == SIZE and contract.threshold == pytest.approx(metrics["threshold"])
    assert 0.0 <= contract.threshold <= 1.0


@pytest.mark.slow
def test_predict_reproduces_the_test_predictions(tiny_run, tmp_path):
    with (tiny_run / "test_predictions.csv").open() as handle:
        expected = {r["path"]: float(r["probability"]) for r in csv.DictReader(handle)}
    out = tmp_path / "predictions.csv"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert crack(["predict", "--run", str(tiny_run.parent / "latest"), "--out", str(out),
                  *expected, str(bad)]) == 0
    with out.open() as handle:
        rows = {r["path"]: r for r in csv.DictReader(handle)}
    for path, probability in expected.items():
        assert float(rows[path]["probability"]) == pytest.approx(probability, abs=1e-5)
    assert rows[str(bad)]["probability"] == "" and rows[str(bad)]["error"]


@pytest.mark.slow
def test_the_model_takes_raw_pixels_and_has_the_original_parameter_count():
    from training.model import build_classifier, parameter_counts

    model, base, weights = build_classifier(224, "none")
    assert parameter_counts(model) == {"total": 23_566_849, "trainable": 23_521_409,
                                       "non_trainable": 45_440}
    assert model.layers[1].name == "resnet_v2_scaling"
    assert not weights.pretrained and weights.warning is None


def test_imagenet_without_network_or_cache_says_which_file_to_put_where(tmp_path, monkeypatch):
    import keras.src.applications.resnet as resnet

    from edge.errors import UserError
    from training.model import IMAGENET_NOTOP_FILE, build_classifier

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(resnet.file_utils, "get_file", offline)
    with pytest.raises(UserError) as error:
        build_classifier(32, "imagenet")
    assert IMAGENET_NOTOP_FILE in str(error.value) and str(tmp_path / "models") in str(error.value)
    _, _, weights = build_classifier(32, "auto")
    assert weights.used == "none" and "random initialisation" in weights.warning
    with pytest.raises(UserError, match="not 'auto', 'imagenet', 'none' or an existing file"):
        build_classifier(32, str(tmp_path / "missing.h5"))


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_resume_finishes_the_run(tmp_path):
    data = tmp_path / "data"
    generate_demo(DemoOptions(out=data, count=100, size=32, seed=2))
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "training", "train", "--data", str(data), "--runs-dir",
               str(runs), "--name", "stopped", "--img-size", str(SIZE), "--weights", "none",
               "--epochs", "4", "--patience", "10", "--batch-size", "8"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = runs / "stopped" / "train.log"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if log.is_file() and "epoch 1 done" in log.read_text():
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "crack train --resume" in stderr
    run = runs / "stopped"
    assert not (run / "model.keras").exists()
    backup = json.loads((run / "checkpoints" / "backup_fine_tune" / "training_metadata.json").read_text())
    assert 1 <= backup["epoch"] < 4
    assert crack(["train", "--resume", str(run)]) == 0
    with (run / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1, 2, 3]
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    assert "resuming" in log.read_text()


@pytest.mark.slow
def test_edge_fp32_agrees_with_keras_predict_within_1e_3(tiny_run, tmp_path):
    """The same files through `crack predict` (Keras) and the edge runner (fp32 .tflite)."""
    from edge.score import probabilities_for

    assert crack(["convert", "--run", str(tiny_run), "--modes", "fp32", "--latency-runs", "2",
                  "--max-drop", "100"]) == 0
    with (tiny_run / "splits" / "test.csv").open() as handle:
        paths = [Path(row["path"]) for row in csv.DictReader(handle)]
    out = tmp_path / "keras.csv"
    assert crack(["predict", "--run", str(tiny_run), "--out", str(out), *map(str, paths)]) == 0
    with out.open() as handle:
        keras_rows = {row["path"]: float(row["probability"]) for row in csv.DictReader(handle)}
    edge_probabilities = probabilities_for(tiny_run / "tflite" / "model_fp32.tflite", paths)
    differences = [abs(keras_rows[str(p)] - e) for p, e in zip(paths, edge_probabilities)]
    assert len(differences) == len(paths) > 0
    assert max(differences) < 1e-3
