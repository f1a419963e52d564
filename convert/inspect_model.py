"""Read a .tflite flatbuffer without running it: its ops, tensor types and I/O quantisation.

Used to prove that full int8 contains only integer builtin ops (what TFLITE_BUILTINS_INT8
promises and integer-only accelerators need) and to fill the sidecar's input/output fields.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

try:  # the LiteRT wheel ships the generated schema; TensorFlow has the same file
    from ai_edge_litert import schema_py_generated as _schema
except ImportError:  # pragma: no cover
    from tensorflow.lite.python import schema_py_generated as _schema

_OP_NAMES = {value: name for name, value in vars(_schema.BuiltinOperator).items()
             if not name.startswith("_")}
_TYPE_NAMES = {value: name for name, value in vars(_schema.TensorType).items()
               if not name.startswith("_")}
INTEGER_TENSOR_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT32", "INT64", "BOOL"})
FLOAT_TENSOR_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})


def _tensor_info(tensor) -> dict:
    type_name = _TYPE_NAMES.get(tensor.Type(), str(tensor.Type()))
    quantization = tensor.Quantization()
    scale, zero_point = 0.0, 0
    if quantization is not None and quantization.ScaleLength() > 0:
        scale = float(quantization.ScaleAsNumpy()[0])
        zero_point = int(quantization.ZeroPointAsNumpy()[0]) if quantization.ZeroPointLength() else 0
    signature = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
    return {
        "name": (tensor.Name() or b"").decode(errors="replace"),
        "shape": [int(v) for v in np.asarray(signature).tolist()],
        "dtype": type_name.lower(),
        "quantization": {"scale": scale, "zero_point": zero_point},
    }


def inspect_tflite(content: bytes) -> dict:
    """Ops (builtin names and counts), custom ops, tensor type counts, I/O details, integer_only."""
    model = _schema.Model.GetRootAs(content, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(("CUSTOM:" + custom.decode()) if custom else _OP_NAMES.get(builtin, str(builtin)))
    ops: Counter = Counter()
    types: Counter = Counter()
    inputs, outputs = [], []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.OperatorsLength()):
            ops[codes[graph.Operators(i).OpcodeIndex()]] += 1
        for i in range(graph.TensorsLength()):
            types[_TYPE_NAMES.get(graph.Tensors(i).Type(), "?")] += 1
        if s == 0:
            inputs = [_tensor_info(graph.Tensors(graph.Inputs(j))) for j in range(graph.InputsLength())]
            outputs = [_tensor_info(graph.Tensors(graph.Outputs(j))) for j in range(graph.OutputsLength())]
    custom_ops = sorted(name for name in ops if name.startswith("CUSTOM:"))
    float_types = sorted(name for name in types if name in FLOAT_TENSOR_TYPES)
    return {
        "ops": dict(sorted(ops.items())),
        "custom_ops": custom_ops,
        "tensor_types": dict(sorted(types.items())),
        "float_tensor_types": float_types,
        "integer_only": not custom_ops and not float_types
                         and set(types) <= INTEGER_TENSOR_TYPES and "DEQUANTIZE" not in ops,
        "input": inputs[0] if inputs else None,
        "output": outputs[0] if outputs else None,
        "subgraphs": model.SubgraphsLength(),
    }
