"""`crack train --init runs/NAME`: a run that starts from the session's tiny run (32 px), adapts it
on a few generated images, records its parent, and converts like any run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.model_metadata import file_sha256, read_model_card
from fixtures_training import TINY_SIZE, run_crack
from training.adapt import (INIT_FINE_TUNE_AT, INIT_HEAD_EPOCHS, INIT_LR_DIVISOR, adapt_batchnorm,
                            options_from_parent, starting_model)
from training.options import TrainOptions


def crack_process(*args) -> subprocess.CompletedProcess:
    """`crack ARGS` as a user runs it: the real exit code and stderr."""
    return subprocess.run([sys.executable, "-m", "convert", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def new_surface(tmp_path_factory):
    """Eight generated images per class: the 'few labelled photos' of a new surface."""
    from training.demo_data import DemoOptions, generate_demo

    data = tmp_path_factory.mktemp("new-surface") / "site"
    generate_demo(DemoOptions(out=data, count=8, size=40, seed=5), progress=False)
    return data


def test_the_small_data_recipe_and_the_parents_input_size_fill_what_was_not_given(tiny_run, tmp_path):
    options = options_from_parent(TrainOptions(data=tmp_path, init=tiny_run.parent / "latest",
                                               learning_rate=2e-3), img_size=None)
    assert options.img_size == TINY_SIZE
    assert options.init == tiny_run.resolve()  # runs/latest resolved: resume works from anywhere
    assert options.init_model_sha256 == file_sha256(tiny_run / "model.keras")
    assert (options.head_epochs, options.fine_tune_at) == (INIT_HEAD_EPOCHS, INIT_FINE_TUNE_AT)
    assert options.fine_tune_learning_rate == pytest.approx(2e-3 / INIT_LR_DIVISOR)
    given = options_from_parent(TrainOptions(data=tmp_path, init=tiny_run, head_epochs=0,
                                             fine_tune_at="conv4", fine_tune_learning_rate=1e-6),
                                img_size=TINY_SIZE)  # the same size, given: fine
    assert (given.head_epochs, given.fine_tune_at, given.fine_tune_learning_rate) == (0, "conv4", 1e-6)


@pytest.mark.parametrize("extra, message", [
    (["--img-size", "64"], "--img-size 64 conflicts with --init tiny, whose model takes 32 px"),
    (["--weights", "none"], "--init and --weights are alternatives"),
])
def test_conflicting_options_are_refused_with_exit_2(tiny_run, new_surface, tmp_path, extra, message):
    result = crack_process("train", "--init", tiny_run, "--data", new_surface, "--runs-dir", tmp_path, *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing was created


def test_an_init_that_is_not_a_finished_run_is_refused(new_surface, tmp_path):
    (tmp_path / "half").mkdir()
    result = crack_process("train", "--init", tmp_path / "half", "--data", new_surface, "--runs-dir", tmp_path)
    assert result.returncode == 2
    assert "has no model.keras and contract.json (not a finished run)" in result.stderr


@pytest.mark.slow
def test_the_starting_model_is_the_parents_classifier_weight_for_weight(tiny_run, tmp_path):
    import keras

    options = options_from_parent(TrainOptions(data=tmp_path, init=tiny_run), img_size=None)
    model, base, weights = starting_model(options)
    parent = keras.models.load_model(tiny_run / "model.keras", compile=False)
    assert base.name == "resnet50v2" and weights.pretrained and weights.used.startswith("run tiny ")
    assert len(model.weights) == len(parent.weights) > 250
    for mine, theirs in zip(model.weights, parent.weights):
        assert np.array_equal(np.asarray(mine), np.asarray(theirs)), mine.path


@pytest.mark.slow
def test_batchnorm_statistics_become_the_new_surfaces_alone(tiny_run, new_surface, tmp_path):
    """AdaBN: every moving statistic is replaced, also in the blocks the parent saved frozen (the
    tiny run fine-tuned conv5 only); the parent's leave no trace (doing it twice gives the same as
    once); no weight is learnt; the momentum and the frozen flags are given back."""
    import keras

    options = options_from_parent(TrainOptions(data=tmp_path, init=tiny_run), img_size=None)
    model, _, _ = starting_model(options)
    norms = [w for w in model.weights if "moving_" in w.path]
    learnt = [w for w in model.weights if "moving_" not in w.path]
    before = [np.array(w) for w in norms]
    kept = [np.array(w) for w in learnt]
    items = [(str(path), int(path.parent.name == "crack")) for path in sorted(new_surface.rglob("*.png"))]
    def settings():
        return {layer.name: (layer.momentum, layer.trainable) for layer in model.get_layer("resnet50v2").layers
                if isinstance(layer, keras.layers.BatchNormalization)}

    momenta = settings()
    assert sum(not trainable for _, trainable in momenta.values()) > 30  # conv1..conv4 saved frozen

    assert adapt_batchnorm(model, items, TINY_SIZE, batch_size=6) == len(momenta) == 49  # 3 batches
    once = [np.array(w) for w in norms]
    assert all(not np.array_equal(a, b) for a, b in zip(before, once))  # every statistic replaced
    assert all(np.array_equal(a, np.array(w)) for a, w in zip(kept, learnt))
    adapt_batchnorm(model, items, TINY_SIZE, batch_size=6)
    assert all(np.allclose(a, np.array(w), atol=1e-5) for a, w in zip(once, norms))
    assert settings() == momenta


@pytest.mark.slow
def test_an_init_run_trains_records_its_parent_and_converts(tiny_run, new_surface, tmp_path):
    runs = tmp_path / "runs"
    result = run_crack("train", "--init", tiny_run, "--data", new_surface, "--runs-dir", runs,
                       "--name", "site", "--head-epochs", 1, "--epochs", 1, "--batch-size", 8)
    assert result.exit_code == 0, (result.output, result.exception)
    run = runs / "site"
    parent = {"name": "tiny", "model_sha256": file_sha256(tiny_run / "model.keras")}
    options = json.loads((run / "options.json").read_text())
    assert options["init"] == str(tiny_run.resolve())
    assert options["init_model_sha256"] == parent["model_sha256"]
    assert (options["img_size"], options["fine_tune_at"]) == (TINY_SIZE, INIT_FINE_TUNE_AT)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["parent_run"] == parent and metrics["img_size"] == TINY_SIZE
    assert metrics["weights"].startswith("run tiny (model.keras sha256 ")
    assert sum(metrics["split_sizes"].values()) == 16
    contract = json.loads((run / "contract.json").read_text())
    assert contract["extra"]["parent_run"] == parent and contract["input_size"] == TINY_SIZE
    log = (run / "train.log").read_text()
    train_count = metrics["split_sizes"]["train"]
    assert f"BatchNorm statistics of 49 layers re-estimated on the {train_count} training images" in log
    assert "phase 1: head only, base frozen, 1 epoch(s)" in log
    assert "phase 2: fine-tuning base layers 154..189" in log and "learning rate 0.0001" in log
    assert "BatchNorm frozen with the new surface's statistics" in log
    assert file_sha256(tiny_run / "model.keras") == parent["model_sha256"]  # the parent is untouched

    # fine-tuning keeps BatchNorm frozen: the statistics of the new surface stay as estimated
    from training.predict import load_run_model
    from training.run_layout import read_split

    estimated, _, _ = starting_model(options_from_parent(TrainOptions(data=new_surface, init=tiny_run),
                                                         img_size=None))
    adapt_batchnorm(estimated, read_split(run / "splits" / "train.csv"), TINY_SIZE, batch_size=8)
    trained, _ = load_run_model(run)
    statistics = [[np.array(w) for w in model.weights if "moving_" in w.path] for model in (estimated, trained)]
    assert len(statistics[0]) == len(statistics[1]) == 2 * 49
    assert all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(*statistics))

    converted = run_crack("convert", "--run", run, "--modes", "fp32", "--latency-runs", 1, "--max-drop", 100)
    assert converted.exit_code == 0, converted.output
    card = read_model_card(run / "tflite" / "model_fp32.tflite").card
    assert card.source_run.name == "site"
    assert card.source_run.model_sha256 == file_sha256(run / "model.keras") != parent["model_sha256"]
    assert card.contract.extra["parent_run"] == parent
