"""PNG figures of a run (matplotlib, no display needed): training curves, confusion matrix, ROC and
PR curves, and a grid of the misclassified test images with their scores."""

from __future__ import annotations

import csv

import numpy as np

from edge.metrics import confusion, pr_curve, roc_curve
from edge.preprocess import load_for_model
from training.run_layout import RunLayout

MAX_MISCLASSIFIED = 24


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, layout: RunLayout, name: str, dpi: int = 100):
    """Write the figure to plots/NAME, free it, and return the path."""
    path = layout.plots / name
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    _pyplot().close(figure)
    return path


def write_plots(layout: RunLayout, items, labels, probabilities, threshold: float,
                img_size: int) -> list:
    layout.plots.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(layout), plot_confusion(layout, labels, probabilities, threshold),
               plot_roc_pr(layout, labels, probabilities),
               plot_misclassified(layout, items, labels, probabilities, threshold, img_size)]
    return [path for path in written if path is not None]


def read_history(layout: RunLayout) -> dict[str, np.ndarray]:
    if not layout.history.is_file():
        return {}
    with layout.history.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(row[key]) for row in rows if row.get(key) not in (None, "")])
            for key in rows[0]}


def plot_curves(layout: RunLayout):
    history = read_history(layout)
    if "epoch" not in history:
        return None
    plt = _pyplot()
    epochs = history["epoch"] + 1
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + metric)
            if values is not None and len(values) == len(epochs):
                axis.plot(epochs, values, style, label=("validation " if prefix else "training ") + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, layout, "curves.png")


def plot_confusion(layout: RunLayout, labels, probabilities, threshold: float):
    plt = _pyplot()
    matrix = np.array(confusion(labels, probabilities, threshold).as_matrix())
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.imshow(matrix, cmap="Blues")
    names = ["no_crack", "crack"]
    axis.set_xticks([0, 1], names)
    axis.set_yticks([0, 1], names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center",
                  color="white" if value > matrix.max() / 2 else "black", fontsize=14)
    axis.set_title(f"test split, threshold {threshold:.3f}")
    return _save(figure, layout, "confusion_matrix.png")


def plot_roc_pr(layout: RunLayout, labels, probabilities):
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return None
    plt = _pyplot()
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(labels, probabilities)
    roc_axis.plot(fpr, tpr)
    roc_axis.plot([0, 1], [0, 1], "--", color="grey")
    roc_axis.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    precision, recall, _ = pr_curve(labels, probabilities)
    pr_axis.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post")
    pr_axis.axhline(labels.mean(), ls="--", color="grey")
    pr_axis.set(xlabel="recall", ylabel="precision", title="precision-recall (test)",
                ylim=(0, 1.02))
    for axis in (roc_axis, pr_axis):
        axis.grid(alpha=0.3)
    return _save(figure, layout, "roc_pr.png")


def plot_misclassified(layout: RunLayout, items, labels, probabilities, threshold: float,
                       img_size: int):
    plt = _pyplot()
    labels = np.asarray(labels)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    wrong = np.nonzero(predicted != labels)[0]
    # Worst first: the most confident mistakes.
    wrong = wrong[np.argsort(-np.abs(np.asarray(probabilities)[wrong] - threshold))][:MAX_MISCLASSIFIED]
    columns = 6
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    if len(wrong) == 0:
        axes[0, 0].text(0, 0.5, "no misclassified test images", fontsize=12)
    for axis, index in zip(axes.flat, wrong):
        path = items[index][0]
        try:
            axis.imshow(load_for_model(path, img_size))
        except Exception:  # the file vanished since training; keep the caption
            pass
        truth = "crack" if labels[index] else "no_crack"
        axis.set_title(f"true {truth}\np={probabilities[index]:.3f}", fontsize=8)
    figure.suptitle(f"misclassified test images ({len(wrong)} shown, threshold {threshold:.3f})")
    return _save(figure, layout, "misclassified.png", dpi=90)
