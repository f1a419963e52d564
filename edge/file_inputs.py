"""Turning command-line PATHS into a list of image files: files, folders (recursive), globs and
``@list.txt`` files (one path per line, ``#`` comments). Used by `crack-edge score` and
`crack predict`, so both read exactly the same files for the same arguments."""

from __future__ import annotations

import glob
from pathlib import Path

from edge.errors import UserError
from edge.preprocess import is_image_path


def expand_inputs(arguments: list[str] | tuple[str, ...]) -> list[Path]:
    """Image files named by the arguments, in order, each once.

    A file named directly is kept whatever its suffix (so a broken upload still gets an error
    row); inside folders and globs only image suffixes count. A path that matches nothing is a
    UserError, because a typo should not silently score nothing.
    """
    files: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.absolute()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for argument in arguments:
        for path in _expand_one(argument):
            add(path)
    return files


def _expand_one(argument: str) -> list[Path]:
    if argument.startswith("@"):
        list_file = Path(argument[1:])
        if not list_file.is_file():
            raise UserError(f"list file not found: {list_file}")
        found: list[Path] = []
        for line in list_file.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.extend(_expand_one(line))
        return found
    path = Path(argument)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
    if path.is_file():
        return [path]
    if glob.has_magic(argument):
        matches = sorted(Path(p) for p in glob.glob(argument, recursive=True))
        images = [p for p in matches if p.is_file() and is_image_path(p)]
        for folder in (p for p in matches if p.is_dir()):
            images.extend(sorted(q for q in folder.rglob("*") if q.is_file() and is_image_path(q)))
        if not images:
            raise UserError(f"no image files match {argument}")
        return images
    raise UserError(f"no such file or folder: {argument}")
