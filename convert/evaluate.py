"""Score the Keras model and every TFLite variant on the same decoded test images.

The Keras model runs in TensorFlow (``training.keras_inference``); TFLite variants run only
through ``edge.classifier.CrackClassifier`` (the LiteRT wrapper the device uses), with a chosen
kernel set, so the numbers here are what the edge runner will produce. Labels come from one
threshold, the run's contract threshold, for all.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.classifier import CrackClassifier
from edge.contract import ModelContract
from edge.interpreter import DEFAULT_KERNELS, default_thread_count
from edge.metrics import binary_report, predict_labels

BATCH_SIZE = 32
WARMUP_RUNS = 2
# A variant whose probabilities vary less than this share of the Keras model's spread has
# collapsed (TensorFlow issue 40183: int8 ResNet50V2 predicting one value for everything) ...
COLLAPSE_STD_RATIO = 0.1
# ... unless the Keras model's own spread is below what a quantised output can show. An int8 or
# uint8 sigmoid output moves in steps of 1/256, so a near-constant Keras model (an untrained one)
# may come out as a single value without anything having collapsed; accuracy and agreement still
# judge such a variant.
COLLAPSE_MIN_REFERENCE_STD = 2 / 256


def tflite_probabilities(model_path: str | Path, images: np.ndarray, contract: ModelContract,
                         threads: int | None = None, kernels: str = DEFAULT_KERNELS) -> np.ndarray:
    classifier = CrackClassifier(model_path, threads=threads or default_thread_count(),
                                 contract=contract, kernels=kernels)
    chunks = [classifier.predict(images[start:start + BATCH_SIZE])
              for start in range(0, len(images), BATCH_SIZE)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0,), np.float32)


def measure_latency(model_path: str | Path, images: np.ndarray, runs: int, contract: ModelContract,
                    threads: int | None = None) -> dict:
    """Single-image latency (preprocessed image in, probability out) through CrackClassifier."""
    threads = threads or default_thread_count()
    classifier = CrackClassifier(model_path, threads=threads, contract=contract)
    for i in range(WARMUP_RUNS):
        classifier.predict_one(images[i % len(images)])
    times = []
    for i in range(runs):
        image = images[i % len(images)]
        start = time.perf_counter()
        classifier.predict_one(image)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": runs,
        "threads": threads,
        "interpreter": f"{classifier.backend.package} {classifier.backend.version}",
    }


def distribution(probabilities: np.ndarray, threshold: float) -> dict:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return {
        "probability_std": float(probabilities.std()) if len(probabilities) else 0.0,
        "probability_min": float(probabilities.min()) if len(probabilities) else 0.0,
        "probability_max": float(probabilities.max()) if len(probabilities) else 0.0,
        "distinct_values": int(len(np.unique(probabilities))),
        "positive_share": float(predict_labels(probabilities, threshold).mean()) if len(probabilities) else 0.0,
    }


def compare_with_reference(reference: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """How far a variant is from the Keras model on the same images."""
    reference = np.asarray(reference, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    difference = np.abs(reference - probabilities)
    agree = predict_labels(reference, threshold) == predict_labels(probabilities, threshold)
    reference_std = float(reference.std())
    variant_std = float(probabilities.std())
    collapse_judged = reference_std >= COLLAPSE_MIN_REFERENCE_STD
    collapsed = bool(collapse_judged and variant_std < COLLAPSE_STD_RATIO * reference_std)
    return {
        "agreement": float(agree.mean()) if len(agree) else 1.0,
        "disagreements": int((~agree).sum()),
        "mean_abs_prob_diff": float(difference.mean()) if len(difference) else 0.0,
        "max_abs_prob_diff": float(difference.max()) if len(difference) else 0.0,
        "collapsed": collapsed,
        "std_ratio": (variant_std / reference_std) if reference_std > 0 else None,
        "reference_std": reference_std,
        "collapse_judged": collapse_judged,
    }


def score(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    return {**binary_report(labels, probabilities, threshold), **distribution(probabilities, threshold)}
