"""int8 quality on a marginal model (issue 13): why full int8 agrees with Keras on only ~75-82% of
a short demo run's test images while it stays near 100% on a well-trained run, and what helps.

    python -m benchmarks.int8_marginal [--marginal-run DIR] [--healthy-run DIR] [--quick]

The marginal run is made once and kept in work/int8_marginal/: `crack data demo --seed 0` (2,000
images, 128 px), then `crack train --epochs 2 --img-size 64 --weights none --seed 0`, a
deliberately short run (Keras test accuracy about 0.70) that stays marginal whatever the demo's
default training becomes. The healthier run is adapt_surface's concrete source model (surface_crack,
64 px, 10 epochs from random initialisation, test accuracy 0.98), trained the same way when missing.

For each run, every variant is scored on the run's test split against the Keras model at the
run's threshold: label agreement, mean and max |Δp| and the mean signed Δp (int8 - Keras), with
the default kernels (XNNPACK). Variants (converter = tf.lite.TFLiteConverter, as `crack convert`):

- calibration: 50, 200 (today's default) and 1,000 random training images; 200 class-balanced;
  200 validation images (test-like); the test split itself (an oracle nobody can use);
- weights per tensor instead of per channel (the converter's `_experimental_disable_per_channel`);
- the output: float32 instead of uint8 (the sigmoid still int8 inside); the int8 logit with the
  sigmoid in float;
- the output bias correction `crack convert` now applies (convert.output_bias);
- litert-quantizer static int8 (mode int8_litert), with its default moving-average calibration
  and with min/max calibration (what `crack convert` uses), without and with the correction.

And where the error comes from: the margin (share of test images within 0.05 of the threshold,
the logit's spread), the int8 error of a few layers against Keras (the interpreter's
experimental_preserve_all_tensors; RMS error / the Keras tensor's std) with the per-image
maximum of each tensor against its std, the head's error from the backbone alone (the head in
float on the int8 backbone's features), and the BatchNorm constants that stay unfolded in
ResNetV2 (multiplied and added per channel) quantised per tensor and evaluated in Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from training import tensorflow_env

tensorflow_env.prepare()  # before anything imports TensorFlow

import numpy as np  # noqa: E402

from benchmarks.machine import (  # noqa: E402
    RESULTS_DIR,
    SHARED_DATA,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    describe_machine,
    machine_info,
    print_table,
)

WORK = WORK_DIR / "int8_marginal"
MARGINAL_TRAINING = ("--epochs", "2", "--img-size", "64", "--weights", "none", "--seed", "0")
HEALTHY_RUN = WORK_DIR / "adapt_surface" / "runs" / "source-concrete"
HEALTHY_TRAINING = ("--img-size", "64", "--epochs", "10", "--head-epochs", "0", "--weights", "none",
                    "--batch-size", "32", "--patience", "6", "--seed", "0", "--val-split", "test",
                    "--test-split", "valid")
LAYERS = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out", "post_relu")
NEAR = 0.05  # "near the threshold": |p - threshold| < NEAR


def crack(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "convert", *args]).returncode


def marginal_run(work: Path) -> Path:
    run = work / "runs" / "marginal"
    if (run / "metrics.json").is_file():
        return run
    demo = work / "demo"
    if not (demo / ".complete").is_file() and crack("data", "demo", "--out", str(demo), "--seed", "0"):
        raise SystemExit("error: making the demo data failed")
    if crack("train", "--data", str(demo), "--runs-dir", str(work / "runs"), "--name", "marginal",
             *MARGINAL_TRAINING):
        raise SystemExit("error: training the marginal run failed")
    return run


def healthy_run(work: Path) -> Path | None:
    if (HEALTHY_RUN / "metrics.json").is_file():
        return HEALTHY_RUN
    run = work / "runs" / "healthy"
    if (run / "metrics.json").is_file():
        return run
    data = SHARED_DATA / "surface_crack"
    if not data.is_dir():
        return None
    if crack("train", "--data", str(data), "--runs-dir", str(work / "runs"), "--name", "healthy",
             *HEALTHY_TRAINING):
        raise SystemExit("error: training the healthy run failed")
    return run


class Study:
    """One run: its images, Keras model and probabilities, and the variants measured on it."""

    def __init__(self, run: Path, quick: bool) -> None:
        from convert.source import load_keras_model, load_test_set
        from edge.contract import ModelContract
        from training.keras_inference import keras_probabilities
        from training.run_layout import open_run

        self.run, self.quick = run, quick
        self.layout = open_run(run)
        self.contract = ModelContract.load(self.layout.contract)
        size = self.contract.input_size
        self.test = load_test_set(self.layout, size, decode=self.contract.decode)
        self.train = self._split("train")
        self.val = self._split("val")
        self.model = load_keras_model(self.layout.model, size)
        self.keras = keras_probabilities(self.model, self.test.images)
        self.threshold = self.contract.threshold
        self.order = np.random.default_rng(0).permutation(len(self.train[0]))
        self.rows: list[dict] = []
        self.scratch = WORK / "models" / run.name
        self.scratch.mkdir(parents=True, exist_ok=True)

    def _split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        from convert.source import _decode_all, _resolve, _stack
        from training.run_layout import read_split

        rows = read_split(self.layout.split_file(name))
        paths = [_resolve(path, self.layout.root) for path, _ in rows]
        images, kept, _ = _decode_all(paths, self.contract.input_size, decode=self.contract.decode)
        return _stack(images, self.contract.input_size), np.array([rows[i][1] for i in kept])

    def calibration_images(self, kind: str, count: int) -> np.ndarray:
        images, labels = self.train[0][self.order], self.train[1][self.order]
        if kind == "train":
            return images[:count]
        if kind == "balanced":
            half = count // 2
            return np.concatenate([images[labels == 1][:half], images[labels == 0][:count - half]])
        if kind == "val":
            return self.val[0][:count]
        if kind == "test":
            return self.test.images
        raise ValueError(kind)

    # --- conversions -------------------------------------------------------------------------
    def converter_int8(self, images: np.ndarray, per_tensor: bool = False, output: str = "uint8",
                       model=None) -> bytes:
        import tensorflow as tf

        from convert.modes import MODE_TABLE
        from convert.quantize import TFLiteConverterBackend, native_output_captured, prepare_calibration

        backend = TFLiteConverterBackend(model or self.model)
        try:
            converter = MODE_TABLE["int8"].apply(backend.new_converter(),
                                                 prepare_calibration(images, "benchmark").dataset())
            if per_tensor:
                converter._experimental_disable_per_channel = True  # noqa: SLF001 - what is measured
            converter.inference_output_type = getattr(tf, output)
            with native_output_captured():
                return bytes(converter.convert())
        finally:
            backend.close()

    def litert_int8(self, images: np.ndarray, min_max: bool) -> tuple[bytes, float]:
        from litert_quantizer import calibrator, quantizer, recipe, recipe_manager
        from litert_quantizer.utils import qsv_utils

        from convert.quantize import (LiteRTQuantizerBackend, TFLiteConverterBackend, inline_buffers,
                                      native_output_captured, prepare_calibration)

        fp32 = self.scratch / "fp32.tflite"
        if not fp32.is_file():
            backend = TFLiteConverterBackend(self.model)
            try:
                fp32.write_bytes(backend.convert("fp32", None))
            finally:
                backend.close()
        content = fp32.read_bytes()
        calibration = prepare_calibration(images, "benchmark")
        started = time.perf_counter()
        with native_output_captured():
            manager = recipe_manager.RecipeManager()
            manager.load_quantization_recipe(recipe.static_wi8_ai8())
            extra = {"qsv_update_func": qsv_utils.min_max_update} if min_max else {}
            calibrate = calibrator.Calibrator(content, num_threads=os.cpu_count() or 1, **extra)
            calibrate.calibrate(LiteRTQuantizerBackend._calibration_data(content, calibration), manager)
            result = quantizer.Quantizer(bytearray(content), manager.get_quantization_recipe()).quantize(
                calibrate.get_model_qsvs(), enable_progress_report=False)
        return inline_buffers(bytes(result.quantized_model)), time.perf_counter() - started

    def logit_model(self):
        import keras

        head = self.model.layers[-1]
        outputs = keras.layers.Dense(1, name="logit")(head.input)
        model = keras.Model(self.model.inputs, outputs)
        model.get_layer("logit").set_weights(head.get_weights())
        return model

    def corrected(self, content: bytes, images: np.ndarray):
        from convert.output_bias import correct_output_bias
        from training.keras_inference import keras_probabilities

        return correct_output_bias(content, images, keras_probabilities(self.model, images))

    # --- scoring -----------------------------------------------------------------------------
    def probabilities(self, name: str, content: bytes, sigmoid_outside: bool = False) -> np.ndarray:
        from convert.evaluate import tflite_probabilities
        from edge.interpreter import find_interpreter

        path = self.scratch / f"{name}.tflite"
        path.write_bytes(content)
        if not sigmoid_outside:
            return tflite_probabilities(path, self.test.images, self.contract)
        interpreter = find_interpreter().interpreter_class(model_path=str(path))
        interpreter.allocate_tensors()
        source, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        logits = []
        for image in self.test.images:
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            logits.append(float(interpreter.get_tensor(output["index"]).reshape(-1)[0]))
        return 1 / (1 + np.exp(-np.array(logits)))

    def add(self, variant: str, probabilities: np.ndarray, **settings) -> dict:
        from convert.evaluate import compare_with_reference
        from edge.metrics import binary_report

        comparison = compare_with_reference(self.keras, probabilities, self.threshold)
        accuracy = binary_report(self.test.labels, probabilities, self.threshold)["accuracy"]
        row = {"variant": variant, **settings,
               "agreement": round(comparison["agreement"], 4),
               "mean_abs_dp": round(comparison["mean_abs_prob_diff"], 4),
               "max_abs_dp": round(comparison["max_abs_prob_diff"], 4),
               "mean_signed_dp": round(float(np.mean(probabilities - self.keras)), 4),
               "accuracy": round(accuracy, 4)}
        self.rows.append(row)
        print(f"  {self.run.name}: {variant}: agreement {row['agreement'] * 100:.1f}%, mean |dp| "
              f"{row['mean_abs_dp']:.4f}, max {row['max_abs_dp']:.4f}, signed {row['mean_signed_dp']:+.4f}",
              flush=True)
        return row

    def variants(self, litert: bool) -> None:
        default = self.calibration_images("train", 200)
        base = self.converter_int8(default)
        self.add("converter, 200 train images (crack convert before)", self.probabilities("base", base),
                 calibration="train 200")
        corrected, correction = self.corrected(base, default)
        self.add("converter + output bias correction (crack convert now)",
                 self.probabilities("corrected", corrected), calibration="train 200",
                 correction={k: correction.to_dict()[k] for k in ("applied", "logit_shift", "bias_change")})
        if not self.quick:
            for kind, count in (("train", 50), ("train", 1000), ("balanced", 200), ("val", 200),
                                ("test", None)):
                label = f"{kind} {count}" if count else "the test split itself (oracle)"
                images = self.calibration_images(kind, count or 0)
                self.add(f"converter, calibration: {label}",
                         self.probabilities(f"cal_{kind}_{count}", self.converter_int8(images)),
                         calibration=label, images=len(images))
            self.add("converter, weights per tensor", self.probabilities("per_tensor", self.converter_int8(
                default, per_tensor=True)), calibration="train 200")
            self.add("converter, float32 output (int8 sigmoid inside)",
                     self.probabilities("float_out", self.converter_int8(default, output="float32")),
                     calibration="train 200")
            self.add("converter, int8 logit, sigmoid in float",
                     self.probabilities("logit", self.converter_int8(default, output="float32",
                                                                    model=self.logit_model()),
                                        sigmoid_outside=True), calibration="train 200")
        if litert:
            for min_max in (False, True):
                content, seconds = self.litert_int8(default, min_max)
                statistics = "min/max" if min_max else "moving average (its default)"
                self.add(f"litert-quantizer, {statistics}", self.probabilities(f"litert_{min_max}", content),
                         calibration="train 200", seconds=round(seconds, 1))
                corrected, correction = self.corrected(content, default)
                self.add(f"litert-quantizer, {statistics} + output bias correction",
                         self.probabilities(f"litert_{min_max}_corrected", corrected), calibration="train 200",
                         correction={k: correction.to_dict()[k] for k in ("applied", "logit_shift", "bias_change")})

    # --- where the error comes from ------------------------------------------------------------
    def margin(self) -> dict:
        keras = self.keras.astype(np.float64)
        logits = np.log(np.clip(keras, 1e-7, 1 - 1e-7) / np.clip(1 - keras, 1e-7, 1))
        return {"keras_accuracy": round(float(np.mean((keras >= self.threshold) == self.test.labels)), 4),
                "threshold": round(self.threshold, 4),
                "share_within_0.05_of_threshold": round(float(np.mean(np.abs(keras - self.threshold) < NEAR)), 4),
                "keras_probability_quantiles_5_50_95": [round(float(q), 4) for q in np.quantile(keras, [.05, .5, .95])],
                "keras_logit_std": round(float(logits.std()), 3)}

    def layers(self) -> list[dict]:
        """int8 error of a few tensors against Keras on 32 test images (preserve_all_tensors)."""
        import keras

        from edge.interpreter import find_interpreter

        path = self.scratch / "base.tflite"
        images = self.test.images[:32]
        base = self.model.get_layer("resnet50v2")
        features = keras.Model(base.input, [base.get_layer(name).output for name in LAYERS])
        expected = features.predict(images.astype(np.float32) / 127.5 - 1, verbose=0)
        calibration = features.predict(self.calibration_images("train", 200).astype(np.float32) / 127.5 - 1,
                                       verbose=0)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = find_interpreter().interpreter_class(model_path=str(path),
                                                               experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        tensors = interpreter.get_tensor_details()
        source = interpreter.get_input_details()[0]
        found = {}
        for name, reference in zip(LAYERS, expected):
            for tensor in tensors:
                if f"/{name}_1/" in tensor["name"] and tuple(tensor["shape"][1:]) == reference.shape[1:]:
                    found[name] = tensor
                    break
        values = {name: [] for name in found}
        for image in images:
            interpreter.set_tensor(source["index"], image[None])
            interpreter.invoke()
            for name, tensor in found.items():
                scale, zero = tensor["quantization"]
                values[name].append((interpreter.get_tensor(tensor["index"])[0].astype(np.float64) - zero) * scale)
        rows = []
        for (name, reference), seen in zip(zip(LAYERS, expected), calibration):
            if name not in found:
                continue
            error = np.stack(values[name]) - reference
            scale, zero = found[name]["quantization"]
            per_image_max = np.abs(seen).reshape(len(seen), -1).max(axis=1)
            rows.append({"layer": name, "keras_std": round(float(reference.std()), 3),
                         "int8_step": round(float(scale), 4),
                         "int8_range": [round((-128 - zero) * scale, 2), round((127 - zero) * scale, 2)],
                         "rms_error_over_std": round(float(np.sqrt((error ** 2).mean()) / reference.std()), 3),
                         "calibration_per_image_max_median": round(float(np.median(per_image_max)), 2),
                         "calibration_max_over_std": round(float(per_image_max.max() / seen.std()), 1)})
        return rows

    def head_from_backbone(self) -> dict:
        """The logit error of the int8 model, and of the head in float on the int8 backbone."""
        import keras

        from edge.interpreter import find_interpreter

        images = self.test.images
        base = self.model.get_layer("resnet50v2")
        expected = keras.Model(base.input, base.output).predict(images.astype(np.float32) / 127.5 - 1,
                                                                verbose=0).mean(axis=(1, 2))
        weights, bias = self.model.layers[-1].get_weights()
        keras_logit = (expected @ weights + bias).ravel()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = find_interpreter().interpreter_class(model_path=str(self.scratch / "base.tflite"),
                                                               experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        relu = next(t for t in interpreter.get_tensor_details() if "/post_relu_1/Relu" in t["name"])
        scale, zero = relu["quantization"]
        source = interpreter.get_input_details()[0]
        head_in_float = []
        for image in images:
            interpreter.set_tensor(source["index"], image[None])
            interpreter.invoke()
            pooled = ((interpreter.get_tensor(relu["index"]).astype(np.float64) - zero) * scale).mean(axis=(1, 2))
            head_in_float.append(float((pooled @ weights + bias).ravel()[0]))
        error = np.array(head_in_float) - keras_logit
        return {"logit_error_mean": round(float(error.mean()), 3),
                "logit_error_rms": round(float(np.sqrt((error ** 2).mean())), 3),
                "head_weights_abs_max": round(float(np.abs(weights).max()), 4), "features": int(weights.shape[0])}

    def batchnorm_constants(self) -> dict:
        """The unfolded BatchNorm multipliers and offsets quantised per tensor, in Keras (float)."""
        import keras

        from training.keras_inference import keras_probabilities

        def quantised(values):
            low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
            scale = (high - low) / 255.0
            if scale == 0:
                return values
            zero = np.round(-128 - low / scale)
            return (np.clip(np.round(values / scale + zero), -128, 127) - zero) * scale

        model = keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights())
        worst = 0.0
        for layer in model.get_layer("resnet50v2").layers:
            unfolded = "preact" in layer.name or layer.name == "post_bn"  # after an Add: not in a conv
            if isinstance(layer, keras.layers.BatchNormalization) and unfolded:
                gamma, beta, mean, variance = layer.get_weights()
                multiplier = gamma / np.sqrt(variance + layer.epsilon)
                offset = beta - mean * multiplier
                multiplier_q, offset_q = quantised(multiplier), quantised(offset)
                worst = max(worst, float(np.median(np.abs(multiplier_q - multiplier) / np.abs(multiplier))))
                layer.set_weights([multiplier_q * np.sqrt(variance + layer.epsilon), offset_q + mean * multiplier_q,
                                   mean, variance])
        probabilities = keras_probabilities(model, self.test.images)
        from convert.evaluate import compare_with_reference

        comparison = compare_with_reference(self.keras, probabilities, self.threshold)
        return {"agreement": round(comparison["agreement"], 4),
                "mean_abs_dp": round(comparison["mean_abs_prob_diff"], 4),
                "worst_layer_median_relative_multiplier_error": round(worst, 4)}


def study(run: Path, quick: bool, litert: bool) -> dict:
    started = time.perf_counter()
    print(f"{run.name}: {run}", flush=True)
    one = Study(run, quick)
    one.variants(litert)
    result = {"run": run.name, "test_images": len(one.test), "margin": one.margin(), "variants": one.rows}
    if not quick:
        result["layers"] = one.layers()
        result["head_from_int8_backbone"] = one.head_from_backbone()
        result["batchnorm_constants_per_tensor"] = one.batchnorm_constants()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def show(result: dict) -> None:
    print(describe_machine(result["machine"]))
    for one in result["runs"]:
        margin = one["margin"]
        print(f"\n{one['run']}: Keras accuracy {margin['keras_accuracy']:.3f}, threshold {margin['threshold']}, "
              f"{margin['share_within_0.05_of_threshold'] * 100:.1f}% of {one['test_images']} test images within "
              f"0.05 of it, logit std {margin['keras_logit_std']}")
        print_table(["variant", "agree %", "mean |dp|", "max |dp|", "signed dp", "accuracy %"],
                    [[row["variant"], f"{row['agreement'] * 100:.1f}", f"{row['mean_abs_dp']:.4f}",
                      f"{row['max_abs_dp']:.4f}", f"{row['mean_signed_dp']:+.4f}", f"{row['accuracy'] * 100:.1f}"]
                     for row in one["variants"]])
        if "layers" in one:
            print_table(["layer", "Keras std", "int8 step", "rms err / std", "calib. max / std"],
                        [[row["layer"], row["keras_std"], row["int8_step"], row["rms_error_over_std"],
                          row["calibration_max_over_std"]] for row in one["layers"]])
            print(f"head in float on the int8 backbone: logit error {one['head_from_int8_backbone']}")
            print(f"BatchNorm constants quantised per tensor (Keras): {one['batchnorm_constants_per_tensor']}")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("benchmarks.int8_marginal", __doc__)
    parser.add_argument("--marginal-run", type=Path, help="an existing marginal run (default: made in work/)")
    parser.add_argument("--healthy-run", type=Path, help=f"an existing healthier run (default: {HEALTHY_RUN})")
    parser.add_argument("--quick", action="store_true",
                        help="only the default conversion, the correction and litert-quantizer")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "int8_marginal.json")
    args = parser.parse_args(argv)
    mark = cpu_mark()
    try:
        import litert_quantizer  # noqa: F401

        litert = True
    except ImportError:
        print("litert-quantizer is not installed (pip install 'crackkit[quantizer]'): skipping it")
        litert = False
    runs = [args.marginal_run or marginal_run(WORK)]
    healthy = args.healthy_run or healthy_run(WORK)
    if healthy is not None:
        runs.append(healthy)
    import tensorflow as tf

    from convert.quantize import LiteRTQuantizerBackend

    result = {"runs": [study(run, args.quick, litert) for run in runs],
              "settings": {"marginal_training": " ".join(MARGINAL_TRAINING), "kernels": "xnnpack",
                           "quick": args.quick},
              "versions": {"tensorflow": tf.__version__, "litert-quantizer": LiteRTQuantizerBackend.version()}}
    result["machine"] = machine_info(since=mark)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    show(result)


if __name__ == "__main__":
    main()
