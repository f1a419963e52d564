"""How both CLIs (`crack` and `crack-edge`) start and end: one place for exit codes and errors.

``run_app(app)`` runs a typer app and turns what escapes a command into the exit codes of
edge/FORMATS.md: UserError -> one line, exit 2; RuntimeFailure or an OSError such as a full disk ->
one line, exit 1; anything unexpected -> one line naming it, exit 1 (set CRACKKIT_DEBUG=1 for the
traceback). A device log never fills with tracebacks.
"""

from __future__ import annotations

import os
import sys

from typing import Any

import typer
from typer.core import TyperGroup

from edge.errors import EXIT_RUNTIME, EXIT_USAGE, RuntimeFailure, UserError, first_line

DEBUG_VARIABLE = "CRACKKIT_DEBUG"


def package_version() -> str:
    """The installed crackkit version, or 'unknown' when run from a source tree without install."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crackkit")
    except PackageNotFoundError:
        return "unknown"


def version_callback(value: bool) -> None:
    """Eager ``--version`` option: print 'crackkit VERSION' and exit 0."""
    if value:
        typer.echo(f"crackkit {package_version()}")
        raise typer.Exit()


class OneLineUsageErrors(TyperGroup):
    """A usage error (unknown option, a value of the wrong type, a missing option) is one line,
    ``error: ... (see COMMAND --help)``, exit 2, instead of a boxed usage text: on a
    device that line goes to the journal. Both CLIs use it. Help asked for with no arguments is still shown."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any) -> Any:
        from typer._click.exceptions import NoArgsIsHelpError, UsageError

        try:
            # standalone_mode=False: click returns the exit code instead of exiting, and lets
            # usage errors through to be written here on one line
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            typer.echo(exc.format_message(), err=True)
            result = EXIT_USAGE
        except UsageError as exc:
            message = " ".join(exc.format_message().split())
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
            result = EXIT_USAGE
        if not standalone_mode:
            return result
        raise SystemExit(result if isinstance(result, int) else 0)


def run_app(app: typer.Typer, prog_name: str) -> None:
    """Run ``app`` and exit with the project's exit codes; never a traceback unless debugging."""
    debug = os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        app(prog_name=prog_name, standalone_mode=True)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except RuntimeFailure as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    except OSError as exc:  # a full disk, an I/O error, a vanished device: worth a retry later
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {exc.strerror or first_line(exc)}{where}", err=True)
        sys.exit(EXIT_RUNTIME)
    except Exception as exc:  # a bug: one line for the log, the traceback on request
        if debug:
            raise
        typer.echo(f"error: unexpected {first_line(exc)} (a bug: please report it; "
                   f"{DEBUG_VARIABLE}=1 shows the traceback)", err=True)
        sys.exit(EXIT_RUNTIME)
