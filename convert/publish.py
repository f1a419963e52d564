"""Publishing a variant: its model card (``edge.contract.ModelCard``) embedded in the .tflite and
written beside it as the sidecar, each file atomically. Names and hashes only: nothing that goes
to a device carries a build-machine path."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from convert.modes import model_filename
from convert.variant import VariantResult
from edge.atomic_files import write_bytes_atomic
from edge.cli_main import package_version
from edge.contract import GoldenReference, ModelCard, ModelContract, SourceRun
from edge.golden import golden_path
from edge.model_metadata import embed_card, sidecar_path


def card_details(variant: VariantResult, keras_metrics: dict, test_images: int) -> dict:
    """The informative part of the card: how the model was made and how it scored."""
    main = variant.main
    return {
        "description": variant.description,
        "conversion": variant.conversion,
        **(variant.details.to_dict() if variant.details else {}),
        "metrics": {"test": main.metrics if main else None, "vs_keras": main.comparison if main else None,
                    "keras_test": keras_metrics, "latency": variant.latency, "test_images": test_images,
                    "kernel_sets": [e.to_dict() for e in variant.evaluations]},
        "gate": variant.gate.to_dict() if variant.gate else None,
    }


def build_card(variant: VariantResult, contract: ModelContract, source: SourceRun, created: str,
               details: dict, golden: GoldenReference | None = None) -> ModelCard:
    return ModelCard(contract=contract, mode=variant.mode, source_run=source,
                     package_version=package_version(), created=created, golden=golden,
                     details=details)


def publish(directory: Path, content: bytes, card: ModelCard, golden: bytes) -> ModelCard:
    """The model (with the card inside), then its golden inputs, then its sidecar, each via a
    temporary file and a rename: a crash leaves the old model (or none), never a partial one; the
    card names the golden file by sha256 and the sidecar names the model by sha256, so files of
    two conversions are never taken for one. Returns the sidecar's card (with the model's sha256)."""
    model = embed_card(content, card)
    path = directory / model_filename(card.mode)
    write_bytes_atomic(path, model)
    write_bytes_atomic(golden_path(path), golden)
    published = replace(card, sha256=hashlib.sha256(model).hexdigest())
    published.save(sidecar_path(path))
    return published


def remove_variant(directory: Path, mode: str) -> None:
    path = directory / model_filename(mode)
    for stale in (sidecar_path(path), golden_path(path), path):
        stale.unlink(missing_ok=True)
