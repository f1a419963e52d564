"""The metrics every report uses, against values computed by hand and against scikit-learn (a
test dependency only) on random scores with ties."""

from __future__ import annotations

import numpy as np
import pytest

from edge.metrics import (Confusion, best_f1_threshold, binary_report, confusion, pr_auc, pr_curve,
                          choose_threshold, clearly_better, right_where_they_differ, roc_auc, roc_curve,
                          threshold_for_recall)


def test_f1_is_the_harmonic_mean_not_the_original_projects_figure():
    # The original project printed F1 = 0.9655 beside precision 0.980 and recall 0.990 on 200
    # images. Those counts: 99 of 100 cracks found, 2 false alarms -> P = 99/101, R = 0.99.
    counts = Confusion(tp=99, fp=2, fn=1, tn=98)
    assert counts.precision == pytest.approx(0.980, abs=5e-4)
    assert counts.recall == pytest.approx(0.990)
    assert counts.f1 == pytest.approx(2 * (99 / 101) * 0.99 / (99 / 101 + 0.99))
    assert counts.f1 == pytest.approx(0.985, abs=5e-4)
    assert abs(counts.f1 - 0.9655) > 0.01
    assert counts.accuracy == pytest.approx(197 / 200)


def test_report_at_a_threshold_by_hand():
    labels = np.array([1, 1, 0, 0, 1])
    probabilities = np.array([0.9, 0.4, 0.4, 0.1, 0.6])
    report = binary_report(labels, probabilities, threshold=0.5)
    # predicted 1,0,0,0,1 -> TP 2, FN 1, TN 2, FP 0
    assert report["confusion_matrix"] == [[2, 0], [1, 2]]
    assert report["accuracy"] == pytest.approx(0.8)
    assert report["precision"] == 1.0
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(0.8)
    # positives (0.9, 0.4, 0.6) vs negatives (0.4, 0.1): 5 wins and 1 tie out of 6 pairs
    assert report["roc_auc"] == pytest.approx(5.5 / 6)
    # the threshold is inclusive: 0.4 counts as a crack at threshold 0.4
    assert confusion(labels, probabilities, 0.4) == Confusion(tp=3, fp=1, fn=0, tn=1)


def test_pr_auc_is_average_precision_by_hand():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # ranked: 1 (P=1, R=.5), 0, 1 (P=2/3, R=1) -> AP = 0.5*1 + 0.5*2/3
    assert pr_auc(labels, scores) == pytest.approx(0.5 + 1 / 3)
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def test_undefined_values_are_zero_or_none():
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    assert pr_auc([0, 0], [0.2, 0.3]) is None
    nothing = binary_report(np.array([0, 0]), np.array([0.1, 0.2]), 0.5)
    assert nothing["f1"] == 0.0 and nothing["precision"] == 0.0 and nothing["accuracy"] == 1.0


def test_threshold_choice_on_validation_scores():
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    scores = np.array([0.05, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])
    # thresholds: 0.7 -> P 1, R .75, F1 .857; 0.35 -> P .8, R 1, F1 .889 (best); 0.6 -> .75/.75
    assert best_f1_threshold(labels, scores) == pytest.approx(0.35)
    assert threshold_for_recall(labels, scores, 0.5) == pytest.approx(0.8)
    assert threshold_for_recall(labels, scores, 0.75) == pytest.approx(0.7)
    assert threshold_for_recall(labels, scores, 1.0) == pytest.approx(0.35)
    with pytest.raises(ValueError):
        threshold_for_recall(labels, scores, 0.0)


def test_the_kept_threshold_stays_unless_the_best_f1_one_is_clearly_better():
    # 20 clean images score 0.1, 20 cracks 0.9; between them the images the two thresholds (0.5
    # and the best-F1 one) decide differently
    def case(cracks_between: int, clean_between: int):
        labels = np.r_[np.zeros(20 + clean_between), np.ones(20 + cracks_between)].astype(int)
        scores = np.r_[np.full(20, 0.1), np.full(clean_between, 0.45),
                       np.full(20, 0.9), np.full(cracks_between, 0.4)]
        return labels, scores

    # best F1 goes below both in-between groups: 6 cracks right, 2 clean wrong: 6 - 2 < 2 sqrt(8)
    threshold, rule = choose_threshold(*case(6, 2), keep=0.5)
    assert threshold == 0.5
    assert rule == ("0.5 kept: the best F1 threshold on the validation split (0.2500) is right on 6 "
                    "of the 8 images it decides unlike 0.5, not clearly better")
    # 12 cracks right, 1 clean wrong: 12 - 1 > 2 sqrt(13) = 7.2: the best-F1 threshold wins
    threshold, rule = choose_threshold(*case(12, 1), keep=0.5, on="12 photos")
    assert threshold == pytest.approx(0.25)
    assert rule == "best F1 on 12 photos, right on 12 of the 13 images it decides unlike 0.5"
    # without keep, and with a target recall, the rule is as before
    assert choose_threshold(*case(6, 2)) == (pytest.approx(0.25), "best F1 on the validation split")
    assert choose_threshold(*case(6, 2), target_recall=0.5, keep=0.5)[0] == pytest.approx(0.675)
    # nothing decided differently: no gain, the kept threshold stays
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert choose_threshold(labels, scores, keep=0.5)[0] == 0.5


