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


@data_app.command("demo")
def data_demo(
    out: str = typer.Option(..., "--out", metavar="DIR",
                            help="Folder to write crack/, no_crack/, README.txt and .complete to."),
    count: int = typer.Option(300, "--count", help="Images per class."),
    size: int = typer.Option(128, "--size", help="Image side in pixels (square images)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
) -> None:
    """Generate the synthetic demo data set (concrete/asphalt textures, with and without cracks)."""
    from pathlib import Path

    from training.demo_data import DemoOptions, generate_demo

    summary = generate_demo(DemoOptions(out=Path(out), count=count, size=size, seed=seed))
    typer.echo(f"wrote {sum(summary.per_class.values())} images ({summary.per_class['crack']} "
               f"crack, {summary.per_class['no_crack']} no_crack, {summary.size}x{summary.size}, "
               f"seed {summary.seed}) to {summary.out} in {summary.seconds:.1f} s")


@data_app.command("patches")
def data_patches(
    images: str = typer.Option(..., "--images", metavar="DIR", help="Folder of photos."),
    masks: str = typer.Option(..., "--masks", metavar="DIR",
                              help="Folder of binary crack masks (0/255 or 0/1), named like "
                                   "their photos (001.jpg -> 001.png)."),
    out: str = typer.Option(..., "--out", metavar="DIR",
                            help="Output folder: crack/, no_crack/ and patches.csv."),
    size: int = typer.Option(96, "--size", help="Patch side in pixels."),
    stride: int = typer.Option(48, "--stride", help="Step between patches in pixels."),
    crack_min_fraction: float = typer.Option(
        0.01, "--crack-min-fraction",
        help="A crack patch needs at least this fraction of its area as crack pixels "
             "inside its centre (away from the margin)."),
    crack_margin: int | None = typer.Option(
        None, "--crack-margin", show_default="size/8",
        help="Border width in pixels whose crack pixels do not count towards a crack patch."),
    clearance: int = typer.Option(
        4, "--clearance",
        help="A no_crack patch must be at least this many pixels away from any crack pixel."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace patches from an earlier run in --out."),
) -> None:
    """Cut photos + crack masks into crack / no_crack patches (ambiguous ones are dropped)."""
    from pathlib import Path

    from training.patches import PatchOptions, cut_patches

    options = PatchOptions(images=Path(images), masks=Path(masks), out=Path(out), size=size,
                           stride=stride, crack_min_fraction=crack_min_fraction,
                           crack_margin=crack_margin, clearance=clearance, overwrite=overwrite)
    summary = cut_patches(options, warn=lambda message: typer.echo(f"warning: {message}",
                                                                   err=True))
    for line in summary.lines():
        typer.echo(line)


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
