"""Checking an output path before any work: a results file, a JSON report, an events file.

``check_output_path`` fails with one clear line (a UserError, exit 2) when the path is a folder,
lies under a regular file, or is in a folder where no file can be created (permissions, a
read-only file system), instead of failing after minutes of work. Nothing is left behind: an
existing file is opened for appending and closed, unchanged; a missing one is probed with a
temporary file in its folder, removed at once. Missing folders are created, as writing would.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edge.errors import UserError


def check_output_path(path: str | Path, option: str = "--out") -> None:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    for ancestor in path.parents:
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise UserError(f"{option} {path}: {ancestor} is a file, not a folder")
            break
    if os.path.lexists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as exc:
            raise UserError(f"cannot write {option} {path}: {exc.strerror or exc}") from None
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"cannot create {option} {path} in {folder}: "
                        f"{exc.strerror or exc}") from None
