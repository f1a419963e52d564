"""The conversion modes: one table that both configures the TFLite converter and records what it
configured (in the report, the sidecar and the model card).

Each ``ConversionMode`` names its converter settings as the converter spells them
(``tf.lite.Optimize.DEFAULT``, ``tf.float16``, ``tf.lite.OpsSet.TFLITE_BUILTINS_INT8``, ``tf.uint8``);
``apply`` sets exactly those on a converter, and ``settings`` is what the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversionMode:
    name: str
    description: str
    optimizations: tuple[str, ...] = ()  # tf.lite.Optimize members
    supported_types: tuple[str, ...] = ()  # tf dtypes of the weights (float16)
    supported_ops: tuple[str, ...] = ()  # tf.lite.OpsSet members
    representative_dataset: bool = False  # calibrated on images (full integer)
    io_type: str | None = None  # inference_input_type and inference_output_type (tf dtype)
    must_be_integer_only: bool = False  # the gate checks the converted graph
    # quantised: evaluated under every kernel set of the build machine, not only XNNPACK (float32
    # gives the same numbers on every kernel set, issue 13's measurement on arm64 included)
    check_all_kernels: bool = True
    requestable: bool = True  # False: made only by `crack convert` itself (selective recovery)
    # after conversion, the final layer's bias is corrected by the int8 logit's mean error on the
    # calibration images (convert.output_bias; kept only when it brings them closer to Keras)
    output_bias_correction: bool = False
    # who quantises: "converter" (tf.lite.TFLiteConverter, with the settings above) or
    # "litert-quantizer" (static int8 of the fp32 model, convert.quantize.LiteRTQuantizerBackend)
    backend: str = "converter"
    default: bool = True  # made when --modes is not given

    def settings(self) -> dict:
        """The converter settings this mode applies, as recorded in reports and sidecars."""
        if self.backend == LITERT_QUANTIZER:
            return {"backend": self.backend, "source": "the fp32 .tflite of the converter",
                    "recipe": LITERT_RECIPE, "calibration_statistics": LITERT_CALIBRATION,
                    "representative_dataset": self.representative_dataset,
                    "inference_input_output_type": self.io_type or "float32",
                    "output_bias_correction": self.output_bias_correction}
        return {"optimizations": list(self.optimizations),
                "supported_types": list(self.supported_types),
                "supported_ops": list(self.supported_ops) or ["TFLITE_BUILTINS"],
                "representative_dataset": self.representative_dataset,
                "inference_input_output_type": self.io_type or "float32",
                "output_bias_correction": self.output_bias_correction}

    def apply(self, converter, representative_dataset=None):
        """Set this mode's settings on a ``tf.lite.TFLiteConverter``; returns it."""
        import tensorflow as tf

        if self.backend != "converter":
            raise ValueError(f"mode {self.name} is made by {self.backend}, not the TFLite converter")
        if self.representative_dataset and representative_dataset is None:
            raise ValueError(f"mode {self.name} needs calibration images")
        converter.optimizations = [getattr(tf.lite.Optimize, name) for name in self.optimizations]
        if self.supported_types:
            converter.target_spec.supported_types = [getattr(tf, name) for name in self.supported_types]
        if self.supported_ops:
            converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, name) for name in self.supported_ops]
        if self.representative_dataset:
            converter.representative_dataset = representative_dataset
        if self.io_type:
            converter.inference_input_type = getattr(tf, self.io_type)
            converter.inference_output_type = getattr(tf, self.io_type)
        return converter


SELECTIVE_MODE = "int8_selective"
LITERT_MODE = "int8_litert"
LITERT_QUANTIZER = "litert-quantizer"
LITERT_RECIPE = "static_wi8_ai8: int8 weights per channel, int8 activations per tensor (min_max_uniform_quantize)"
# litert-quantizer's default keeps a moving average of each tensor's min and max over the
# calibration images, one image at a time: the logit's range then covers only the last images'
# logits, and on the runs measured (benchmarks/int8_marginal.py) every probability came out >= 0.5.
LITERT_CALIBRATION = "min and max over every calibration image (qsv_utils.min_max_update)"

MODE_TABLE: dict[str, ConversionMode] = {mode.name: mode for mode in (
    ConversionMode("fp32", "float32 (no quantisation)", check_all_kernels=False),
    ConversionMode("fp16", "float16 weights, float32 compute and I/O",
                   optimizations=("DEFAULT",), supported_types=("float16",)),
    ConversionMode("dynamic", "dynamic-range: int8 weights, float activations and I/O",
                   optimizations=("DEFAULT",)),
    ConversionMode("int8", "full integer: int8 ops only, uint8 input and output",
                   optimizations=("DEFAULT",), supported_ops=("TFLITE_BUILTINS_INT8",),
                   representative_dataset=True, io_type="uint8", must_be_integer_only=True,
                   output_bias_correction=True),
    # the same full integer quantisation by the TF converter's successor, side by side with int8
    # when asked for (--modes int8,int8_litert); needs the `quantizer` extra
    ConversionMode(LITERT_MODE, "full integer by litert-quantizer: int8 ops only, int8 input and output",
                   representative_dataset=True, io_type="int8", must_be_integer_only=True,
                   output_bias_correction=True, backend=LITERT_QUANTIZER, default=False),
    # made from the calibrated int8 model by the quantisation debugger (convert.selective), with
    # the layers that lose most kept in float: it cannot be requested on its own
    ConversionMode(SELECTIVE_MODE, "int8 with the layers that lose most kept in float (float I/O)",
                   optimizations=("DEFAULT",), representative_dataset=True, requestable=False),
)}

# Which passing variant `crack convert` recommends for the device, best first: full integer before
# float activations, because an integer-only model is the one every integer kernel set and
# accelerator runs, and the fastest here (first run: int8 1.5 ms against dynamic 1.9 ms per
# invoke). Only a size rule would pick `dynamic`, whose file is a fraction of a percent smaller.
DEPLOY_PREFERENCE = ("int8", "int8_litert", SELECTIVE_MODE, "dynamic", "fp16", "fp32")

# Modes that can be requested, in the order they are converted and reported; MODES are made when
# none are named.
REQUESTABLE = tuple(name for name, mode in MODE_TABLE.items() if mode.requestable)
MODES = tuple(name for name in REQUESTABLE if MODE_TABLE[name].default)


def model_filename(mode: str) -> str:
    return f"model_{mode}.tflite"
