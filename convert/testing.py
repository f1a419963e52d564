"""Tiny run directories for the convert tests and benchmark (not used by `crack convert` itself).

``write_run`` lays out a run as training does (model.keras, contract.json, splits/*.csv with
absolute paths to PNGs); the model builders make small Keras models whose first layer is the
x/127.5-1 Rescaling, like the real ResNet50V2 model.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from edge.contract import ModelContract
from training.run_layout import RunLayout, write_split


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())


def write_run(root: Path, model, splits: dict[str, list[tuple[np.ndarray, int]]],
              threshold: float = 0.5, input_size: int | None = None) -> RunLayout:
    """Write a run directory; ``splits`` maps train/val/test to (RGB image, label) pairs."""
    layout = RunLayout(Path(root))
    layout.root.mkdir(parents=True, exist_ok=True)
    size = input_size or int(model.input_shape[1])
    for split, items in splits.items():
        rows = []
        for i, (image, label) in enumerate(items):
            path = layout.root / "images" / split / f"{i:04d}_{label}.png"
            write_png(path, image)
            rows.append((str(path.resolve()), int(label)))
        write_split(layout.split_file(split), rows)
    model.save(layout.model)
    ModelContract(input_size=size, threshold=threshold, extra={"run": layout.name}).save(layout.contract)
    return layout


def crack_images(count: int, size: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """Textured grey squares; half of them with a dark line across (label 1)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        label = i % 2
        base = rng.integers(70, 190)
        image = np.clip(base + rng.normal(0, 18, (size, size, 1)), 0, 255).repeat(3, axis=2)
        if label:
            angle = rng.uniform(0, math.pi)
            centre = rng.uniform(size * 0.3, size * 0.7, 2)
            dx, dy = math.cos(angle) * size, math.sin(angle) * size
            start = (int(centre[0] - dx), int(centre[1] - dy))
            end = (int(centre[0] + dx), int(centre[1] + dy))
            image = image.astype(np.uint8).copy()
            cv2.line(image, start, end, (15, 15, 15), thickness=int(rng.integers(1, 3)))
        items.append((np.asarray(image, np.uint8), label))
    return items


def small_cnn(size: int = 32):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def resnet_model(size: int, seed: int = 0):
    """ResNet50V2 (random weights) as training builds it: Rescaling first, sigmoid head."""
    import keras

    keras.utils.set_random_seed(seed)
    base = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(size, size, 3),
                                         pooling="avg")
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(base(x))
    return keras.Model(inputs, outputs)


def train_small_cnn(items: list[tuple[np.ndarray, int]], size: int = 32, epochs: int = 15, seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    model = small_cnn(size)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    x = np.stack([image for image, _ in items]).astype(np.float32)
    y = np.array([label for _, label in items], np.float32)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


# --- a model whose int8 error is known in advance ------------------------------------------------
# probability = sigmoid(SLOPE * (mean pixel / 127.5 - 1) + bias): for uniform grey images it is a
# smooth function of the grey level. The int8 model's sigmoid output is a multiple of 1/256, so a
# Keras probability just above the midpoint between two steps is rounded UP to the next step;
# with the threshold between that midpoint and the step, int8 labels such an image "crack" while
# Keras says "no crack". FLIP_PROBABILITY and CONTROLLED_THRESHOLD sit 0.0009 inside that band.
SLOPE = 0.1
FLIP_GREY = 128
FLIP_PROBABILITY = 0.5028  # int8 output rounds to 129/256 = 0.50390625
CONTROLLED_THRESHOLD = 0.5037  # between the midpoint 0.501953 and the step 0.503906


def brightness_model(size: int, slope: float, bias: float):
    """probability = sigmoid(slope * (mean pixel / 127.5 - 1) + bias), after the x/127.5-1 Rescaling."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.full((3, 1), slope / 3, np.float32), np.array([bias], np.float32)])
    return model


def controlled_model(size: int = 32):
    logit = math.log(FLIP_PROBABILITY / (1 - FLIP_PROBABILITY))
    return brightness_model(size, SLOPE, logit - SLOPE * (FLIP_GREY / 127.5 - 1))


# --- an untrained-looking model: probabilities 0.731 +- 0.001, under one int8 output step ------
FLAT_SLOPE = 0.003


def flat_model(size: int = 32):
    return brightness_model(size, FLAT_SLOPE, 1.0)


def grey(size: int, level: int) -> np.ndarray:
    return np.full((size, size, 3), level, np.uint8)


def controlled_splits(size: int, flips: int = 2, clear: int = 4) -> dict[str, list[tuple[np.ndarray, int]]]:
    """Test: ``clear`` bright crack images, ``clear`` dark no-crack images and ``flips`` mid-grey
    no-crack images that Keras gets right and int8 gets wrong. Train (calibration): the full grey
    range, including the mid grey."""
    test = ([(grey(size, 255), 1)] * clear + [(grey(size, 0), 0)] * clear
            + [(grey(size, FLIP_GREY), 0)] * flips)
    train = [(grey(size, level), int(level > FLIP_GREY)) for level in (0, 40, 90, FLIP_GREY, 170, 215, 255)]
    train += [(grey(size, FLIP_GREY), 0)] * 3
    return {"train": train, "val": train[:2], "test": test}


# --- a model that full int8 breaks and selective int8 repairs ------------------------------------
# "features" (ReLU) yields A = 0 for every image (zero is exact in int8) and B = 1 + green/127.5 - 1.
# The linear "fragile" layer reads A with weight 1 and B, which carries the whole signal, with
# weight 0.003. int8 quantises each output unit's weights with one scale (max |w| / 127 = 1/127),
# so 0.003 rounds to 0: the int8 model outputs the same probability for every image (the collapse
# of TF issue 40183) and the debugger sees a huge RMSE/scale on that layer. Kept in float, it is
# exact again (its inputs, 0 and B, are quantised finely enough).
FRAGILE_SMALL_WEIGHT = 0.003
FRAGILE_GAIN = 1000.0  # probability = sigmoid(3 * (green / 127.5 - 1))


def fragile_model(size: int = 32):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, activation="relu", name="features")(x)
    x = keras.layers.Dense(1, name="fragile")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("features").set_weights(
        [np.array([[0, 0], [0, 1], [0, 0]], np.float32), np.array([-10, 1], np.float32)])
    model.get_layer("fragile").set_weights(
        [np.array([[1.0], [FRAGILE_SMALL_WEIGHT]], np.float32),
         np.array([-FRAGILE_SMALL_WEIGHT], np.float32)])
    model.get_layer("head").set_weights([np.array([[FRAGILE_GAIN]], np.float32), np.zeros(1, np.float32)])
    return model


def fragile_splits(size: int) -> dict[str, list[tuple[np.ndarray, int]]]:
    levels = [10, 30, 50, 80, 100, 155, 175, 200, 225, 245]
    items = [(grey(size, level), int(level > 127)) for level in levels]
    return {"train": items, "val": items[:2], "test": items}
