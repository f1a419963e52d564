"""`crack train --init runs/NAME`: adapt an already trained crack model to a new surface.

Instead of ImageNet or random weights, training starts from the parent run's ``model.keras``
(the whole classifier: base, BatchNorm statistics and head) and fine-tunes it on a few labelled
photos of the new surface. The run is an ordinary run (same layout, same evaluation, `crack
convert` after it); what differs:

    input size     the parent's (a conflicting --img-size is refused)
    BatchNorm      first re-estimated on the new surface's training images (AdaBN: forward
                   passes only, no label used, no weight learnt)
    phase 1        the head alone, base frozen, INIT_HEAD_EPOCHS epochs
    phase 2        the last block (conv5) onwards, at learning rate / INIT_LR_DIVISOR, with every
                   BatchNorm layer frozen (inference mode): the statistics of the step above stay
    provenance     options.json keeps the parent's path and model sha256; metrics.json and
                   contract.json (so every converted model's card) name the parent run

A short recipe for small data: the parent already knows what a crack looks like, so only the
top of the network moves, and not far. Each default can be overridden with the usual options.

Why BatchNorm first: a model trained from scratch normalises every layer with the statistics of
its own surface. On another surface those are wrong from the first layer up, and the model ranks
the new photos poorly (concrete -> asphalt: ROC AUC 0.77); with the new surface's statistics the
same weights rank them well (0.94, on the same 400 asphalt test images as
benchmarks/adapt_surface.py, from the statistics of 100 labelled images alone), before any
training. Fine-tuning then keeps them, as Keras' transfer-learning guide does for a pretrained
base: with conv5's BatchNorm in training mode, batches of 16 augmented images moved its statistics
about, and two identical runs (concrete -> asphalt, 50 labelled images per class) ended at 0.728
and 0.802 test accuracy; frozen, two runs gave 0.843 and 0.845. The step
applies to a parent trained from ImageNet weights too: model.keras does not keep the
``training=False`` its base was called with, so the loaded base's BatchNorm follows the training
mode like a from-scratch one (measured here on from-scratch parents only: these machines have no
ImageNet weights).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge.contract import ModelContract
from edge.errors import UserError
from edge.model_metadata import file_sha256
from training.options import TrainOptions
from training.run_layout import open_run

INIT_HEAD_EPOCHS = 3
INIT_FINE_TUNE_AT = "conv5"
INIT_LR_DIVISOR = 10


@dataclass(frozen=True)
class ParentRun:
    """A finished run whose model another run starts from."""

    name: str
    root: Path  # resolved: runs/latest names the run it points at
    model: Path
    model_sha256: str
    img_size: int

    def record(self) -> dict:
        """What metrics.json and the contract say about the parent: names and hashes only."""
        return {"name": self.name, "model_sha256": self.model_sha256}


def read_parent(path: str | Path) -> ParentRun:
    """The run at ``path`` (runs/latest is resolved), checked without TensorFlow."""
    layout = open_run(path)
    if not layout.model.is_file() or not layout.contract.is_file():
        raise UserError(f"--init {path}: {layout.root} has no model.keras and contract.json "
                        "(not a finished run)")
    if not zipfile.is_zipfile(layout.model):
        raise UserError(f"--init {path}: {layout.model} is not a Keras archive")
    contract = ModelContract.load(layout.contract)
    return ParentRun(name=layout.name, root=layout.root, model=layout.model, model_sha256=file_sha256(layout.model),
                     img_size=contract.input_size)


def options_from_parent(options: TrainOptions, img_size: int | None) -> TrainOptions:
    """``options`` for a run that starts from ``options.init``: the parent's input size (UserError
    when ``img_size``, as given on the command line, differs), the small-data recipe for every
    phase setting left unset, and the parent's model sha256 for the record."""
    if options.init is None:
        raise ValueError("options.init is not set")
    parent = read_parent(options.init)
    if img_size is not None and img_size != parent.img_size:
        raise UserError(f"--img-size {img_size} conflicts with --init {parent.name}, whose model "
                        f"takes {parent.img_size} px; leave --img-size out")
    if options.weights.strip().lower() != "auto":
        raise UserError("--init and --weights are alternatives: the weights come from the --init run")
    return dataclasses.replace(
        options, init=parent.root, init_model_sha256=parent.model_sha256,
        img_size=parent.img_size,
        head_epochs=INIT_HEAD_EPOCHS if options.head_epochs is None else options.head_epochs,
        fine_tune_at=INIT_FINE_TUNE_AT if options.fine_tune_at is None else options.fine_tune_at,
        fine_tune_learning_rate=(options.learning_rate / INIT_LR_DIVISOR
                                 if options.fine_tune_learning_rate is None
                                 else options.fine_tune_learning_rate))


def parent_record(options: TrainOptions) -> dict | None:
    """{name, model_sha256} of the run ``options`` started from, or None."""
    if options.init is None:
        return None
    return {"name": open_run(options.init).name, "model_sha256": options.init_model_sha256}


def adapt_batchnorm(model, items: list[tuple[str, int]], img_size: int, batch_size: int) -> int:
    """Replace the BatchNorm moving statistics of ``model`` with those of the images ``items``
    (their labels are not used): one pass in training mode, no weight learnt, each batch weighted
    equally (momentum k/(k+1) at batch k). Layers the parent saved frozen are included (a frozen
    BatchNorm layer would ignore training mode); their flags and momenta are given back. Returns
    the number of BatchNorm layers updated."""
    import keras

    from training.pipeline import make_dataset

    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True
        dataset = make_dataset(items, img_size, batch_size, training=False, cache=False)
        for step, (images, _) in enumerate(dataset):
            for layer in layers:
                layer.momentum = step / (step + 1)
            model(images, training=True)
    finally:
        for layer, (momentum, trainable) in zip(layers, saved):
            layer.momentum, layer.trainable = momentum, trainable
    return len(layers)


def _all_layers(model) -> list:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers"):
            found += _all_layers(layer)
    return found


def starting_model(options: TrainOptions):
    """(model, base, WeightsResult): the parent's classifier for an --init run, else a new one
    with ``options.weights`` (training.model.build_classifier)."""
    from training.model import WeightsResult, build_classifier
    from training.predict import load_run_model

    if options.init is None:
        return build_classifier(options.img_size, options.weights)
    parent = read_parent(options.init)
    if options.init_model_sha256 and parent.model_sha256 != options.init_model_sha256:
        raise UserError(f"--init run {parent.name} changed since this run started (model.keras "
                        "sha256 differs); start a new run")
    model, _ = load_run_model(options.init)
    bases = [layer for layer in model.layers if hasattr(layer, "layers")]
    if len(bases) != 1:
        raise UserError(f"--init {parent.name}: model.keras is not a crackkit classifier "
                        "(expected one ResNet50V2 base inside)")
    used = f"run {parent.name} (model.keras sha256 {parent.model_sha256[:12]})"
    return model, bases[0], WeightsResult(requested=f"init {parent.name}", used=used, warning=None)
