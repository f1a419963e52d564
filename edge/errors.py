"""Errors and exit codes shared by both CLIs (`crack` and `crack-edge`).

Exit codes (documented in edge/FORMATS.md):
  0  done
  1  a runtime failure: something went wrong while working (disk full, a stream that died, a
     model that fails its check); trying again later may succeed, so a service manager restarts
  2  a usage or configuration error that a restart cannot fix (bad option, missing file, unusable
     model or sidecar): one line on stderr, never a traceback
  3  the source stalled: no frame for --stall-timeout seconds (systemd restarts the service)
130  interrupted by Ctrl-C or SIGTERM after a clean stop
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_STALLED = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input (missing file, wrong option, unusable data). Shown on one line, exit code 2."""


class RuntimeFailure(Exception):
    """A failure while working that the user did not cause by what they typed (a full disk, an
    I/O error, a model that fails verification). Shown on one line, exit code 1."""


class ImageDecodeError(ValueError):
    """A file that is not a readable image (empty, truncated, corrupt or another format)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` for one-line error reports and error rows."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    return f"{name}: {line[:limit]}" if line else name
