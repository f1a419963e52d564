"""`crack-edge info M.tflite`: what a model says about itself, as one readable block or JSON.

Its card (embedded and/or sidecar: contract, mode, source run, the crackkit version that made it,
golden inputs, the build machine's check), the file's size and sha256, and its input and output
tensors as this device's interpreter sees them (type, shape, quantisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contract import DEFAULT_THRESHOLD, ModelCard
from edge.errors import UserError
from edge.golden import GoldenSet
from edge.interpreter import find_interpreter
from edge.model_metadata import file_sha256, read_model_card


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]
    scale: float
    zero_point: int

    def text(self) -> str:
        quantised = f", scale {self.scale:g}, zero point {self.zero_point}" if self.scale else ""
        return f"{self.name}: {self.dtype} {self.shape}{quantised}"


@dataclass(frozen=True)
class ModelInfo:
    file: str
    size_bytes: int
    sha256: str
    card_source: str  # embedded / sidecar / both / none
    card: ModelCard | None
    golden_status: str
    interpreter: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def to_dict(self) -> dict:
        return {"file": self.file, "size_bytes": self.size_bytes, "sha256": self.sha256,
                "card_source": self.card_source, "card": self.card.to_dict() if self.card else None,
                "golden_status": self.golden_status, "interpreter": self.interpreter,
                "inputs": [t.__dict__ for t in self.inputs], "outputs": [t.__dict__ for t in self.outputs]}

    def text(self) -> str:
        lines = [f"model      {self.file}, {self.size_bytes / 1e6:.2f} MB, sha256 {self.sha256}",
                 f"card       {self.card_source}"]
        card = self.card
        if card is None:
            lines.append(f"contract   none: scoring would use threshold {DEFAULT_THRESHOLD} and default labels")
        else:
            contract, details = card.contract, card.details
            rule = f" ({contract.threshold_rule})" if contract.threshold_rule else ""
            lines += [
                f"contract   {contract.input_size}x{contract.input_size} {contract.colour_order}, pixels "
                f"{contract.pixel_range[0]}..{contract.pixel_range[1]}, resize {contract.resize}",
                f"threshold  {contract.threshold:g}{rule}",
                f"labels     {contract.labels[0]} / {contract.labels[1]}",
                f"mode       {card.mode}" + (f": {details['description']}" if details.get("description") else ""),
                f"source     run {card.source_run.name}, model.keras sha256 {card.source_run.model_sha256}",
                f"made by    crackkit {card.package_version}, {card.created} (card schema {card.schema_version})",
                f"golden     {self.golden_status}",
            ]
            lines += _build_check(details)
        lines.append(f"tensors    ({self.interpreter})")
        lines += [f"  input    {t.text()}" for t in self.inputs]
        lines += [f"  output   {t.text()}" for t in self.outputs]
        return "\n".join(lines)


def _build_check(details: dict) -> list[str]:
    metrics, gate = details.get("metrics") or {}, details.get("gate") or {}
    test, keras, versus = metrics.get("test"), metrics.get("keras_test"), metrics.get("vs_keras")
    if not (test and keras and versus):
        return []
    verdict = "passed" if gate.get("passed") else "FAILED: " + "; ".join(gate.get("reasons") or [])
    lines = [f"checked    on {metrics.get('test_images')} test images: accuracy {test['accuracy'] * 100:.1f}% "
             f"(Keras {keras['accuracy'] * 100:.1f}%), agreement with Keras {versus['agreement'] * 100:.1f}%, "
             f"gate {verdict}"]
    for kernels in metrics.get("kernel_sets") or []:
        subset = "" if kernels["whole_split"] else f" (subset of {kernels['images']})"
        lines.append(f"  {kernels['kernels']:<9} agreement {kernels['comparison']['agreement'] * 100:.1f}%, "
                     f"mean |dp| {kernels['comparison']['mean_abs_prob_diff']:.4f}{subset}")
    return lines


def _tensor(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(name=str(detail["name"]), dtype=np.dtype(detail["dtype"]).name,
                      shape=[int(v) for v in detail["shape"]], scale=float(scale), zero_point=int(zero_point))


def _golden_status(model_path: Path, card: ModelCard | None) -> str:
    if card is None or card.golden is None:
        return "none named in the card"
    path = model_path.parent / card.golden.file
    if not path.is_file():
        return f"{card.golden.file} MISSING beside the model (crack-edge verify cannot run)"
    if file_sha256(path) != card.golden.sha256:
        return f"{card.golden.file} does NOT match the card's sha256"
    try:
        golden = GoldenSet.load(path)
    except UserError as exc:
        return f"{card.golden.file} unusable: {exc}"
    return (f"{card.golden.file}, {len(golden)} inputs ({int(golden.far.sum())} farther than "
            f"{golden.margin:.3f} from the threshold), mean |dp| allowed {golden.mean_abs_dp_bound:.4f}")


def describe_model(model_path: str | Path) -> ModelInfo:
    path = Path(model_path)
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    found = read_model_card(path)
    backend = find_interpreter()
    try:
        interpreter = backend.create(str(path), 1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"cannot load {path} as a TFLite model: {exc}") from None
    return ModelInfo(file=path.name, size_bytes=path.stat().st_size, sha256=file_sha256(path),
                     card_source=found.source, card=found.card, golden_status=_golden_status(path, found.card),
                     interpreter=f"{backend.package} {backend.version}",
                     inputs=[_tensor(d) for d in interpreter.get_input_details()],
                     outputs=[_tensor(d) for d in interpreter.get_output_details()])
