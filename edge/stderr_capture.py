"""What a C library prints on stderr during one call: libjpeg's only report of damaged data.

libjpeg "decodes" a JPEG that is damaged in the middle: it fills what it cannot read, prints a
warning such as ``Corrupt JPEG data: premature end of data segment`` on stderr, and OpenCV
returns the image as if nothing happened (OpenCV keeps libjpeg's default message handler and
exposes no warning count). The warning is the decoder's own verdict, so it is caught here: file
descriptor 2 is pointed at a temporary file for the duration of the call.

File descriptors belong to the whole process, so calls are serialised (a lock): while one runs,
anything another thread writes to stderr lands in the capture too; the caller hands back what
is not its own with ``pass_on``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_lock = threading.Lock()
_sink = None  # one temporary file, reused under the lock


def call_capturing_stderr(function: Callable[[], T]) -> tuple[T, str]:
    """(``function()``, what was written to file descriptor 2 while it ran)."""
    global _sink
    with _lock:
        if _sink is None:
            _sink = tempfile.TemporaryFile()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        _sink.seek(0)
        _sink.truncate()
        saved = os.dup(2)
        try:
            os.dup2(_sink.fileno(), 2)
            try:
                result = function()
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        _sink.seek(0)
        text = _sink.read().decode("utf-8", errors="replace")
    return result, text


def pass_on(text: str) -> None:
    """Write captured text that belongs to someone else to the real stderr."""
    if text:
        try:
            os.write(2, text.encode("utf-8", errors="replace"))
        except OSError:
            pass
