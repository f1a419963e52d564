"""The tf.data input pipeline: decode in parallel with the one shared preprocessing function
(``edge.preprocess.load_for_model``, so training sees exactly the pixels the device will see),
cache the decoded images, augment (training only), batch and prefetch.

Images leave the pipeline as float32 raw RGB 0..255; the model's first layer does the scaling.
Augmentation keeps to what does not change whether a crack is there: flips, 90-degree rotations,
and mild brightness and contrast changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.preprocess import load_for_model


@dataclass(frozen=True)
class Augmentation:
    flips: bool = True
    rotations: bool = True
    brightness: float = 0.15   # max shift, as a share of the 0..255 range
    contrast: float = 0.2      # contrast factor in [1 - c, 1 + c]


def make_dataset(items: list[tuple[str, int]], img_size: int, batch_size: int, *,
                 training: bool, seed: int = 0, augmentation: Augmentation | None = None,
                 cache: bool = True):
    """A batched ``tf.data.Dataset`` of (float32 images 0..255, float32 labels)."""
    import tensorflow as tf

    paths = [path for path, _ in items]
    labels = np.array([label for _, label in items], dtype=np.float32)

    def decode(path):
        def load(raw: bytes) -> np.ndarray:
            return load_for_model(raw.decode("utf-8"), img_size)

        image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
        image.set_shape((img_size, img_size, 3))
        return image

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(lambda path, label: (decode(path), label),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()  # decoded uint8, before augmentation
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation is not None:
        dataset = dataset.map(_augmenter(augmentation, seed), num_parallel_calls=tf.data.AUTOTUNE)
    # Under MultiWorkerMirroredStrategy every worker reads the whole list and keeps its share of
    # each global batch (the items are paths in memory, not files to hand out to the workers).
    # No effect on one machine.
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(sharding)


def _augmenter(options: Augmentation, seed: int):
    import tensorflow as tf

    def augment(image, label):
        if options.flips:
            image = tf.image.random_flip_left_right(image, seed=seed)
            image = tf.image.random_flip_up_down(image, seed=seed + 1)
        if options.rotations:
            turns = tf.random.uniform((), 0, 4, dtype=tf.int32, seed=seed + 2)
            image = tf.image.rot90(image, k=turns)
        if options.brightness > 0:
            image = image + tf.random.uniform((), -options.brightness, options.brightness,
                                              seed=seed + 3) * 255.0
        if options.contrast > 0:
            factor = tf.random.uniform((), 1.0 - options.contrast, 1.0 + options.contrast,
                                       seed=seed + 4)
            mean = tf.reduce_mean(image, axis=(0, 1), keepdims=True)
            image = (image - mean) * factor + mean
        return tf.clip_by_value(image, 0.0, 255.0), label

    return augment


def class_weights(labels: list[int]) -> dict[int, float]:
    """Weights that make both classes count equally in the loss: n / (2 * n_class)."""
    labels = np.asarray(labels)
    total = len(labels)
    counts = {c: int((labels == c).sum()) for c in (0, 1)}
    return {c: (total / (2.0 * n) if n else 0.0) for c, n in counts.items()}
