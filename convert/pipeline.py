"""`crack convert`: Keras run -> TFLite variants, each scored against Keras, gated, reported.

Order of work: validate the run (no TensorFlow yet, so bad input fails fast with exit code 2),
decode the test and calibration images, load and score the Keras model (``load_reference``),
then per mode (``Converter``): convert, inspect, evaluate from a scratch copy, gate, and publish
``model_<mode>.tflite`` with its card inside and its sidecar beside it, atomically. If full int8
fails the gate, try selective int8. The reports are written last; the exit code is 1 if any
requested variant failed the gate, after everything is written.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from convert.gate import DEFAULT_MAX_DROP, check_variant, recommend
from convert.modes import MODE_TABLE, SELECTIVE_MODE, model_filename
from convert.options import ConvertOptions
from convert.publish import build_card, card_details, publish, remove_variant
from convert.quantize import (Calibration, ConversionError, LiteRTQuantizerBackend, TFLiteConverterBackend,
                              input_is_raw_pixels)
from convert.source import ImageSet, RunInputs, check_run
from convert.variant import KernelEvaluation, ModelDetails, VariantResult
from edge.contract import GoldenReference, SourceRun
from edge.golden import GoldenSet, golden_path
from edge.errors import UserError, first_line
from edge.interpreter import DEFAULT_KERNELS
from edge.model_metadata import file_sha256
from training import tensorflow_env

EXIT_OK = 0
EXIT_GATE_FAILED = 1
METRICS_IMPLEMENTATION = "edge.metrics (the numpy metrics training and the edge runner report with)"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return value.name
    return value


def accuracy_figures(variant: VariantResult) -> str:
    """'accuracy A% (+D pp), F1 F% (+D pp)': the default kernels' accuracy and F1, each with the
    change the gate judges, which is the worst kernel set's; that set is named when it is another."""
    main, gate = variant.main, variant.gate
    judged = f" on {gate.worst_kernels} kernels" if gate.worst_kernels not in (None, main.kernels) else ""
    return (f"accuracy {main.metrics['accuracy'] * 100:.2f}% ({0.0 - gate.accuracy_drop_pp:+.2f} pp{judged}), "
            f"F1 {main.metrics['f1'] * 100:.2f}% ({0.0 - gate.f1_drop_pp:+.2f} pp{judged})")


@dataclass(frozen=True)
class Reference:
    """What every variant is compared with: the Keras model on the decoded test split."""

    test: ImageSet
    calibration: Calibration | None
    model: object  # the Keras model
    probabilities: np.ndarray  # Keras, one per test image
    metrics: dict  # Keras at the contract threshold
    model_sha256: str  # of model.keras


def load_reference(options: ConvertOptions, inputs: RunInputs, say: Callable[[str], None]) -> Reference:
    """Decode the test and calibration images, load and score the Keras model."""
    from convert.evaluate import score
    from convert.quantize import prepare_calibration
    from convert.source import load_calibration_set, load_keras_model, load_test_set
    from training.keras_inference import keras_probabilities

    layout, contract = inputs.layout, inputs.contract
    size = contract.input_size
    started = time.perf_counter()
    test = load_test_set(layout, size, decode=contract.decode)
    say(f"test split: {len(test)} images ({test.label_counts()}), {len(test.skipped)} unreadable skipped")
    calibration = None
    if options.needs_calibration:
        images = load_calibration_set(layout, size, options.calibration_size, options.seed,
                                      options.calibration_dir, decode=contract.decode)
        calibration = prepare_calibration(images.images, images.source, images.label_counts(),
                                          len(images.skipped))
        note = "; ".join(calibration.anchored) or "range already 0..255"
        say(f"calibration: {len(calibration)} images from {images.source} "
            f"(pixels {calibration.observed_min}..{calibration.observed_max}; {note})")
        if len(calibration) < options.calibration_size:
            say(f"[yellow]warning:[/] only {len(calibration)} calibration images "
                f"available (asked for {options.calibration_size})")
    model = load_keras_model(layout.model, size)
    probabilities = keras_probabilities(model, test.images)
    metrics = score(test.labels, probabilities, contract.threshold)
    say(f"Keras model: accuracy {metrics['accuracy'] * 100:.2f}%, F1 {metrics['f1'] * 100:.2f}% at "
        f"threshold {contract.threshold:g} ({time.perf_counter() - started:.1f} s to load and score)")
    return Reference(test, calibration, model, probabilities, metrics, file_sha256(layout.model))


