"""The `crack` command, assembled here because this is the layer that sees both training (data,
train, predict: training/cli.py) and conversion (convert: convert/cli.py).

`crack` and `python -m convert` both start here.
"""

from __future__ import annotations

from convert.cli import convert_command
from edge.cli_main import run_app
from training import tensorflow_env
from training.cli import app

app.command("convert")(convert_command)


def main() -> None:
    tensorflow_env.prepare()  # oneDNN kernels, quiet start-up: before TensorFlow is imported
    run_app(app, "crack")
