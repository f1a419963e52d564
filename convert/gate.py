"""The accuracy gate: a variant may lose at most ``max_drop`` percentage points of accuracy and of
F1 against the Keras model on the same test images; a collapsed variant, a conversion error, or a
full int8 model that is not integer-only also fails. Then: which variant to deploy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Drops are rounded to this many decimals before the comparison so that 1.0 - 0.8 (which is
# 0.19999999999999996 in binary) counts as exactly 20 points.
_DECIMALS = 9


def drop_pp(reference: float, value: float) -> float:
    """How many percentage points ``value`` is below ``reference`` (negative = better)."""
    return round((reference - value) * 100.0, _DECIMALS)


@dataclass
class GateResult:
    passed: bool
    max_drop_pp: float
    accuracy_drop_pp: float | None = None
    f1_drop_pp: float | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_variant(keras_metrics: dict, variant_metrics: dict | None, comparison: dict | None,
                  max_drop: float, *, must_be_integer_only: bool = False,
                  integer_only: bool | None = None, error: str | None = None) -> GateResult:
    result = GateResult(passed=True, max_drop_pp=max_drop)
    if error is not None or variant_metrics is None:
        result.passed = False
        result.reasons.append(f"conversion or evaluation failed: {error or 'no metrics'}")
        return result
    result.accuracy_drop_pp = drop_pp(keras_metrics["accuracy"], variant_metrics["accuracy"])
    result.f1_drop_pp = drop_pp(keras_metrics["f1"], variant_metrics["f1"])
    if result.accuracy_drop_pp > max_drop:
        result.reasons.append(f"accuracy drops {result.accuracy_drop_pp:.2f} pp (limit {max_drop:g})")
    if result.f1_drop_pp > max_drop:
        result.reasons.append(f"F1 drops {result.f1_drop_pp:.2f} pp (limit {max_drop:g})")
    if comparison is not None and comparison.get("collapsed"):
        result.reasons.append(
            "collapsed: probabilities barely vary across images "
            f"(std {comparison.get('std_ratio', 0) or 0:.3f} x the Keras model's; TF issue 40183)")
    if must_be_integer_only and integer_only is False:
        result.reasons.append("not integer-only (float tensors or non-builtin ops present)")
    result.passed = not result.reasons
    return result


def recommend(variants: list[dict]) -> str | None:
    """The smallest variant (by file size) that passed the gate, or None."""
    passed = [v for v in variants if v.get("gate", {}).get("passed") and v.get("size_bytes")]
    if not passed:
        return None
    return min(passed, key=lambda v: (v["size_bytes"], v["mode"]))["mode"]
