"""`crack-edge` / `python -m edge`: run a converted crack model on a device. Never imports TensorFlow.

  score   files, folders, globs and @lists -> CSV/JSONL
  stream  a camera, video file, RTSP/HTTP URL, GStreamer pipeline or picamera2 -> events
  bench   interpreter and pipeline speed on this device
"""

from __future__ import annotations

import typer

from edge.errors import UserError

app = typer.Typer(
    help="Score images, folders, videos and camera streams with a TFLite crack classifier.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


# --- commands are added below, each a thin layer over its module's options dataclass ---


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
