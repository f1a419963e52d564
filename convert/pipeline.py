"""`crack convert`: Keras run -> TFLite variants, each scored against Keras, gated, reported.

Order of work: validate the run (no TensorFlow yet, so bad input fails fast with exit code 2),
decode the test and calibration images, load the Keras model, then per mode: convert, inspect,
evaluate from a scratch copy, and publish ``model_<mode>.tflite`` and its sidecar atomically. If
full int8 fails the gate, try selective int8. The reports are written last; the exit code is 1 if
any requested variant failed the gate, after everything is written.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from convert.gate import check_variant, recommend
from convert.options import MODE_DESCRIPTIONS, SELECTIVE_MODE, ConvertOptions
from convert.quantize import BACKENDS, ConversionError, TFLiteConverterBackend, input_is_raw_pixels
from convert.source import check_run
from edge.classifier import file_sha256, sidecar_path
from edge.atomic_files import write_bytes_atomic, write_json_atomic
from edge.errors import UserError

EXIT_OK = 0
EXIT_GATE_FAILED = 1
METRICS_IMPLEMENTATION = "edge.metrics (the numpy metrics training and the edge runner report with)"


def model_filename(mode: str) -> str:
    return f"model_{mode}.tflite"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def publish(directory: Path, mode: str, content: bytes, sidecar: dict) -> Path:
    """Model first, then its sidecar, each via a temporary file and a rename: a crash leaves the
    old model (or none), never a partial one; the sidecar's sha256 ties the two together."""
    path = directory / model_filename(mode)
    write_bytes_atomic(path, content)
    write_json_atomic(sidecar_path(path), _jsonable(sidecar))
    return path


def remove_variant(directory: Path, mode: str) -> None:
    path = directory / model_filename(mode)
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