class Converter:
    """One conversion run over a loaded reference; ``run()`` returns the exit code."""

    def __init__(self, options: ConvertOptions, inputs: RunInputs, reference: Reference,
                 max_drop: float, max_drop_reason: str, console: Console) -> None:
        self.options = options
        self.inputs = inputs
        self.reference = reference
        self.max_drop = max_drop
        self.max_drop_reason = max_drop_reason
        self.console = console
        self.out_dir = inputs.layout.tflite
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.source = SourceRun(name=inputs.layout.name, model_sha256=reference.model_sha256)
        self.backend = TFLiteConverterBackend(reference.model)
        self.backends = {"converter": self.backend, "litert-quantizer": LiteRTQuantizerBackend(self.backend)}
        self._bias_corrections: dict[str, dict] = {}  # mode -> convert.output_bias.BiasCorrection
        self._keras_calibration: np.ndarray | None = None

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    # --- one variant -----------------------------------------------------------------------
    def _kernel_evaluation(self, path: Path, kernels: str, chosen: np.ndarray | None = None
                           ) -> KernelEvaluation:
        """The variant on the test split (or the ``chosen`` images of it) with one kernel set."""
        from convert.evaluate import compare_with_reference, score, tflite_probabilities

        reference, contract = self.reference, self.inputs.contract
        count = len(reference.test)
        chosen = np.arange(count) if chosen is None else chosen
        probabilities = tflite_probabilities(path, reference.test.images[chosen], contract,
                                             self.options.threads, kernels)
        return KernelEvaluation(
            kernels=kernels, images=len(chosen), whole_split=len(chosen) == count,
            metrics=score(reference.test.labels[chosen], probabilities, contract.threshold),
            comparison=compare_with_reference(reference.probabilities[chosen], probabilities,
                                              contract.threshold),
            probabilities=probabilities, indices=chosen)

    def _golden_indices(self, evaluation: KernelEvaluation) -> np.ndarray:
        from convert.golden import choose_golden

        return choose_golden(self.reference.test.labels, evaluation.probabilities,
                             self.inputs.contract.threshold, self.options.golden_count)

    def _kernel_evaluations(self, mode: str, path: Path) -> tuple[KernelEvaluation, ...]:
        """XNNPACK (the default), then for quantised modes the built-in kernels without it on the
        whole split and the slow reference kernels on at most ``reference_images`` images spread
        over the split, the golden inputs among them."""
        from convert.golden import subset_with

        main = self._kernel_evaluation(path, DEFAULT_KERNELS)
        evaluations = [main]
        if MODE_TABLE[mode].check_all_kernels:
            evaluations.append(self._kernel_evaluation(path, "builtin"))
            if self.options.reference_images:
                chosen = subset_with(len(self.reference.test), self.options.reference_images,
                                     self._golden_indices(main))
                evaluations.append(self._kernel_evaluation(path, "reference", chosen))
        return tuple(evaluations)

    def _evaluate(self, mode: str, content: bytes, scratch: Path, conversion: dict) -> VariantResult:
        from convert.evaluate import measure_latency
        from convert.inspect_model import inspect_tflite

        info = inspect_tflite(content)
        details = ModelDetails(input=info["input"], output=info["output"], ops=info["ops"],
                               tensor_types=info["tensor_types"], integer_only=info["integer_only"],
                               input_raw_pixels=input_is_raw_pixels(info))
        path = scratch / model_filename(mode)
        path.write_bytes(content)
        evaluations = self._kernel_evaluations(mode, path)
        latency = measure_latency(path, self.reference.test.images, self.options.latency_runs,
                                  self.inputs.contract, self.options.threads)
        variant = VariantResult(mode=mode, conversion=conversion, evaluations=evaluations,
                                details=details, latency=latency, size_bytes=len(content))
        return replace(variant, gate=check_variant(self.reference.metrics, variant, self.max_drop))

    def _conversion(self, mode: str, seconds: float) -> dict:
        conversion = {"converter": self.backends[MODE_TABLE[mode].backend].describe(), **MODE_TABLE[mode].settings(),
                      "seconds": round(seconds, 2)}
        if mode in self._bias_corrections:
            conversion["output_bias_correction"] = self._bias_corrections[mode]
        elif MODE_TABLE[mode].output_bias_correction and not self.options.bias_correction:
            conversion["output_bias_correction"] = False  # --no-bias-correction
        if MODE_TABLE[mode].representative_dataset and self.reference.calibration is not None:
            conversion["calibration"] = self.reference.calibration.to_dict()
        return conversion

    def _failed(self, mode: str, error: str, seconds: float = 0.0) -> VariantResult:
        variant = VariantResult(mode=mode, conversion=self._conversion(mode, seconds), error=error)
        return replace(variant, gate=check_variant(self.reference.metrics, variant, self.max_drop))

    def _golden(self, variant: VariantResult, content: bytes, scratch: Path) -> GoldenSet:
        """The variant's golden inputs with the probabilities of every kernel set evaluated."""
        from convert.golden import measure_golden

        probe = scratch / f"golden_{model_filename(variant.mode)}"
        probe.write_bytes(content)
        return measure_golden(probe, self._golden_indices(variant.main), self.reference.test,
                              self.reference.probabilities, variant.evaluations, self.inputs.contract,
                              self.options.threads)

    def _publish(self, variant: VariantResult, content: bytes, scratch: Path) -> VariantResult:
        golden = self._golden(variant, content, scratch).to_bytes()
        name = golden_path(model_filename(variant.mode)).name
        reference = GoldenReference(file=name, sha256=hashlib.sha256(golden).hexdigest())
        details = card_details(variant, self.reference.metrics, len(self.reference.test))
        card = build_card(variant, self.inputs.contract, self.source, self.created, details, reference)
        published = publish(self.out_dir, content, card, golden)
        path = self.out_dir / model_filename(variant.mode)
        return replace(variant, sha256=published.sha256, size_bytes=path.stat().st_size)

    def keras_calibration(self) -> np.ndarray:
        """The Keras probabilities of the calibration images (computed once)."""
        from training.keras_inference import keras_probabilities

        if self._keras_calibration is None:
            self._keras_calibration = keras_probabilities(self.reference.model,
                                                          self.reference.calibration.images)
        return self._keras_calibration

    def _correct_output_bias(self, mode: str, content: bytes) -> bytes:
        """``content`` with convert.output_bias's correction when the mode asks for it."""
        from convert.output_bias import BiasCorrection, correct_output_bias

        calibration = self.reference.calibration
        if not (MODE_TABLE[mode].output_bias_correction and self.options.bias_correction
                and calibration is not None):
            return content
        try:
            content, correction = correct_output_bias(content, calibration.images, self.keras_calibration(),
                                                      self.options.threads)
        except Exception as exc:  # noqa: BLE001 - the uncorrected model is still a valid model
            correction = BiasCorrection(False, f"failed: {first_line(exc)}")
        self._bias_corrections[mode] = correction.to_dict()
        return content

    def _convert_mode(self, mode: str, index: int, total: int, scratch: Path
                      ) -> tuple[VariantResult, bytes | None]:
        self.say(f"[bold][{index}/{total}] {mode}[/]: {MODE_TABLE[mode].description}")
        started = time.perf_counter()
        try:
            with self.console.status(f"converting {mode}..."):
                calibration = self.reference.calibration if MODE_TABLE[mode].representative_dataset else None
                content = self.backends[MODE_TABLE[mode].backend].convert(mode, calibration)
                content = self._correct_output_bias(mode, content)
        except ConversionError as exc:
            self.say(f"  [red]conversion failed[/]: {exc}")
            return self._failed(mode, str(exc), time.perf_counter() - started), None
        seconds = time.perf_counter() - started
        try:
            with self.console.status(f"evaluating {mode} on {len(self.reference.test)} test images..."):
                variant = self._evaluate(mode, content, scratch, self._conversion(mode, seconds))
        except Exception as exc:  # an unloadable or crashing model is a failed variant
            message = f"evaluation failed: {first_line(exc)}"
            self.say(f"  [red]{message}[/]")
            return self._failed(mode, message, seconds), None
        self._describe(variant, seconds)
        return variant, content

    def _describe(self, variant: VariantResult, seconds: float | None = None) -> None:
        gate, main = variant.gate, variant.main
        verdict = "[green]passed[/]" if gate.passed else "[red]FAILED[/]: " + "; ".join(gate.reasons)
        took = f"converted in {seconds:.1f} s, " if seconds is not None else ""
        self.say(f"  {took}{variant.size_bytes / 1e6:.2f} MB, {accuracy_figures(variant)}, agreement "
                 f"{main.comparison['agreement'] * 100:.1f}%, latency {variant.latency['median_ms']:.2f} ms: "
                 f"{verdict}")
        if not main.comparison.get("collapse_judged", True):
            self.say(f"  [yellow]collapse not judged[/]: the Keras model's probabilities hardly vary "
                     f"(std {main.comparison['reference_std']:.4f}, under two steps of a quantised output); "
                     "is it trained?")
        for evaluation in variant.evaluations[1:]:
            subset = "" if evaluation.whole_split else f" (subset of {evaluation.images} images, not gated)"
            self.say(f"    {evaluation.kernels} kernels: accuracy {evaluation.metrics['accuracy'] * 100:.2f}%, "
                     f"agreement {evaluation.comparison['agreement'] * 100:.1f}%, mean |dp| "
                     f"{evaluation.comparison['mean_abs_prob_diff']:.4f}{subset}")
        correction = variant.conversion.get("output_bias_correction")
        if isinstance(correction, dict):
            before = correction.get("calibration_mean_abs_prob_diff_before")
            after = correction.get("calibration_mean_abs_prob_diff_after")
            if correction["applied"]:
                self.say(f"  output bias corrected: the int8 logit was {correction['logit_shift']:+.3f} off Keras "
                         f"on {correction['images']} calibration images; their mean |dp| {before:.4f} -> {after:.4f}")
            else:
                self.say(f"  output bias not corrected: {correction['reason']}")
        tensor = variant.details.input
        if variant.mode == "int8":
            if variant.details.input_raw_pixels:
                self.say("  int8 input: uint8, scale 1, zero point 0 (raw pixels)")
            else:
                self.say(f"  [yellow]int8 input: {tensor['dtype']}, scale {tensor['quantization']['scale']:.6g}, "
                         f"zero point {tensor['quantization']['zero_point']} (not raw pixels)[/]")
        elif MODE_TABLE[variant.mode].backend != "converter":
            self.say(f"  {variant.mode} input: {tensor['dtype']}, scale {tensor['quantization']['scale']:.6g}, "
                     f"zero point {tensor['quantization']['zero_point']}")

    # --- selective int8 ---------------------------------------------------------------------
    def _recover(self, scratch: Path) -> tuple[VariantResult | None, bytes | None, dict]:
        from convert.evaluate import compare_with_reference, tflite_probabilities
        from convert.selective import recover_int8

        options, contract = self.options, self.inputs.contract
        calibration = self.reference.calibration
        self.say(f"[bold]{SELECTIVE_MODE}[/]: full int8 failed the gate; looking for the layers that lose most")
        keras_calibration = self.keras_calibration()
        probe = scratch / "selective_probe.tflite"

        def calibration_disagreement(content: bytes) -> tuple[float, float]:
            probe.write_bytes(content)
            probs = tflite_probabilities(probe, calibration.images, contract, options.threads)
            comparison = compare_with_reference(keras_calibration, probs, contract.threshold)
            return (round((1 - comparison["agreement"]) * 100, 9), comparison["mean_abs_prob_diff"])

        last: dict[str, VariantResult] = {}  # the candidate checked on the test split last
        started = time.perf_counter()

        def passes_test_gate(content: bytes) -> bool:
            variant = self._evaluate(SELECTIVE_MODE, content, scratch,
                                     self._conversion(SELECTIVE_MODE, time.perf_counter() - started))
            last["variant"] = variant
            return variant.passed

        with self.console.status("running the quantisation debugger..."):
            result = recover_int8(self.backend, calibration, calibration_disagreement, passes_test_gate,
                                  self.max_drop, options.debug_samples, options.selective_max_fraction,
                                  log=lambda message: self.say(f"  {message}"))
        summary = {**result.to_dict(), "seconds": round(time.perf_counter() - started, 1)}
        if result.content is None:
            self.say(f"  [red]{result.outcome}[/]")
            return None, None, summary
        variant = last["variant"]  # recover_int8 stops at the first candidate that passes
        conversion = {**variant.conversion,
                      "kept_in_float": [layer["tensor_name"] for layer in summary["kept_in_float"]],
                      "selective": {k: summary[k] for k in ("method", "quantised_layers")}}
        variant = replace(variant, conversion=conversion)
        self._describe(variant, summary["seconds"])
        return variant, result.content, summary

    # --- the whole run ----------------------------------------------------------------------
    def run(self) -> int:
        options = self.options
        self.out_dir.mkdir(parents=True, exist_ok=True)
        variants: list[VariantResult] = []
        selective_summary = None
        try:
            with tempfile.TemporaryDirectory(prefix="crack-convert-eval-") as scratch_name:
                scratch = Path(scratch_name)
                for index, mode in enumerate(options.modes, 1):
                    variant, content = self._convert_mode(mode, index, len(options.modes), scratch)
                    if content is not None:
                        variant = self._publish(variant, content, scratch)
                    variants.append(variant)
                int8 = next((v for v in variants if v.mode == "int8"), None)
                if int8 is not None:
                    selective, content = None, None
                    if not int8.passed and int8.error is None and options.recover:
                        selective, content, selective_summary = self._recover(scratch)
                    if selective is not None:
                        variants.append(self._publish(selective, content, scratch))
                    else:  # a selective model from an earlier conversion no longer belongs here
                        remove_variant(self.out_dir, SELECTIVE_MODE)
        finally:
            for backend in self.backends.values():
                backend.close()
        from convert.report import write_reports

        report = self._report(variants, selective_summary)
        paths = write_reports(self.out_dir, report)
        self._print_summary(variants, report, paths)
        return EXIT_GATE_FAILED if report["failed"] else EXIT_OK

    def _report(self, variants: list[VariantResult], selective: dict | None) -> dict:
        import keras
        import tensorflow as tf

        options, layout, contract, reference = self.options, self.inputs.layout, self.inputs.contract, self.reference
        failed = [v.mode for v in variants if v.mode in options.modes and not v.passed]
        best = recommend(variants)
        int8 = next((v for v in variants if v.mode == "int8" and v.details), None)
        latency = next((v.latency for v in variants if v.latency), None)
        report = {
            "run": {"name": layout.name, "model_sha256": reference.model_sha256},
            "created": self.created,
            "options": options.to_dict(),
            "threshold": contract.threshold,
            "max_drop_pp": self.max_drop,
            "max_drop_reason": self.max_drop_reason,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "python": platform.python_version(), "converter": self.backend.describe()},
            "latency_setup": (f"{latency['interpreter']}, {latency['threads']} thread(s)" if latency else None),
            "metrics_implementation": METRICS_IMPLEMENTATION,
            "test_set": {"source": reference.test.source, "count": len(reference.test),
                         "label_counts": reference.test.label_counts(), "skipped": len(reference.test.skipped)},
            "calibration": reference.calibration.to_dict() if reference.calibration is not None else None,
            "keras": {"file": "model.keras", "size_bytes": layout.model.stat().st_size,
                      "metrics": reference.metrics},
            "variants": [v.to_dict() for v in variants],
            "int8_input": ({"dtype": int8.details.input["dtype"], **int8.details.input["quantization"],
                            "raw_pixels": int8.details.input_raw_pixels} if int8 else None),
            "selective": selective,
            "recommended": best,
            "recommended_file": model_filename(best) if best else None,
            "failed": failed,
            "exit_code": EXIT_GATE_FAILED if failed else EXIT_OK,
        }
        return _jsonable(report)

    def _print_summary(self, variants: list[VariantResult], report: dict, paths: dict) -> None:
        table = Table(title=f"run {report['run']['name']}: variants vs Keras "
                            f"(accuracy {self.reference.metrics['accuracy'] * 100:.2f}%)",
                      caption=f"acc, F1, agree: {DEFAULT_KERNELS} kernels; Δ: the worst kernel set "
                              "on the whole split, which the gate judges")
        for column in ("variant", "gate", "acc %", "Δacc pp", "F1 %", "ΔF1 pp", "agree %", "MB", "ms"):
            table.add_column(column, justify="left" if column in ("variant", "gate") else "right",
                             no_wrap=column == "variant", min_width=14 if column == "variant" else None)
        for v in variants:
            main, gate = v.main, v.gate
            if main is None:
                table.add_row(v.mode, "[red]FAIL[/]", "-", "-", "-", "-", "-", "-", "-")
                continue
            table.add_row(v.mode, "[green]pass[/]" if gate.passed else "[red]FAIL[/]",
                          f"{main.metrics['accuracy'] * 100:.2f}", f"{0.0 - gate.accuracy_drop_pp:+.2f}",
                          f"{main.metrics['f1'] * 100:.2f}", f"{0.0 - gate.f1_drop_pp:+.2f}",
                          f"{main.comparison['agreement'] * 100:.1f}", f"{v.size_bytes / 1e6:.2f}",
                          f"{v.latency['median_ms']:.2f}")
        self.console.print(table)
        if report["recommended"]:
            self.say(f"deploy: [bold]{self.out_dir / report['recommended_file']}[/]")
        else:
            self.say("[red]no variant passed the gate[/]")
        if report["failed"]:
            self.say(f"[red]failed the gate: {', '.join(report['failed'])}[/] (exit code {EXIT_GATE_FAILED})")
        self.say(f"report: {paths['md']}")
        if report["recommended"] and not report["failed"]:
            for line in next_steps(self.out_dir / report["recommended_file"]):
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def _shown(path: Path) -> Path:
    """``path`` relative to the current folder when it lies below it."""
    path = Path(path).absolute()
    return path.relative_to(Path.cwd()) if Path.cwd() in path.parents else path


