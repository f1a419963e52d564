"""The `crack` command, assembled here because this is the layer that sees both training (data,
train, predict: training/cli.py) and conversion (convert: convert/cli.py).

`crack` and `python -m convert` both start here.
"""

from __future__ import annotations

import os

from convert.cli import convert_command
from edge.cli_main import run_app
from training.cli import app

app.command("convert")(convert_command)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    run_app(app, "crack")
