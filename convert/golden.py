"""Choosing and measuring a variant's golden inputs (the file format is edge.golden's).

From the test split: a quarter of the inputs closest to the threshold (a device may flip those;
they are reported, not failed), the rest from both classes, spread over the probability range.
Each is scored on the build machine under every kernel set the conversion evaluated; the spread
between kernel sets gives the margin around the threshold and the bound on mean |dp| that
`crack-edge verify` allows a healthy device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.source import ImageSet
from convert.variant import KernelEvaluation
from edge.contract import ModelContract
from edge.golden import MIN_MARGIN, MIN_MEAN_ABS_DP_BOUND, GoldenSet
from edge.interpreter import DEFAULT_KERNELS

NEAR_SHARE = 0.25


def choose_golden(labels: np.ndarray, probabilities: np.ndarray, threshold: float, count: int) -> np.ndarray:
    """Indices of ``count`` golden inputs (fewer if the split is smaller), sorted."""
    count = min(count, len(labels))
    distance = np.abs(probabilities.astype(np.float64) - threshold)
    near = list(np.argsort(distance, kind="stable")[:max(1, int(count * NEAR_SHARE))])
    chosen = set(near)
    far_count = count - len(near)
    by_class = {c: [int(i) for i in np.argsort(probabilities, kind="stable")
                    if labels[i] == c and int(i) not in chosen] for c in (0, 1)}
    wanted = {0: far_count // 2, 1: far_count - far_count // 2}
    for c in (0, 1):  # a class short of images leaves its share to the other
        other = 1 - c
        if len(by_class[c]) < wanted[c]:
            wanted[other] += wanted[c] - len(by_class[c])
            wanted[c] = len(by_class[c])
    for c in (0, 1):
        pool = by_class[c]
        if wanted[c] and pool:
            picks = np.linspace(0, len(pool) - 1, wanted[c]).round().astype(int)
            chosen.update(pool[i] for i in dict.fromkeys(picks))
    return np.array(sorted(chosen), dtype=np.int64)


def subset_with(count: int, limit: int, required: np.ndarray) -> np.ndarray:
    """At most ``limit`` (or len(required), if more) of ``count`` indices, sorted: ``required``
    plus indices spread evenly over the range."""
    chosen = set(int(i) for i in required)
    spread = np.linspace(0, count - 1, max(limit, 1)).round().astype(int)
    for index in spread:
        if len(chosen) >= limit:
            break
        chosen.add(int(index))
    return np.array(sorted(chosen), dtype=np.int64)


def measure_golden(model_path: Path, chosen: np.ndarray, test: ImageSet, keras: np.ndarray,
                   evaluations: tuple[KernelEvaluation, ...], contract: ModelContract,
                   threads: int | None) -> GoldenSet:
    """The golden inputs ``chosen`` of the test split. ``build`` is scored afresh with the default
    kernels, on exactly the batch `crack-edge verify` will run; the other kernel sets' probabilities
    come from their evaluations (which include the golden inputs). Derives the margin and bound."""
    from convert.evaluate import tflite_probabilities

    images = test.images[chosen]
    build = tflite_probabilities(model_path, images, contract, threads, DEFAULT_KERNELS)
    names, rows = [DEFAULT_KERNELS], [build]
    for evaluation in evaluations:
        if evaluation.kernels == DEFAULT_KERNELS:
            continue
        position = {int(index): i for i, index in enumerate(evaluation.indices)}
        if all(int(index) in position for index in chosen):
            names.append(evaluation.kernels)
            rows.append(evaluation.probabilities[[position[int(index)] for index in chosen]])
    scored = np.stack(rows).astype(np.float32)
    spread = np.abs(scored.astype(np.float64) - build)
    margin = max(MIN_MARGIN, float(spread.max()))
    bound = max(MIN_MEAN_ABS_DP_BOUND, float(spread.mean(axis=1).max()))
    return GoldenSet(images=images, labels=test.labels[chosen], keras=keras[chosen], build=build,
                     kernel_names=tuple(names), kernel_probabilities=scored, threshold=contract.threshold,
                     margin=margin, mean_abs_dp_bound=bound)