def next_steps(model: Path) -> list[str]:
    """What to do with the deployable model: the lines `crack convert` ends with when it passes."""
    edge_cli = Path(sys.executable).with_name("crack-edge")
    edge = "crack-edge" if shutil.which("crack-edge") or not edge_cli.is_file() else str(_shown(edge_cli))
    model = _shown(model)
    golden = golden_path(model)
    return ["next:",
            f"  score a folder   {edge} score --model {model} PHOTOS/ --out results.csv",
            f"  stream a camera  {edge} stream --model {model} --source 0 --events events.jsonl",
            f"  copy to a Pi     scp {model} {golden} pi@HOST:/opt/crackkit/models/",
            "                   then on the Pi: crack-edge verify --model "
            f"/opt/crackkit/models/{model.name}  (see edge/DEVICE.md)"]


def run_convert(options: ConvertOptions, console: Console | None = None) -> int:
    """Validate (no TensorFlow), load the reference, convert every mode; the exit code."""
    console = console or Console()
    inputs = check_run(options.run)
    if options.calibration_dir is not None and not options.calibration_dir.is_dir():
        raise UserError(f"calibration directory not found: {options.calibration_dir}")
    if options.max_drop is not None:
        max_drop, reason = options.max_drop, "--max-drop"
    else:
        max_drop, reason = DEFAULT_MAX_DROP, "default"
    tensorflow_env.prepare()
    layout = inputs.layout
    console.print(f"[bold]crack convert[/] run {layout.name} -> {layout.tflite} (modes "
                  f"{', '.join(options.modes)}, max drop {max_drop:g} pp: {reason})", highlight=False)
    reference = load_reference(options, inputs, lambda message: console.print(message, highlight=False))
    return Converter(options, inputs, reference, max_drop, reason, console).run()
