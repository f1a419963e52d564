"""The log of a training run: every message goes to the console and to the run's train.log.

Training, evaluation and the callbacks all write through ``say`` (or ``LOGGER`` for lines meant
for train.log alone), so no module needs another to report progress.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from training.run_layout import RunLayout

LOGGER = logging.getLogger("crack.train")


@contextlib.contextmanager
def logging_to(layout: RunLayout) -> Iterator[None]:
    """Append LOGGER's messages to the run's train.log while the block runs."""
    handler = logging.FileHandler(layout.log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


def say(message: str, level: int = logging.INFO) -> None:
    """To the console and to train.log."""
    LOGGER.log(level, message)
    print(("warning: " if level >= logging.WARNING else "") + message, flush=True)
