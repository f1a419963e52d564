"""The model: the original project's ResNet50V2 classifier, taking raw RGB pixels.

    raw RGB 0..255 -> Rescaling(1/127.5, -1) -> ResNet50V2(include_top=False)
                   -> GlobalAveragePooling2D -> Dense(1, sigmoid)

At 224x224 it has 23,566,849 parameters (23,521,409 trainable, 45,440 in BatchNorm statistics).
The scaling layer is part of the model, so every caller (training pipeline, convert, edge runner)
feeds the same raw pixels the contract in ``edge.contract`` describes.

Weights (``--weights``): ``imagenet`` (Keras cache, downloaded when online), a local file, or
``none`` (random initialisation); ``auto`` takes ImageNet weights when they can be had.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError, first_line

IMAGENET_NOTOP_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                + IMAGENET_NOTOP_FILE)
# BatchNorm momentum when training from scratch: Keras' 0.99 needs thousands of steps before the
# moving statistics used at validation time match the network, so a small data set validates on
# stale statistics for many epochs. 0.9 tracks within a few dozen steps.
FROM_SCRATCH_BN_MOMENTUM = 0.9
# A file with this suffix holds the whole classifier's weights (model.save_weights), e.g. from an
# earlier run; any other file is loaded into the ResNet50V2 base (like the ImageNet notop file).
WHOLE_MODEL_WEIGHTS_SUFFIX = ".weights.h5"


@dataclass(frozen=True)
class WeightsResult:
    requested: str       # auto | imagenet | none | a path
    used: str            # imagenet | none | the path
    warning: str | None  # set when auto fell back to random initialisation

    @property
    def pretrained(self) -> bool:
        return self.used != "none"


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights_source() -> str:
    """The ImageNet file in the Keras cache when it is there (loaded as it is: Keras would check
    its hash against the one it knows and fetch the file again on a mismatch, which fails
    offline), else 'imagenet' for Keras to download it."""
    cached = keras_cache_dir() / IMAGENET_NOTOP_FILE
    return str(cached) if cached.is_file() else "imagenet"


def imagenet_weights_hint() -> str:
    return (f"put {IMAGENET_NOTOP_FILE} (from {IMAGENET_URL}) in {keras_cache_dir()}/, "
            "or pass --weights PATH to that file")


def build_base(img_size: int, weights: str | None):
    import keras

    return keras.applications.ResNet50V2(include_top=False, weights=weights,
                                         input_shape=(img_size, img_size, 3))


def build_classifier(img_size: int, weights: str = "auto"):
    """(model, base, WeightsResult). Raises UserError when the asked-for weights cannot be had."""
    import keras

    if img_size < 32:
        raise UserError(f"--img-size must be at least 32 for ResNet50V2, got {img_size}")
    base, result = _base_with_weights(img_size, weights)
    inputs = keras.Input(shape=(img_size, img_size, 3), name="rgb_0_255")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="resnet_v2_scaling")(inputs)
    # A pretrained base keeps its BatchNorm statistics (inference mode) even when fine-tuned,
    # as Keras' transfer-learning guide advises; a base trained from scratch must learn them.
    x = base(x, training=False) if result.pretrained else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="crack_probability")(x)
    model = keras.Model(inputs, outputs, name="crack_resnet50v2")
    if not result.pretrained:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM
    if result.used.endswith(WHOLE_MODEL_WEIGHTS_SUFFIX):
        try:
            model.load_weights(result.used)
        except Exception as exc:
            raise UserError(f"cannot load {result.used} into this model (same --img-size?): "
                            f"{first_line(exc)}") from None
    return model, base, result


def _base_with_weights(img_size: int, weights: str):
    requested = weights
    choice = weights.strip()
    lowered = choice.lower()
    if lowered == "none":
        return build_base(img_size, None), WeightsResult(requested, "none", None)
    if lowered in ("imagenet", "auto"):
        try:
            return (build_base(img_size, imagenet_weights_source()),
                    WeightsResult(requested, "imagenet", None))
        except Exception as exc:  # offline: URL fetch failure; corrupt cache: h5 error
            reason = first_line(exc)
            if lowered == "imagenet":
                raise UserError(f"cannot load ImageNet weights ({reason}); "
                                f"{imagenet_weights_hint()}") from None
            warning = (f"ImageNet weights unavailable ({reason}); training from random "
                       f"initialisation. For pretrained weights {imagenet_weights_hint()}")
            return build_base(img_size, None), WeightsResult(requested, "none", warning)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise UserError(f"--weights: not 'auto', 'imagenet', 'none' or an existing file: {choice}")
    result = WeightsResult(requested, str(path.resolve()), None)
    if path.name.endswith(WHOLE_MODEL_WEIGHTS_SUFFIX):  # the whole classifier, loaded later
        return build_base(img_size, None), result
    try:
        return build_base(img_size, str(path)), result
    except Exception as exc:
        raise UserError(f"cannot load weights file {path} into ResNet50V2 (expected the "
                        f"include_top=False weights, e.g. {IMAGENET_NOTOP_FILE}): "
                        f"{first_line(exc)}") from None


def unfreeze_from(base, fine_tune_at: int | str | None, *, freeze_batchnorm: bool = False) -> int:
    """Make base layers from ``fine_tune_at`` on trainable (an index, a layer name, or None for the
    whole base); earlier layers stay frozen. BatchNorm layers of a pretrained base stay in
    inference mode because the base is called with ``training=False``; ``freeze_batchnorm`` keeps
    every BatchNorm layer frozen (inference mode, statistics kept) for a base called without it,
    such as an --init parent's. Returns the index."""
    import keras

    base.trainable = True
    if fine_tune_at is None:
        index = 0
    elif isinstance(fine_tune_at, int) or str(fine_tune_at).lstrip("-").isdigit():
        index = int(fine_tune_at)
        if not 0 <= index < len(base.layers):
            raise UserError(f"--fine-tune-at {index} is outside 0..{len(base.layers) - 1} "
                            "(the base's layer indices)")
    else:
        names = [layer.name for layer in base.layers]
        matches = [i for i, name in enumerate(names) if name.startswith(str(fine_tune_at))]
        if not matches:
            raise UserError(f"--fine-tune-at {fine_tune_at!r} names no layer of ResNet50V2 "
                            "(try conv5, conv4 or a layer index)")
        index = matches[0]
    for layer in base.layers[:index]:
        layer.trainable = False
    if freeze_batchnorm:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return index


def parameter_counts(model) -> dict[str, int]:
    import numpy as np

    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def load_weights_quietly(model, path: Path) -> None:
    """Load a checkpoint's weights; the optimizer state saved beside them is not wanted here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def save_for_inference(model, path: Path):
    """model.keras with the architecture and weights but not Adam's two moments per weight (which
    would triple the file): it is for evaluation, `crack convert` and `crack predict`; --resume
    continues from the backup, not from this file. Rebuilt from its config rather than with
    keras.models.clone_model, which (Keras 3.15) copies the compiled optimizer along. Returns
    that copy (built outside any tf.distribute strategy scope)."""
    inference = model.__class__.from_config(model.get_config())
    inference.set_weights(model.get_weights())
    inference.save(path)
    return inference
