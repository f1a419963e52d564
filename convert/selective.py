"""Recovering a full int8 model that failed the gate: selective quantisation.

TensorFlow's ``tf.lite.experimental.QuantizationDebugger`` runs the calibrated model with
NumericVerify ops and reports, per quantised layer, the error between its float and int8
outputs. Layers are ranked by RMSE / scale (error in units of that tensor's quantisation step; an
ideal rounding error is ~0.29, the TensorFlow guide flags > 0.7), and the top ones are kept in
float (``denylisted_nodes``; ``fully_quantize=False`` so the model keeps float input/output around
the float islands). Candidates grow (the layers over 0.7, then the top 1, 2, 4, 8, ... layers, at
most ``max_fraction`` of them) until one agrees with the Keras model on the calibration images
(training split) within ``max_drop`` and is closer than plain int8; only those candidates are
then checked on the test split, and the first that passes the gate is kept.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

from convert.modes import SELECTIVE_MODE
from convert.quantize import Calibration, TFLiteConverterBackend, native_output_captured

SUSPECT_RMSE_SCALE = 0.7


@dataclass
class LayerError:
    tensor_name: str
    op_name: str
    rmse_scale: float
    mean_squared_error: float
    scale: float


@dataclass
class Candidate:
    kept_in_float: int
    calibration_disagreement_pp: float
    calibration_mean_abs_prob_diff: float
    meets_calibration_criterion: bool
    passed_test_gate: bool | None = None  # None: not checked on the test split


@dataclass
class SelectiveResult:
    content: bytes | None = None
    kept_float: list[LayerError] = field(default_factory=list)
    layers: int = 0
    baseline_disagreement_pp: float | None = None
    baseline_mean_abs_prob_diff: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    worst_layers: list[LayerError] = field(default_factory=list)
    outcome: str = ""

    def to_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "quantised_layers": self.layers,
            "kept_in_float": [asdict(layer) for layer in self.kept_float],
            "baseline_calibration_disagreement_pp": self.baseline_disagreement_pp,
            "baseline_calibration_mean_abs_prob_diff": self.baseline_mean_abs_prob_diff,
            "candidates": [asdict(c) for c in self.candidates],
            "worst_layers": [asdict(layer) for layer in self.worst_layers],
            "method": "tf.lite.experimental.QuantizationDebugger; layers ranked by RMSE/scale; "
                      "denylisted_nodes kept in float (fully_quantize=False)",
        }


def layer_errors(debugger) -> list[LayerError]:
    """Per-layer RMSE/scale from the debugger's statistics, worst first."""
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    errors = []
    for row in csv.DictReader(buffer):
        try:
            mse = float(row["mean_squared_error"])
            scale = float(row["scale"])
        except (KeyError, ValueError):
            continue
        if not scale or not math.isfinite(mse):
            continue
        errors.append(LayerError(row["tensor_name"], row["op_name"], math.sqrt(mse) / scale, mse, scale))
    errors.sort(key=lambda e: e.rmse_scale, reverse=True)
    return errors


def candidate_sizes(errors: list[LayerError], max_fraction: float) -> list[int]:
    limit = max(1, int(len(errors) * max_fraction))
    sizes = {k for k in (2 ** i for i in range(32)) if k <= limit}
    suspects = sum(1 for e in errors if e.rmse_scale > SUSPECT_RMSE_SCALE)
    if 0 < suspects <= limit:
        sizes.add(suspects)
    sizes.add(limit)
    return sorted(sizes)


def recover_int8(backend: TFLiteConverterBackend, calibration: Calibration,
                 calibration_disagreement: Callable[[bytes], tuple[float, float]],
                 passes_test_gate: Callable[[bytes], bool], max_drop: float,
                 debug_samples: int, max_fraction: float,
                 log: Callable[[str], None] = lambda message: None) -> SelectiveResult:
    """``calibration_disagreement(model) -> (label disagreement in pp, mean |dp|)`` vs Keras on
    the calibration images; ``passes_test_gate(model)`` runs the real gate on the test split."""
    import tensorflow as tf

    result = SelectiveResult()
    converter = backend.configure(backend.new_converter(), SELECTIVE_MODE, calibration)
    with warnings.catch_warnings(), native_output_captured():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration.dataset(limit=debug_samples))
        debugger.run()
        errors = layer_errors(debugger)
        result.layers = len(errors)
        result.worst_layers = errors[:10]
        if not errors:
            result.outcome = "the debugger found no quantised layers"
            return result
        baseline = debugger.get_nondebug_quantized_model()
    result.baseline_disagreement_pp, result.baseline_mean_abs_prob_diff = calibration_disagreement(baseline)
    log(f"quantisation debugger: {len(errors)} layers; worst RMSE/scale "
        f"{errors[0].rmse_scale:.2f} ({errors[0].op_name} {errors[0].tensor_name})")
    for size in candidate_sizes(errors, max_fraction):
        names = [e.tensor_name for e in errors[:size]]
        with warnings.catch_warnings(), native_output_captured():
            warnings.simplefilter("ignore")
            debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_nodes=names, fully_quantize=False)
            content = debugger.get_nondebug_quantized_model()
        disagreement, mean_diff = calibration_disagreement(content)
        meets = disagreement <= max_drop and mean_diff < result.baseline_mean_abs_prob_diff
        candidate = Candidate(size, disagreement, mean_diff, meets)
        result.candidates.append(candidate)
        log(f"  {size} layer(s) in float: calibration disagreement {disagreement:.2f} pp, "
            f"mean |dp| {mean_diff:.4f}" + ("" if meets else " (not enough)"))
        if not meets:
            continue
        candidate.passed_test_gate = passes_test_gate(content)
        if candidate.passed_test_gate:
            result.content = content
            result.kept_float = errors[:size]
            result.outcome = f"recovered with {size} of {len(errors)} layers kept in float"
            return result
    result.outcome = (f"not recovered: no candidate with up to {candidate_sizes(errors, max_fraction)[-1]} "
                      f"of {len(errors)} layers in float passed")
    return result
