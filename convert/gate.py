"""The accuracy gate, a pure function of a variant's result: a variant may lose at most
``max_drop`` percentage points of accuracy and of F1 against the Keras model on the same test
images, under the worst kernel set evaluated on the whole test split; a collapsed variant, a
conversion error, or a full int8 model that is not integer-only also fails. Then: which variant to
deploy (the first that passed in DEPLOY_PREFERENCE: full integer first).

The default ``--max-drop`` is DEFAULT_MAX_DROP for every run, including the first run on the
generated demo data (`make train convert`), whose int8 model passes it.
"""

from __future__ import annotations

from convert.modes import DEPLOY_PREFERENCE, MODE_TABLE
from convert.variant import GateResult, VariantResult

# Drops are rounded to this many decimals before the comparison so that 1.0 - 0.8 (which is
# 0.19999999999999996 in binary) counts as exactly 20 points.
_DECIMALS = 9
DEFAULT_MAX_DROP = 1.0


def drop_pp(reference: float, value: float) -> float:
    """How many percentage points ``value`` is below ``reference`` (negative = better)."""
    return round((reference - value) * 100.0, _DECIMALS)


def check_variant(keras_metrics: dict, variant: VariantResult, max_drop: float) -> GateResult:
    if variant.error is not None:
        return GateResult(False, max_drop, reasons=(f"conversion or evaluation failed: {variant.error}",))
    whole = [e for e in variant.evaluations if e.whole_split]
    if not whole:
        return GateResult(False, max_drop, reasons=("not evaluated on the whole test split",))
    drops = {e.kernels: (drop_pp(keras_metrics["accuracy"], e.metrics["accuracy"]),
                         drop_pp(keras_metrics["f1"], e.metrics["f1"])) for e in whole}
    worst = max(drops, key=lambda kernels: max(drops[kernels]))
    accuracy_drop = max(drop[0] for drop in drops.values())
    f1_drop = max(drop[1] for drop in drops.values())
    on = f" ({worst} kernels)" if len(whole) > 1 else ""
    reasons = []
    if accuracy_drop > max_drop:
        reasons.append(f"accuracy drops {accuracy_drop:.2f} pp{on} (limit {max_drop:g})")
    if f1_drop > max_drop:
        reasons.append(f"F1 drops {f1_drop:.2f} pp{on} (limit {max_drop:g})")
    for evaluation in whole:
        comparison = evaluation.comparison
        if comparison.get("collapsed"):
            reasons.append(
                "collapsed: probabilities barely vary across images "
                f"(std {comparison.get('std_ratio') or 0:.3f} x the Keras model's, {evaluation.kernels} "
                "kernels; TF issue 40183)")
            break
    if MODE_TABLE[variant.mode].must_be_integer_only and variant.details and not variant.details.integer_only:
        reasons.append("not integer-only (float tensors or non-builtin ops present)")
    return GateResult(not reasons, max_drop, accuracy_drop, f1_drop, worst, tuple(reasons))


def recommend(variants: list[VariantResult]) -> str | None:
    """The published variant that passed the gate and comes first in DEPLOY_PREFERENCE (full
    integer first), or None."""
    passed = {v.mode for v in variants if v.passed and v.size_bytes}
    return next((mode for mode in DEPLOY_PREFERENCE if mode in passed), None)

