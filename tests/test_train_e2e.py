"""End to end: the session's tiny real training run (tests/fixtures_training.py: ResNet50V2 at
32x32, random initialisation, 40 generated images, one epoch per phase) and the files, numbers and
exit codes it must produce; a run stopped by SIGTERM and resumed; ImageNet weights from the
Keras cache."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from edge.contract import ModelContract
from edge.metrics import binary_report, clearly_better
from fixtures_training import TINY_PER_CLASS, TINY_SIZE, copy_run, run_crack

METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "confusion_matrix",
               "threshold", "weights", "img_size", "split_sizes"}


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
    assert any((tiny_run / "tensorboard").rglob("*tfevents*"))
    latest = tiny_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == tiny_run.resolve()
    with (tiny_run / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1]  # phase 1 epoch 0, phase 2 epoch 1
    state = json.loads((tiny_run / "state.json").read_text())
    assert sorted(state["done"]) == ["evaluate", "fine_tune", "head"]
    log = (tiny_run / "train.log").read_text()
    assert "broken.jpg" in log and "skipped 1 unreadable file" in log
    assert "phase 1: head only" in log
    assert "phase 2: fine-tuning base layers 154..189 (14,972,929 trainable parameters)" in log
    # convolution weights do not depend on the input size: the original count at 32x32 too
    assert "parameters: 23,566,849 (23,521,409 trainable, 45,440 non-trainable)" in log
    # the model takes raw pixels: its input goes straight into its own scaling layer
    assert log.index("rgb_0_255 (InputLayer)") < log.index("resnet_v2_scaling (Rescaling)") \
        < log.index("resnet50v2 (Functional)")


@pytest.mark.slow
def test_metrics_agree_with_the_confusion_matrix_and_the_predictions(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["weights"] == "none" and metrics["img_size"] == TINY_SIZE
    sizes = metrics["split_sizes"]
    assert sum(sizes.values()) == 2 * TINY_PER_CLASS  # the truncated file was skipped
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
    assert contract.input_size == TINY_SIZE
    assert contract.threshold == pytest.approx(metrics["threshold"])
    assert 0.0 <= contract.threshold <= 1.0


@pytest.mark.slow
def test_the_run_keeps_threshold_0_5_unless_validation_clearly_shows_a_better_one(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    rule, threshold = metrics["threshold_rule"], metrics["threshold"]
    assert ModelContract.load(tiny_run / "contract.json").threshold_rule == rule
    if rule.startswith("0.5 "):  # kept, or a validation split of one class
        assert threshold == 0.5
    else:
        found = re.fullmatch(r"best F1 on the validation split, right on (\d+) of the (\d+) images it "
                             r"decides unlike 0\.5", rule)
        assert found, rule
        assert clearly_better(*map(int, found.groups())) and threshold != 0.5


@pytest.mark.slow
def test_predict_reproduces_the_test_predictions(tiny_run, tmp_path):
    with (tiny_run / "test_predictions.csv").open() as handle:
        expected = {r["path"]: float(r["probability"]) for r in csv.DictReader(handle)}
    out = tmp_path / "predictions.csv"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = run_crack("predict", "--run", tiny_run.parent / "latest", "--out", out, *expected, bad)
    assert result.exit_code == 0, result.output
    assert f"scored {len(expected)} image(s), 1 unreadable" in result.stdout
    with out.open() as handle:
        rows = {r["path"]: r for r in csv.DictReader(handle)}
    for path, probability in expected.items():
        assert float(rows[path]["probability"]) == pytest.approx(probability, abs=1e-5)
    assert rows[str(bad)]["probability"] == "" and rows[str(bad)]["error"]


@pytest.mark.slow
def test_edge_fp32_agrees_with_the_keras_test_predictions_within_1e_3(tiny_run, tmp_path):
    """The test split through Keras (training's test_predictions.csv, which `crack predict`
    reproduces, see above) and through the edge runner on the fp32 .tflite of `crack convert`."""
    from edge.score import probabilities_for

    run = copy_run(tiny_run, tmp_path / "run")
    result = run_crack("convert", "--run", run, "--modes", "fp32", "--latency-runs", 2,
                       "--max-drop", 100)
    assert result.exit_code == 0, result.output
    with (run / "test_predictions.csv").open() as handle:
        keras_rows = {row["path"]: float(row["probability"]) for row in csv.DictReader(handle)}
    paths = [Path(path) for path in keras_rows]
    edge_probabilities = probabilities_for(run / "tflite" / "model_fp32.tflite", paths)
    differences = [abs(keras_rows[str(p)] - e) for p, e in zip(paths, edge_probabilities)]
    assert len(differences) == len(paths) > 0
    assert max(differences) < 1e-3


class SignalAfterEpoch(logging.Handler):
    """Sends SIGTERM to this process when train.log says that epoch ``epoch`` is done: the signal
    arrives at a known point of training, not at a time that races it."""

    def __init__(self, epoch: int):
        super().__init__()
        self.line = f"epoch {epoch} done"
        self.sent = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.sent or not record.getMessage().startswith(self.line):
            return
        # without training's handler SIGTERM would end the test session: fail the test instead
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        self.sent = True
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_stops_after_the_batch_and_resume_finishes_the_run(tmp_path):
    """Two head epochs (the cheap phase: the base stays frozen), SIGTERM after the first."""
    from training.demo_data import DemoOptions, generate_demo
    from training.run_log import LOGGER

    data = tmp_path / "data"
    generate_demo(DemoOptions(out=data, count=12, size=32, seed=2), progress=False)
    run = tmp_path / "runs" / "stopped"
    handler_before = signal.getsignal(signal.SIGTERM)
    sender = SignalAfterEpoch(1)
    LOGGER.addHandler(sender)
    try:
        stopped = run_crack("train", "--data", data, "--runs-dir", run.parent, "--name", run.name,
                            "--img-size", TINY_SIZE, "--weights", "none", "--head-epochs", 2,
                            "--epochs", 0, "--batch-size", 4)
    finally:
        LOGGER.removeHandler(sender)
    assert sender.sent
    assert stopped.exit_code == 130, stopped.output
    assert "SIGTERM: stopping after this batch" in stopped.stderr
    assert f"Continue with: crack train --resume {run.resolve()}" in stopped.stderr
    assert signal.getsignal(signal.SIGTERM) == handler_before  # training put it back
    assert not (run / "model.keras").exists() and not (run.parent / "latest").exists()
    backup = json.loads((run / "checkpoints" / "backup_head" / "training_metadata.json")
                        .read_text())
    assert backup["epoch"] == 1  # the last finished epoch, not the one the signal cut short

    resumed = run_crack("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    with (run / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1]  # epoch 0 from the first process, epoch 1 after resuming
    assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
    assert (run.parent / "latest").resolve() == run.resolve()
    assert "resuming" in (run / "train.log").read_text()


def offline(*args, **kwargs):
    raise Exception("URL fetch failure: [Errno -2] Name or service not known")


@pytest.mark.slow
def test_imagenet_without_network_or_cache_says_which_file_to_put_where(tmp_path, monkeypatch):
    import keras.src.applications.resnet as resnet

    from edge.errors import UserError
    from training.model import IMAGENET_NOTOP_FILE, build_classifier

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
def test_imagenet_weights_in_the_keras_cache_are_loaded_layer_for_layer(tmp_path, monkeypatch):
    """A file laid out like Keras' ResNet50V2 notop ImageNet file (the Keras 2 HDF5 weights
    format), put where the offline hint says, is what --weights imagenet and auto load."""
    import h5py
    import keras
    import keras.src.applications.resnet as resnet
    from keras.src.legacy.saving import legacy_h5_format

    from training.model import IMAGENET_NOTOP_FILE, build_base, build_classifier

    keras.utils.set_random_seed(7)
    reference = build_base(TINY_SIZE, None)
    (tmp_path / "models").mkdir()
    with h5py.File(tmp_path / "models" / IMAGENET_NOTOP_FILE, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(resnet.file_utils, "get_file", offline)  # the cache, never the network

    for choice in ("imagenet", "auto"):
        keras.utils.set_random_seed(8)
        _, base, weights = build_classifier(TINY_SIZE, choice)
        assert (weights.used, weights.warning, weights.pretrained) == ("imagenet", None, True)
        layers = [layer for layer in reference.layers if layer.weights]
        assert len(layers) > 100
        for layer in layers:
            loaded = base.get_layer(layer.name).get_weights()
            expected = layer.get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(loaded, expected)), layer.name
