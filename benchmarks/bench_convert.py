"""Size and speed of each TFLite variant of ResNet50V2 against fp32, on this CPU.

    python -m benchmarks.bench_convert                 # random-weight ResNet50V2 at 224x224
    python -m benchmarks.bench_convert --run runs/NAME # a trained run (its size, its training images)

Converts to every mode with the same backend `crack convert` uses, then times single-image
invokes through edge.classifier.CrackClassifier (the device's code path) with all cores, the
variants taking turns so that noise on a shared machine does not favour one of them. Prints
each variant's size and latency as a ratio of fp32 and writes benchmarks/results/convert.json.
Targets: full int8 at most 27% of the fp32 size and at least 3x faster. Weights do not change
the speed of these dense kernels, so random weights measure the architecture fairly; accuracy is
`crack convert`'s job, not this script's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from training import tensorflow_env

tensorflow_env.prepare()  # before anything imports TensorFlow

import numpy as np  # noqa: E402

from benchmarks.machine import argument_parser, cpu_mark, describe_machine, machine_info  # noqa: E402
from convert.options import MODES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "convert.json"
TARGET_INT8_SIZE_RATIO = 0.27
TARGET_INT8_SPEEDUP = 3.0
WARMUP_INVOKES = 3


def builtin_kernels_backend(interpreter):
    """The same interpreter package without its default delegate (XNNPACK): TFLite's own
    kernels, for comparison. None if the package cannot do that."""
    import functools

    from edge.interpreter import InterpreterBackend

    # OpResolverType sits beside the Interpreter class in every package (tf.lite's too)
    module = sys.modules[interpreter.interpreter_class.__module__]
    resolver = getattr(module, "OpResolverType", None)
    if resolver is None:
        return None
    factory = functools.partial(interpreter.interpreter_class,
                                experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return InterpreterBackend(interpreter.package, interpreter.version, factory)


def interleaved_latency(paths: dict[str, Path], images: np.ndarray, runs: int, threads: int,
                        backend=None, rounds: int = 5) -> dict[str, dict]:
    """Single-image latency (median, p90) of each model, preprocessed image in, probability out,
    through the device's CrackClassifier. The models take turns, a few invokes each per round, so
    a slow spell on a shared machine lands on every variant alike rather than on one of them."""
    from edge.bench import timing
    from edge.classifier import CrackClassifier

    classifiers = {mode: CrackClassifier(path, threads=threads, backend=backend) for mode, path in paths.items()}
    for classifier in classifiers.values():
        for image in images[:WARMUP_INVOKES]:
            classifier.predict_one(image)
    times: dict[str, list[float]] = {mode: [] for mode in paths}
    per_round = max(1, -(-runs // rounds))
    for round_index in range(rounds):
        for mode, classifier in classifiers.items():
            for i in range(per_round):
                image = images[(round_index * per_round + i) % len(images)]
                started = time.perf_counter()
                classifier.predict_one(image)
                times[mode].append((time.perf_counter() - started) * 1000.0)
    return {mode: timing(t) for mode, t in times.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser("benchmarks.bench_convert", __doc__)
    parser.add_argument("--run", help="use this training run's model and training images")
    parser.add_argument("--size", type=int, default=224, help="input size of the random-weight model")
    parser.add_argument("--runs", type=int, default=30, help="timed single-image invokes per variant")
    parser.add_argument("--calibration", type=int, default=32, help="calibration images for int8")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads; all cores when not given")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated TFLite variants to build and time")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    parser.add_argument("--no-builtin-comparison", action="store_true",
                        help="skip timing TFLite's own kernels without the XNNPACK delegate")
    return parser.parse_args(argv)


def load_subject(args):
    """(model, calibration images, description)."""
    from convert.testing import crack_images, resnet_model

    if args.run:
        from convert.source import check_run, load_calibration_set, load_keras_model

        inputs = check_run(args.run)
        size = inputs.contract.input_size
        model = load_keras_model(inputs.layout.model, size)
        images = load_calibration_set(inputs.layout, size, args.calibration, seed=0).images
        return model, images, f"run {inputs.layout.root} ({size}x{size})"
    model = resnet_model(args.size)
    images = np.stack([image for image, _ in crack_images(args.calibration, args.size, seed=0)])
    return model, images, f"ResNet50V2, random weights, {args.size}x{args.size}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from convert.inspect_model import inspect_tflite
    from convert.options import parse_modes
    from convert.quantize import TFLiteConverterBackend, prepare_calibration
    from edge.atomic_files import write_json_atomic
    from edge.interpreter import default_thread_count, find_interpreter

    modes = parse_modes(args.modes)
    if "fp32" not in modes:
        modes = ("fp32",) + modes  # the reference for every ratio
    threads = args.threads or default_thread_count()
    interpreter = find_interpreter()
    builtin = None if args.no_builtin_comparison else builtin_kernels_backend(interpreter)
    mark = cpu_mark()
    print(f"machine: {describe_machine(machine_info(threads), load=False)}; {args.runs} timed invokes per variant", flush=True)
    started = time.perf_counter()
    model, images, subject = load_subject(args)
    print(f"subject: {subject}, {model.count_params():,} parameters", flush=True)
    calibration = prepare_calibration(images, "synthetic crack images" if not args.run else args.run)
    backend = TFLiteConverterBackend(model)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-convert-") as scratch:
            paths = {}
            for mode in modes:
                t0 = time.perf_counter()
                content = backend.convert(mode, calibration if mode == "int8" else None)
                paths[mode] = Path(scratch) / f"model_{mode}.tflite"
                paths[mode].write_bytes(content)
                info = inspect_tflite(content)
                rows.append({"mode": mode, "size_bytes": len(content),
                             "convert_seconds": round(time.perf_counter() - t0, 1),
                             "input_dtype": info["input"]["dtype"],
                             "input_quantization": info["input"]["quantization"],
                             "integer_only": info["integer_only"]})
                print(f"  converted {mode:8s} {len(content) / 1e6:8.2f} MB in "
                      f"{rows[-1]['convert_seconds']:.0f} s", flush=True)
            latency = interleaved_latency(paths, images, args.runs, threads)
            plain = interleaved_latency(paths, images, max(5, args.runs // 3), threads, builtin) if builtin else {}
            for row in rows:
                mode = row["mode"]
                row.update(median_ms=latency[mode]["median_ms"], p90_ms=latency[mode]["p90_ms"],
                           builtin_kernels_median_ms=plain[mode]["median_ms"] if plain else None)
                print(f"  {mode:8s} median {row['median_ms']:8.2f} ms  p90 {row['p90_ms']:8.2f} ms"
                      + (f"  without XNNPACK {plain[mode]['median_ms']:8.2f} ms" if plain else ""),
                      flush=True)
    finally:
        backend.close()
    fp32 = next(r for r in rows if r["mode"] == "fp32")
    for row in rows:
        row["size_ratio"] = row["size_bytes"] / fp32["size_bytes"]
        row["speedup"] = fp32["median_ms"] / row["median_ms"]
        row["builtin_kernels_speedup"] = (fp32["builtin_kernels_median_ms"] / row["builtin_kernels_median_ms"]
                                          if row["builtin_kernels_median_ms"] else None)
    print(f"\n{'variant':10s}{'size MB':>10s}{'size/fp32':>11s}{'median ms':>11s}{'p90 ms':>9s}{'speed-up':>10s}"
          f"{'no-XNNPACK speed-up':>21s}")
    for row in rows:
        other = f"{row['builtin_kernels_speedup']:20.2f}x" if row["builtin_kernels_speedup"] else f"{'-':>21s}"
        print(f"{row['mode']:10s}{row['size_bytes'] / 1e6:10.2f}{row['size_ratio'] * 100:10.1f}%"
              f"{row['median_ms']:11.2f}{row['p90_ms']:9.2f}{row['speedup']:9.2f}x{other}")
    int8 = next((r for r in rows if r["mode"] == "int8"), None)
    targets = None
    if int8:
        targets = {
            "int8_size_ratio_max": TARGET_INT8_SIZE_RATIO, "int8_speedup_min": TARGET_INT8_SPEEDUP,
            "int8_size_ratio": int8["size_ratio"], "int8_speedup": int8["speedup"],
            "size_met": int8["size_ratio"] <= TARGET_INT8_SIZE_RATIO,
            "speed_met": int8["speedup"] >= TARGET_INT8_SPEEDUP,
        }
        print(f"\nint8 size {int8['size_ratio'] * 100:.1f}% of fp32 (target <= {TARGET_INT8_SIZE_RATIO * 100:.0f}%: "
              f"{'met' if targets['size_met'] else 'MISSED'}); {int8['speedup']:.2f}x faster "
              f"(target >= {TARGET_INT8_SPEEDUP:g}x: {'met' if targets['speed_met'] else 'MISSED'})")
    import tensorflow as tf

    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "subject": subject,
        "parameters": int(model.count_params()),
        "machine": machine_info(threads, since=mark),
        "delegate": "default (XNNPACK on CPU); builtin_kernels_* without it",
        "timed_runs": args.runs, "calibration_images": len(calibration),
        "tensorflow": tf.__version__,
        "variants": rows, "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