class Converter:
    """One conversion run; ``run()`` returns the exit code."""

    def __init__(self, options: ConvertOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console()

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    # --- setup -----------------------------------------------------------------------------
    def _validate(self) -> None:
        options = self.options
        self.inputs = check_run(options.run)
        if options.backend not in BACKENDS:
            raise UserError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")
        if options.calibration_dir is not None and not Path(options.calibration_dir).is_dir():
            raise UserError(f"calibration directory not found: {options.calibration_dir}")

    def _load(self) -> None:
        from convert.evaluate import keras_probabilities, score
        from convert.quantize import create_backend, prepare_calibration
        from convert.source import load_calibration_set, load_keras_model, load_test_set

        options, layout, contract = self.options, self.inputs.layout, self.inputs.contract
        size = contract.input_size
        started = time.perf_counter()
        self.test = load_test_set(layout, size)
        self.say(f"test split: {len(self.test)} images ({self.test.label_counts()}), "
                 f"{len(self.test.skipped)} unreadable skipped")
        self.calibration = None
        self.calibration_probs = None
        if options.needs_calibration:
            images = load_calibration_set(layout, size, options.calibration_size, options.seed,
                                          options.calibration_dir)
            self.calibration = prepare_calibration(images.images, images.source, images.paths,
                                                   images.label_counts(), len(images.skipped))
            note = "; ".join(self.calibration.anchored) or "range already 0..255"
            self.say(f"calibration: {len(self.calibration)} images from {images.source} "
                     f"(pixels {self.calibration.observed_min}..{self.calibration.observed_max}; {note})")
            if len(self.calibration) < options.calibration_size:
                self.say(f"[yellow]warning:[/] only {len(self.calibration)} calibration images "
                         f"available (asked for {options.calibration_size})")
        self.model = load_keras_model(layout.model, size)
        self.keras_probs = keras_probabilities(self.model, self.test.images)
        self.keras_metrics = score(self.test.labels, self.keras_probs, contract.threshold)
        self.backend = create_backend(options.backend, self.model)
        self.say(f"Keras model: accuracy {self.keras_metrics['accuracy'] * 100:.2f}%, "
                 f"F1 {self.keras_metrics['f1'] * 100:.2f}% at threshold {contract.threshold:g} "
                 f"({time.perf_counter() - started:.1f} s to load and score)")

    # --- one variant -----------------------------------------------------------------------
    def _evaluate(self, mode: str, content: bytes, scratch: Path, seconds: float,
                  extra_conversion: dict | None = None) -> dict:
        from convert.evaluate import compare_with_reference, measure_latency, score, tflite_probabilities
        from convert.inspect_model import inspect_tflite

        options, contract = self.options, self.inputs.contract
        info = inspect_tflite(content)
        path = scratch / model_filename(mode)
        path.write_bytes(content)
        probs = tflite_probabilities(path, self.test.images, options.threads)
        metrics = score(self.test.labels, probs, contract.threshold)
        comparison = compare_with_reference(self.keras_probs, probs, contract.threshold)
        latency = measure_latency(path, self.test.images, options.latency_runs, options.threads)
        gate = check_variant(self.keras_metrics, metrics, comparison, options.max_drop,
                             must_be_integer_only=(mode == "int8"), integer_only=info["integer_only"])
        conversion = {**self.backend.settings("int8" if mode == SELECTIVE_MODE else mode),
                      **(extra_conversion or {}), "seconds": round(seconds, 2)}
        if mode in ("int8", SELECTIVE_MODE) and self.calibration is not None:
            conversion["calibration"] = self.calibration.to_dict()
        return {
            "mode": mode,
            "description": MODE_DESCRIPTIONS[mode],
            "file": model_filename(mode),
            "size_bytes": len(content),
            "sha256": None,  # filled in when published
            "input": info["input"],
            "output": info["output"],
            "input_raw_pixels": input_is_raw_pixels(info),
            "integer_only": info["integer_only"],
            "ops": info["ops"],
            "tensor_types": info["tensor_types"],
            "conversion": conversion,
            "metrics": metrics,
            "comparison": comparison,
            "latency": latency,
            "gate": gate.to_dict(),
            "error": None,
        }

    def _failed_record(self, mode: str, error: str) -> dict:
        gate = check_variant(self.keras_metrics, None, None, self.options.max_drop, error=error)
        return {"mode": mode, "description": MODE_DESCRIPTIONS[mode], "file": None,
                "size_bytes": None, "sha256": None, "metrics": None, "comparison": None,
                "latency": None, "gate": gate.to_dict(), "error": error,
                "conversion": self.backend.settings(mode)}

    def _sidecar(self, record: dict, content: bytes) -> dict:
        layout, contract = self.inputs.layout, self.inputs.contract
        extra = {**contract.extra, "source_run": layout.name, "tflite_variant": record["mode"]}
        return {
            "contract": contract.__class__.from_dict({**contract.to_dict(), "extra": extra}).to_dict(),
            "sha256": hashlib.sha256(content).hexdigest(),
            "mode": record["mode"],
            "description": record["description"],
            "file": record["file"],
            "size_bytes": record["size_bytes"],
            "source_run": {"name": layout.name, "path": str(layout.root),
                           "model": str(layout.model), "model_sha256": self.keras_sha256},
            "input": record["input"],
            "output": record["output"],
            "input_raw_pixels": record["input_raw_pixels"],
            "integer_only": record["integer_only"],
            "ops": record["ops"],
            "conversion": {**record["conversion"], "backend_info": self.backend.describe()},
            "metrics": {"test": record["metrics"], "vs_keras": record["comparison"],
                        "keras_test": self.keras_metrics, "latency": record["latency"],
                        "test_images": len(self.test)},
            "gate": record["gate"],
            "created": self.created,
        }

    def _publish(self, record: dict, content: bytes) -> None:
        sidecar = self._sidecar(record, content)
        record["sha256"] = sidecar["sha256"]
        publish(self.out_dir, record["mode"], content, sidecar)

    def _convert_mode(self, mode: str, index: int, total: int, scratch: Path) -> tuple[dict, bytes | None]:
        self.say(f"[bold][{index}/{total}] {mode}[/]: {MODE_DESCRIPTIONS[mode]}")
        started = time.perf_counter()
        try:
            with self.console.status(f"converting {mode}..."):
                content = self.backend.convert(mode, self.calibration if mode == "int8" else None)
        except ConversionError as exc:
            self.say(f"  [red]conversion failed[/]: {exc}")
            return self._failed_record(mode, str(exc)), None
        seconds = time.perf_counter() - started
        try:
            with self.console.status(f"evaluating {mode} on {len(self.test)} test images..."):
                record = self._evaluate(mode, content, scratch, seconds)
        except Exception as exc:  # an unloadable or crashing model is a failed variant
            message = f"evaluation failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.say(f"  [red]{message}[/]")
            return self._failed_record(mode, message), None
        self._describe(record, seconds)
        return record, content

    def _describe(self, record: dict, seconds: float | None = None) -> None:
        gate, metrics, comparison = record["gate"], record["metrics"], record["comparison"]
        verdict = "[green]passed[/]" if gate["passed"] else "[red]FAILED[/]: " + "; ".join(gate["reasons"])
        took = f"converted in {seconds:.1f} s, " if seconds is not None else ""
        self.say(f"  {took}{record['size_bytes'] / 1e6:.2f} MB, accuracy {metrics['accuracy'] * 100:.2f}% "
                 f"({0.0 - gate['accuracy_drop_pp']:+.2f} pp), F1 {metrics['f1'] * 100:.2f}% "
                 f"({0.0 - gate['f1_drop_pp']:+.2f} pp), agreement {comparison['agreement'] * 100:.1f}%, "
                 f"latency {record['latency']['median_ms']:.2f} ms: {verdict}")
        if record["mode"] == "int8":
            quant = record["input"]["quantization"]
            if record["input_raw_pixels"]:
                self.say("  int8 input: uint8, scale 1, zero point 0 (raw pixels)")
            else:
                self.say(f"  [yellow]int8 input: {record['input']['dtype']}, scale {quant['scale']:.6g}, "
                         f"zero point {quant['zero_point']} (not raw pixels)[/]")

    # --- selective int8 ---------------------------------------------------------------------
    def _recover(self, scratch: Path) -> tuple[dict | None, dict]:
        from convert.evaluate import compare_with_reference, keras_probabilities, tflite_probabilities
        from convert.selective import recover_int8

        options, threshold = self.options, self.inputs.contract.threshold
        if not isinstance(self.backend, TFLiteConverterBackend):
            return None, {"outcome": f"backend {self.backend.name} has no quantisation debugger"}
        self.say(f"[bold]{SELECTIVE_MODE}[/]: full int8 failed the gate; looking for the layers that lose most")
        calibration_images = self.calibration.images
        keras_calibration = keras_probabilities(self.model, calibration_images)
        probe = scratch / "selective_probe.tflite"

        def calibration_disagreement(content: bytes) -> tuple[float, float]:
            probe.write_bytes(content)
            probs = tflite_probabilities(probe, calibration_images, options.threads)
            comparison = compare_with_reference(keras_calibration, probs, threshold)
            return (round((1 - comparison["agreement"]) * 100, 9), comparison["mean_abs_prob_diff"])

        state: dict = {}

        def passes_test_gate(content: bytes) -> bool:
            record = self._evaluate(SELECTIVE_MODE, content, scratch, time.perf_counter() - started)
            state["record"], state["content"] = record, content
            return bool(record["gate"]["passed"])

        started = time.perf_counter()
        with self.console.status("running the quantisation debugger..."):
            result = recover_int8(self.backend, self.calibration, calibration_disagreement,
                                  passes_test_gate, options.max_drop, options.debug_samples,
                                  options.selective_max_fraction,
                                  log=lambda message: self.say(f"  {message}"))
        summary = result.to_dict()
        summary["seconds"] = round(time.perf_counter() - started, 1)
        if result.content is None:
            self.say(f"  [red]{result.outcome}[/]")
            return None, summary
        record = state["record"]
        record["conversion"]["kept_in_float"] = [layer["tensor_name"] for layer in summary["kept_in_float"]]
        record["conversion"]["selective"] = {k: summary[k] for k in ("method", "quantised_layers")}
        self._describe(record, summary["seconds"])
        self._publish(record, result.content)
        return record, summary

    # --- the whole run ----------------------------------------------------------------------
    def run(self) -> int:
        import tempfile

        self._validate()
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        options, layout = self.options, self.inputs.layout
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.say(f"[bold]crack convert[/] run {layout.root} -> {layout.tflite} "
                 f"(modes {', '.join(options.modes)}, max drop {options.max_drop:g} pp)")
        self._load()
        self.keras_sha256 = file_sha256(layout.model)
        self.out_dir = layout.tflite
        self.out_dir.mkdir(parents=True, exist_ok=True)
        records: list[dict] = []
        selective_summary = None
        try:
            with tempfile.TemporaryDirectory(prefix="crack-convert-eval-") as scratch_name:
                scratch = Path(scratch_name)
                for index, mode in enumerate(options.modes, 1):
                    record, content = self._convert_mode(mode, index, len(options.modes), scratch)
                    if content is not None:
                        self._publish(record, content)
                    records.append(record)
                int8 = next((r for r in records if r["mode"] == "int8"), None)
                if int8 is not None:
                    selective_record = None
                    if not int8["gate"]["passed"] and int8["error"] is None and options.recover:
                        selective_record, selective_summary = self._recover(scratch)
                    if selective_record is not None:
                        records.append(selective_record)
                    else:  # a selective model from an earlier conversion no longer belongs here
                        remove_variant(self.out_dir, SELECTIVE_MODE)
        finally:
            self.backend.close()
        report = self._report(records, selective_summary)
        from convert.report import write_reports

        paths = write_reports(self.out_dir, report)
        self._print_summary(report, paths)
        return EXIT_GATE_FAILED if report["failed"] else EXIT_OK

    def _report(self, records: list[dict], selective: dict | None) -> dict:
        import keras
        import tensorflow as tf

        options, layout, contract = self.options, self.inputs.layout, self.inputs.contract
        failed = [r["mode"] for r in records if r["mode"] in options.modes and not r["gate"]["passed"]]
        best = recommend(records)
        int8 = next((r for r in records if r["mode"] == "int8" and r.get("input")), None)
        latency = next((r["latency"] for r in records if r.get("latency")), None)
        report = {
            "run": {"name": layout.name, "path": str(layout.root), "model_sha256": self.keras_sha256},
            "created": self.created,
            "options": options.to_dict(),
            "threshold": contract.threshold,
            "max_drop_pp": options.max_drop,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "python": platform.python_version(), "backend": self.backend.describe()},
            "latency_setup": (f"{latency['interpreter']}, {latency['threads']} thread(s)" if latency else None),
            "metrics_implementation": METRICS_IMPLEMENTATION,
            "test_set": {"source": self.test.source, "count": len(self.test),
                         "label_counts": self.test.label_counts(), "skipped": len(self.test.skipped)},
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "keras": {"file": "model.keras", "size_bytes": layout.model.stat().st_size,
                      "metrics": self.keras_metrics},
            "variants": records,
            "int8_input": ({"dtype": int8["input"]["dtype"], **int8["input"]["quantization"],
                            "raw_pixels": int8["input_raw_pixels"]} if int8 else None),
            "selective": selective,
            "recommended": best,
            "recommended_file": model_filename(best) if best else None,
            "failed": failed,
            "exit_code": EXIT_GATE_FAILED if failed else EXIT_OK,
        }
        return _jsonable(report)

    def _print_summary(self, report: dict, paths: dict) -> None:
        table = Table(title=f"run {report['run']['name']}: variants vs Keras "
                            f"(accuracy {report['keras']['metrics']['accuracy'] * 100:.2f}%)")
        for column in ("variant", "gate", "acc %", "Δacc pp", "F1 %", "ΔF1 pp", "agree %", "MB", "ms"):
            table.add_column(column, justify="left" if column in ("variant", "gate") else "right",
                             no_wrap=column == "variant", min_width=14 if column == "variant" else None)
        for v in report["variants"]:
            gate, m = v["gate"], v.get("metrics")
            if m is None:
                table.add_row(v["mode"], "[red]FAIL[/]", "-", "-", "-", "-", "-", "-", "-")
                continue
            table.add_row(v["mode"], "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]",
                          f"{m['accuracy'] * 100:.2f}", f"{0.0 - gate['accuracy_drop_pp']:+.2f}",
                          f"{m['f1'] * 100:.2f}", f"{0.0 - gate['f1_drop_pp']:+.2f}",
                          f"{v['comparison']['agreement'] * 100:.1f}", f"{v['size_bytes'] / 1e6:.2f}",
                          f"{v['latency']['median_ms']:.2f}")
        self.console.print(table)
        if report["recommended"]:
            self.say(f"deploy: [bold]{self.out_dir / report['recommended_file']}[/]")
        else:
            self.say("[red]no variant passed the gate[/]")
        if report["failed"]:
            self.say(f"[red]failed the gate: {', '.join(report['failed'])}[/] (exit code {EXIT_GATE_FAILED})")
        self.say(f"report: {paths['md']}")


def run_convert(options: ConvertOptions, console: Console | None = None) -> int:
    return Converter(options, console).run()