def test_only_the_images_two_thresholds_label_differently_count():
    labels = np.array([0, 1, 1, 0, 1])
    scores = np.array([0.3, 0.35, 0.45, 0.6, 0.9])
    # 0.3 vs 0.5 differ on the first three: 0.3 is right on the two cracks, wrong on the clean one
    assert right_where_they_differ(labels, scores, 0.3, 0.5) == (2, 3)
    assert right_where_they_differ(labels, scores, 0.5, 0.3) == (1, 3)
    assert right_where_they_differ(labels, scores, 0.5, 0.55) == (0, 0)
    # right - wrong must exceed 2 sqrt(differ): 3 of 3: 3 < 3.46; 4 of 4: 4 = 4; 5 of 5: 5 > 4.47
    assert not clearly_better(3, 3) and not clearly_better(4, 4) and clearly_better(5, 5)
    assert clearly_better(9, 10) and not clearly_better(8, 10) and not clearly_better(0, 0)


def random_case(seed: int, count: int = 60, levels: int = 12):
    """Labels and scores with many ties (scores on a grid of ``levels`` values), both classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    labels[:2] = [0, 1]
    scores = rng.integers(0, levels, count) / (levels - 1)
    return labels, scores


@pytest.mark.parametrize("seed", range(8))
def test_curves_and_areas_agree_with_scikit_learn_on_tied_random_scores(seed):
    from sklearn import metrics

    labels, scores = random_case(seed)
    assert len(np.unique(scores)) < len(scores)  # ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert pr_auc(labels, scores) == pytest.approx(metrics.average_precision_score(labels, scores))

    fpr, tpr, thresholds = roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thresholds = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])  # both start above every score

    precision, recall, pr_thresholds = pr_curve(labels, scores)
    sk_precision, sk_recall, sk_pr_thresholds = metrics.precision_recall_curve(labels, scores)
    # scikit-learn: lowest threshold first, with a final (precision 1, recall 0) point
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1])
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1])
    np.testing.assert_allclose(pr_thresholds, sk_pr_thresholds[::-1])


@pytest.mark.parametrize("seed", range(8))
def test_counts_and_ratios_agree_with_scikit_learn_at_every_threshold(seed):
    from sklearn import metrics

    labels, scores = random_case(seed, count=40, levels=6)
    # every score is a threshold (ties fall on it: >= counts them as cracks), plus both ends
    for threshold in [0.0, *np.unique(scores), 1.01]:
        predicted = (scores >= threshold).astype(int)
        report = binary_report(labels, scores, threshold)
        assert report["confusion_matrix"] == metrics.confusion_matrix(labels, predicted,
                                                                      labels=[0, 1]).tolist()
        assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
        for name, score in (("precision", metrics.precision_score),
                            ("recall", metrics.recall_score), ("f1", metrics.f1_score)):
            assert report[name] == pytest.approx(score(labels, predicted, zero_division=0)), name


@pytest.mark.parametrize("seed", range(8))
def test_threshold_choices_are_the_best_by_scikit_learn(seed):
    from sklearn import metrics

    labels, scores = random_case(seed, count=40, levels=6)
    candidates = np.unique(scores)[::-1]  # highest first: the rules prefer fewer false alarms
    f1 = [metrics.f1_score(labels, (scores >= t).astype(int), zero_division=0) for t in candidates]
    assert best_f1_threshold(labels, scores) == candidates[int(np.argmax(f1))]
    for target in (0.3, 0.8, 1.0):
        recall = [metrics.recall_score(labels, (scores >= t).astype(int)) for t in candidates]
        assert threshold_for_recall(labels, scores, target) == \
            next(t for t, r in zip(candidates, recall) if r >= target)
