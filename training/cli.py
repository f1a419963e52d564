"""The `crack` command: data preparation, training, prediction and conversion.

Heavy imports (TensorFlow) happen inside the commands so that `crack --help` is instant.
Every command turns a UserError into a one-line message and exit code 2.
"""

from __future__ import annotations

import typer

from edge.errors import UserError

app = typer.Typer(
    help="Crack / no-crack classifier: make data, train ResNet50V2, predict, convert to TFLite.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Make or prepare labelled image folders.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# --- commands are added below, each a thin layer over its module's options dataclass ---


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
