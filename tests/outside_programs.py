"""Helpers for the tests that talk to real outside programs (a broker, a browser, a receiver):
waiting on a condition, a free local port, and finding an installed program or skipping."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable

import pytest

WAIT = 60.0  # upper bound for waiting on something; never a measured duration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def installed_program(names: tuple[str, ...], apt_package: str, also: tuple[str, ...] = ()) -> str:
    """The path of the first of ``names`` on PATH (or of ``also``, full paths); skip the test when
    none is installed, fail it when CI=true (CI installs the Debian package ``apt_package``)."""
    found = next((path for path in map(shutil.which, names) if path), None) or next(
        (path for path in also if os.access(path, os.X_OK)), None)
    if found is None:
        message = f"{names[0]} is not installed (apt-get install -y {apt_package})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
