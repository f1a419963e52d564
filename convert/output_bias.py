"""Output bias correction for full int8: the one fix measured to help a marginal model.

Measured on a deliberately short demo run (``benchmarks/int8_marginal.py``): full int8 moves the
logit (the input of the final sigmoid) by a roughly constant amount, +0.6 there, the sum of many
small per-channel activation-quantisation errors that the head's 2,048 weights add up. No
calibration choice removes it (50, 200 or 1,000 images, balanced, validation images, even the
test split itself), nor per-tensor weights, nor a float output. It is the same on every image,
so it can be measured on the calibration images and taken out of the final layer's bias.

``correct_output_bias`` runs the int8 model on the calibration images with the default kernels
(XNNPACK), on a copy of the model that also outputs its logit (the FULLY_CONNECTED output feeding
the LOGISTIC), compares that with the Keras logit (the Keras probability, inverted) and, when the
mean difference is larger than the logit tensor's quantisation step and than twice its standard
error, subtracts it from that layer's int32 bias in the flatbuffer. Nothing else in the model
changes. The correction is kept only when it brings the probabilities of the calibration images
closer to Keras; the training split is all it sees, never the test split.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from edge.classifier import quantize_pixels
from edge.interpreter import KERNEL_SETS, default_thread_count, find_interpreter
from edge.model_metadata import rebuild_model

# Keras probabilities outside this band are too close to 0 or 1 (in float32) to invert exactly.
KERAS_PROBABILITY_BAND = 1e-4
MIN_IMAGES = 8


@dataclass(frozen=True)
class BiasCorrection:
    applied: bool
    reason: str
    images: int = 0  # calibration images the shift was measured on (unsaturated)
    logit_shift: float | None = None  # mean int8 logit - Keras logit
    logit_shift_std_error: float | None = None
    logit_step: float | None = None  # the quantisation step of the logit tensor
    bias_change: int = 0  # subtracted from the int32 bias, in units of its scale
    calibration_mean_abs_prob_diff_before: float | None = None
    calibration_mean_abs_prob_diff_after: float | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "the int8 logit's mean error vs Keras on the calibration "
                                          "images, subtracted from the final FULLY_CONNECTED bias"}


@dataclass(frozen=True)
class _Head:
    logit: int  # tensor index of the FULLY_CONNECTED output that LOGISTIC reads
    bias: int  # tensor index of its int32 bias
    output: int  # the model's output tensor


def _producers(ops: list[dict]) -> dict[int, dict]:
    return {int(tensor): op for op in ops for tensor in op["outputs"]}


def find_head(interpreter) -> _Head | None:
    """The final FULLY_CONNECTED -> LOGISTIC of a full int8 model (through QUANTIZE/DEQUANTIZE),
    or None when the model does not end that way."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - every TFLite interpreter package has it
    producers = _producers(ops)
    output = int(interpreter.get_output_details()[0]["index"])
    op = producers.get(output)
    while op is not None and op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
        op = producers.get(int(op["inputs"][0]))
    if op is None or op["op_name"] != "LOGISTIC":
        return None
    logit = int(op["inputs"][0])
    fc = producers.get(logit)
    if fc is None or fc["op_name"] != "FULLY_CONNECTED" or len(fc["inputs"]) < 3 or int(fc["inputs"][2]) < 0:
        return None
    details = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    bias = int(fc["inputs"][2])
    if details[bias]["dtype"] != np.int32 or int(np.prod(details[bias]["shape"])) != 1:
        return None
    if not details[logit]["quantization"][0]:  # a float logit: nothing to correct here
        return None
    return _Head(logit, bias, output)


def _graph_interpreter(content: bytes):
    """An interpreter on the built-in kernels, to read the graph: a delegate (XNNPACK) replaces
    the ops it takes with one DELEGATE op."""
    backend = find_interpreter()
    resolvers = getattr(sys.modules[backend.interpreter_class.__module__], "OpResolverType", None)
    extra = {"experimental_op_resolver_type": resolvers[KERNEL_SETS["builtin"]]} if resolvers else {}
    interpreter = backend.interpreter_class(model_content=content, num_threads=1, **extra)
    interpreter.allocate_tensors()
    return interpreter


def with_outputs(content: bytes, tensors: list[int]) -> bytes:
    """A copy of ``content`` whose graph (subgraph 0) outputs ``tensors``."""

    def edit(schema, model) -> None:
        model.subgraphs[0].outputs = list(tensors)
        model.signatureDefs = None  # they name the old outputs

    return rebuild_model(content, edit)


