"""Binary classification metrics in plain numpy: the one implementation that training, conversion
and the edge runner (`score --labels-from-folders`) all report with.

Labels are 0/1 (1 = crack), scores are probabilities, and an image is predicted a crack when its
probability reaches the threshold (``>=``, as ``ModelContract.label_index``). Undefined ratios
(precision with no positive predictions, recall with no positive labels) are reported as 0.0 and
areas under curves as None when the labels hold only one class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.total if self.total else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """2PR / (P + R), the harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_matrix(self) -> list[list[int]]:
        """[[tn, fp], [fn, tp]]: rows are the true label (no_crack, crack), columns the prediction."""
        return [[self.tn, self.fp], [self.fn, self.tp]]


def predict_labels(probabilities, threshold: float) -> np.ndarray:
    return (np.asarray(probabilities, dtype=np.float64) >= threshold).astype(np.int64)


def confusion(labels, probabilities, threshold: float) -> Confusion:
    labels = np.asarray(labels).astype(np.int64)
    predicted = predict_labels(probabilities, threshold)
    if labels.shape != predicted.shape:
        raise ValueError(f"{labels.shape[0]} labels but {predicted.shape[0]} probabilities")
    return Confusion(
        tp=int(((predicted == 1) & (labels == 1)).sum()),
        fp=int(((predicted == 1) & (labels == 0)).sum()),
        fn=int(((predicted == 0) & (labels == 1)).sum()),
        tn=int(((predicted == 0) & (labels == 0)).sum()),
    )


def roc_auc(labels, scores) -> float | None:
    """Probability that a random crack scores above a random non-crack (ties count half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(scores)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), from the highest threshold down."""
    labels = np.asarray(labels).astype(bool)
    thresholds, tp, fp = _cumulative_counts(labels, scores)
    positives, negatives = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    tpr = np.concatenate([[0.0], tp / positives])
    fpr = np.concatenate([[0.0], fp / negatives])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first."""
    labels = np.asarray(labels).astype(bool)
    thresholds, tp, fp = _cumulative_counts(labels, scores)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(labels.sum()), 1)
    return precision, recall, thresholds


def pr_auc(labels, scores) -> float | None:
    """Average precision: sum over thresholds of (recall step) x precision."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return None
    precision, recall, _ = pr_curve(labels, scores)
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * precision).sum())


def binary_report(labels, probabilities, threshold: float) -> dict:
    """Everything a report needs at one threshold, as plain JSON-ready values."""
    counts = confusion(labels, probabilities, threshold)
    return {
        "accuracy": counts.accuracy,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        "roc_auc": roc_auc(labels, probabilities),
        "pr_auc": pr_auc(labels, probabilities),
        "confusion_matrix": counts.as_matrix(),
        "threshold": float(threshold),
        "count": counts.total,
    }


def best_f1_threshold(labels, scores) -> float:
    """The threshold (one of the scores) with the highest F1; the highest such threshold on ties."""
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        raise ValueError("cannot choose a threshold: no positive examples")
    precision, recall, thresholds = pr_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def threshold_for_recall(labels, scores, target_recall: float) -> float:
    """The highest threshold whose recall reaches ``target_recall`` (fewest false alarms)."""
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        raise ValueError("cannot choose a threshold: no positive examples")
    _, recall, thresholds = pr_curve(labels, scores)
    reaching = np.nonzero(recall >= target_recall - 1e-12)[0]
    return float(thresholds[reaching[0]])


# A threshold chosen on labelled scores replaces the one a caller would otherwise keep only when it
# gets more images right by more than this many standard errors (see choose_threshold).
CLEAR_GAIN_STANDARD_ERRORS = 2.0


def choose_threshold(labels, probabilities, target_recall: float | None = None,
                     on: str = "the validation split", keep: float | None = None) -> tuple[float, str]:
    """(threshold, how it was chosen): the best F1 on these labelled scores, or the highest
    threshold reaching ``target_recall``; 0.5 when they hold one class only. ``on`` names the
    data in the rule (training: the validation split; calibration: the site photos).

    Every threshold between the chosen score and the next lower score labels these images alike;
    the one returned lies midway between them, not on the score itself. On a large split the two
    are nearly equal; on a few well separated photos (a site, a small validation split) a
    threshold on the weakest crack's score would call every slightly weaker crack clean.

    ``keep`` (best F1 only): a threshold to stay with unless the best-F1 one is clearly better on
    these images (``clearly_better``). Training keeps 0.5, the point its class-balanced loss aims at:
    on a few hundred validation images the best-F1 threshold mostly fits their noise (on 8 demo
    models, over 100 re-drawn validation/test splits each, it scored 0.3-0.5 points below 0.5 on
    7 and 0.5 above on 1)."""
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(labels) == 0 or labels.min() == labels.max():
        return 0.5, f"0.5 ({on} has one class, so no threshold could be chosen)"
    if target_recall is not None:
        chosen = threshold_for_recall(labels, probabilities, target_recall)
        rule = f"highest threshold with recall >= {target_recall} on {on}"
    else:
        chosen, rule = best_f1_threshold(labels, probabilities), f"best F1 on {on}"
    below = probabilities[probabilities < chosen]
    threshold = float((chosen + below.max()) / 2) if len(below) else chosen
    if keep is None or target_recall is not None:
        return threshold, rule
    right, differ = right_where_they_differ(labels, probabilities, threshold, keep)
    if clearly_better(right, differ):
        return threshold, f"{rule}, right on {right} of the {differ} images it decides unlike {keep:g}"
    return float(keep), (f"{keep:g} kept: the best F1 threshold on {on} ({threshold:.4f}) is right on "
                         f"{right} of the {differ} images it decides unlike {keep:g}, not clearly better")


def right_where_they_differ(labels, probabilities, threshold: float, other: float) -> tuple[int, int]:
    """(how many of the images ``threshold`` and ``other`` label differently ``threshold`` gets
    right, how many they label differently). On each such image exactly one of them is right."""
    labels = np.asarray(labels).astype(np.int64)
    mine, theirs = predict_labels(probabilities, threshold), predict_labels(probabilities, other)
    differ = mine != theirs
    return int((mine[differ] == labels[differ]).sum()), int(differ.sum())


def clearly_better(right: int, differ: int) -> bool:
    """A sign test (McNemar's): were both thresholds equally good, each of the ``differ`` images
    would go either way, and right - wrong would be 0 +- sqrt(differ). Clearly better: more than
    CLEAR_GAIN_STANDARD_ERRORS of those above 0."""
    return right - (differ - right) > CLEAR_GAIN_STANDARD_ERRORS * math.sqrt(differ)


def _cumulative_counts(labels: np.ndarray, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the true/false positive counts at ``>= threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    tp = np.cumsum(sorted_labels)
    fp = np.cumsum(~sorted_labels)
    last_of_each = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    return sorted_scores[last_of_each], tp[last_of_each].astype(np.float64), fp[last_of_each].astype(np.float64)


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, tied scores sharing the mean of their ranks."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    boundaries = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1, len(scores)]
    ranks = np.empty(len(scores), dtype=np.float64)
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[start:end]] = (start + end - 1) / 2.0 + 1.0
    return ranks
