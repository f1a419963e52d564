"""After training: choose the decision threshold on validation, measure the test split, write
contract.json, metrics.json, test_predictions.csv and the plots.

The threshold is 0.5, the point the class-balanced loss trains for, unless the threshold with the
best F1 on the validation split is clearly better there (``edge.metrics.choose_threshold``), or the
highest one that reaches ``--target-recall``; the test split is reported at that threshold and at
0.5, and never influences any choice.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import numpy as np

from edge.contract import DEFAULT_THRESHOLD, ModelContract
from edge.atomic_files import write_bytes_atomic, write_json_atomic
from edge.metrics import binary_report, choose_threshold
from training.adapt import parent_record
from training.keras_inference import BATCH_SIZE, keras_probabilities
from training.run_layout import RunLayout
from training.run_log import say


def split_probabilities(model, items: list[tuple[str, int]], img_size: int) -> np.ndarray:
    """Scores of the Keras model for (path, label) items, decoded as on the device."""
    from training.pipeline import make_dataset

    if not items:
        return np.zeros((0,), np.float32)
    dataset = make_dataset(items, img_size, BATCH_SIZE, training=False, cache=False)
    return keras_probabilities(model, dataset)


def evaluate_run(layout: RunLayout, model, options, splits, weights) -> dict:
    """Writes contract.json, metrics.json, test_predictions.csv and plots/; returns the metrics."""
    from training.plots import write_plots

    size = options.img_size
    val_labels = np.array([label for _, label in splits["val"]])
    test_labels = np.array([label for _, label in splits["test"]])
    say(f"scoring {len(val_labels)} validation and {len(test_labels)} test images")
    val_probabilities = split_probabilities(model, splits["val"], size)
    test_probabilities = split_probabilities(model, splits["test"], size)

    # class weights make both classes count equally in the loss, so 0.5 (the contract's default)
    # is where the model balances them: kept unless validation clearly shows a better threshold
    threshold, how = choose_threshold(val_labels, val_probabilities, options.target_recall,
                                     keep=DEFAULT_THRESHOLD)
    parent = parent_record(options)  # the --init run this one started from
    ModelContract(input_size=size, threshold=threshold,
                  extra={"run": layout.name, "threshold_rule": how,
                         **({"parent_run": parent} if parent else {})}).save(layout.contract)
    at_threshold = binary_report(test_labels, test_probabilities, threshold)
    at_half = binary_report(test_labels, test_probabilities, 0.5)
    counts = {split: {"total": len(items), "crack": sum(l for _, l in items),
                      "no_crack": sum(1 - l for _, l in items)} for split, items in splits.items()}
    majority = max(counts["test"]["crack"], counts["test"]["no_crack"]) / max(len(test_labels), 1)
    warnings = [weights.warning] if weights.warning else []
    metrics = {
        **{key: at_threshold[key] for key in ("accuracy", "precision", "recall", "f1", "roc_auc",
                                              "pr_auc", "confusion_matrix")},
        "confusion_matrix_layout": "[[tn, fp], [fn, tp]]; rows true, columns predicted",
        "threshold": threshold,
        "threshold_rule": how,
        "at_0_5": at_half,
        "validation": binary_report(val_labels, val_probabilities, threshold),
        "majority_baseline_accuracy": majority,
        "weights": weights.used,
        "weights_requested": weights.requested,
        "parent_run": parent,
        "warnings": warnings,
        "img_size": size,
        "split_sizes": {split: c["total"] for split, c in counts.items()},
        "split_counts": counts,
        "data": str(options.data) if options.data else None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(layout.metrics, metrics)
    write_predictions(layout, splits["test"], test_probabilities, threshold)
    write_plots(layout, splits["test"], test_labels, test_probabilities, threshold, size)
    _print_summary(metrics)
    return metrics


def write_predictions(layout: RunLayout, items, probabilities, threshold: float) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", "label", "probability", "predicted"])
    for (path, label), probability in zip(items, probabilities):
        writer.writerow([path, label, f"{probability:.6f}", int(probability >= threshold)])
    write_bytes_atomic(layout.test_predictions, text.getvalue().encode())


def _print_summary(metrics: dict) -> None:
    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    half = metrics["at_0_5"]
    say(f"test ({metrics['split_sizes']['test']} images) at threshold {metrics['threshold']:.4f} "
        f"({metrics['threshold_rule']}):")
    say(f"  accuracy {fmt(metrics['accuracy'])}  precision {fmt(metrics['precision'])}  "
        f"recall {fmt(metrics['recall'])}  F1 {fmt(metrics['f1'])}  ROC AUC "
        f"{fmt(metrics['roc_auc'])}  PR AUC {fmt(metrics['pr_auc'])}")
    say(f"  confusion: TN {tn}  FP {fp}  FN {fn}  TP {tp}   (majority-class baseline accuracy "
        f"{metrics['majority_baseline_accuracy']:.4f})")
    say(f"  at threshold 0.5: accuracy {fmt(half['accuracy'])}  precision {fmt(half['precision'])}"
        f"  recall {fmt(half['recall'])}  F1 {fmt(half['f1'])}")