def int8_head_outputs(content: bytes, images: np.ndarray, threads: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """(logits, saturated, probabilities, logit step) of a full int8 model on uint8 images, or
    None when it has no FULLY_CONNECTED -> LOGISTIC head. ``saturated``: the logit sits at an end
    of its int8 range. Run with the default kernels (XNNPACK) on a copy of the model that also
    outputs its logit tensor."""
    graph = _graph_interpreter(content)
    head = find_head(graph)
    if head is None:
        return None
    details = {int(t["index"]): t for t in graph.get_tensor_details()}
    scale, zero = details[head.logit]["quantization"]
    backend = find_interpreter()
    interpreter = backend.interpreter_class(model_content=with_outputs(content, [head.logit, head.output]),
                                            num_threads=threads or default_thread_count())
    interpreter.allocate_tensors()
    logit_out, prob_out = interpreter.get_output_details()
    logits, saturated, probabilities = [], [], []
    for image in images:
        _feed(interpreter, image)
        interpreter.invoke()
        q = int(interpreter.get_tensor(logit_out["index"]).reshape(-1)[0])
        logits.append((q - zero) * scale)
        saturated.append(q in (-128, 127))
        probabilities.append(_output_value(interpreter, prob_out))
    return (np.array(logits, np.float64), np.array(saturated, bool), np.array(probabilities, np.float64),
            float(scale))


def _feed(interpreter, image: np.ndarray) -> None:
    """Set one uint8 image as the input, quantised as the input tensor says (as the edge
    runner's classifier does it)."""
    source = interpreter.get_input_details()[0]
    dtype = np.dtype(source["dtype"])
    scale, zero = source["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        value = quantize_pixels(image[None], dtype, scale, zero)
    else:
        value = image[None].astype(dtype)
    interpreter.set_tensor(source["index"], value)


def _output_value(interpreter, output: dict) -> float:
    """The single output value of ``output``, dequantised when it is quantised."""
    value = float(interpreter.get_tensor(output["index"]).reshape(-1)[0])
    scale, zero = output["quantization"]
    return (value - zero) * scale if scale else value


def _probabilities(content: bytes, images: np.ndarray, threads: int | None) -> np.ndarray:
    interpreter = find_interpreter().interpreter_class(model_content=content,
                                                       num_threads=threads or default_thread_count())
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]
    values = []
    for image in images:
        _feed(interpreter, image)
        interpreter.invoke()
        values.append(_output_value(interpreter, output))
    return np.array(values, np.float64)


def with_bias_change(content: bytes, bias_tensor: int, change: int) -> bytes:
    """A copy of ``content`` whose int32 bias tensor (subgraph 0) is lowered by ``change``."""

    def edit(schema, model) -> None:
        tensors = model.subgraphs[0].tensors
        buffer_index = tensors[bias_tensor].buffer
        if sum(1 for tensor in tensors if tensor.buffer == buffer_index) != 1:
            raise ValueError("the bias buffer is shared")
        buffer = model.buffers[buffer_index]
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype="<i4").copy()
        values -= np.int32(change)
        buffer.data = bytearray(values.astype("<i4").tobytes())

    return rebuild_model(content, edit)


def _bias_scale(interpreter, bias_tensor: int) -> float:
    details = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    return float(details[bias_tensor]["quantization"][0])


def correct_output_bias(content: bytes, images: np.ndarray, keras_probabilities: np.ndarray,
                        threads: int | None = None) -> tuple[bytes, BiasCorrection]:
    """``content`` with its output bias corrected (or unchanged), and what was measured."""
    measured = int8_head_outputs(content, images, threads)
    if measured is None:
        return content, BiasCorrection(False, "no FULLY_CONNECTED -> LOGISTIC head with an int8 logit")
    logits, saturated, probabilities, step = measured
    keras = np.asarray(keras_probabilities, np.float64)
    before = float(np.abs(probabilities - keras).mean())
    usable = (~saturated) & (keras > KERAS_PROBABILITY_BAND) & (keras < 1 - KERAS_PROBABILITY_BAND)
    count = int(usable.sum())
    if count < MIN_IMAGES:
        return content, BiasCorrection(False, f"only {count} calibration images with an unsaturated logit "
                                              f"(at least {MIN_IMAGES} needed)", count, logit_step=step,
                                       calibration_mean_abs_prob_diff_before=before)
    keras_logits = np.log(keras[usable] / (1 - keras[usable]))
    errors = logits[usable] - keras_logits
    shift = float(errors.mean())
    std_error = float(errors.std(ddof=1) / np.sqrt(count))
    common = dict(images=count, logit_shift=shift, logit_shift_std_error=std_error, logit_step=step,
                  calibration_mean_abs_prob_diff_before=before)
    if abs(shift) <= step or abs(shift) <= 2 * std_error:
        return content, BiasCorrection(False, f"the int8 logit's mean error ({shift:+.3f}) is within its "
                                              f"quantisation step ({step:.3f}) or twice its standard error "
                                              f"({std_error:.3f})", **common)
    graph = _graph_interpreter(content)
    head = find_head(graph)
    change = int(round(shift / _bias_scale(graph, head.bias)))
    try:
        corrected = with_bias_change(content, head.bias, change)
    except ValueError as exc:
        return content, BiasCorrection(False, str(exc), **common)
    after = float(np.abs(_probabilities(corrected, images, threads) - keras).mean())
    if after >= before:
        return content, BiasCorrection(False, "correcting did not bring the calibration images closer "
                                              "to Keras", bias_change=change,
                                       calibration_mean_abs_prob_diff_after=after, **common)
    return corrected, BiasCorrection(True, f"int8 logit was {shift:+.3f} off Keras on average", bias_change=change,
                                     calibration_mean_abs_prob_diff_after=after, **common)

