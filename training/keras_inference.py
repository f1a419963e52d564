"""Keras inference, written once: the probabilities of a Keras crack model for decoded images.

Training's evaluation, `crack predict` and `crack convert`'s comparison with TFLite all score
through ``keras_probabilities`` so that "the Keras reference" means one thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BATCH_SIZE = 32


def keras_probabilities(model, images: np.ndarray | Iterable, batch_size: int = BATCH_SIZE
                        ) -> np.ndarray:
    """Crack probabilities (float32, one per image) for a uint8/float array of model-size RGB
    images (N, S, S, 3), or for a batched ``tf.data`` dataset of such images."""
    if isinstance(images, np.ndarray):
        if len(images) == 0:
            return np.zeros((0,), np.float32)
        outputs = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    else:
        outputs = model.predict(images, verbose=0)
    return np.asarray(outputs, dtype=np.float32).reshape(-1)
