"""What a C library prints on stderr during a call: libjpeg's only report of damaged data.

libjpeg "decodes" a JPEG that is damaged in the middle: it fills what it cannot read, prints a
warning such as ``Corrupt JPEG data: premature end of data segment`` on stderr, and OpenCV
returns the image as if nothing happened (OpenCV keeps libjpeg's default message handler and
exposes no warning count). The warning is the decoder's own verdict, so it is caught here: file
descriptor 2 is pointed at a temporary file (the sink) while the call runs.

File descriptors belong to the whole process, so a thread cannot have a stderr of its own. Two
ways to call, so that decodes need not wait for each other:

- ``call_watching_stderr`` (together): any number of calls run at once. The sink takes fd 2 from
  the first call in until the last call out, and each call gets the bytes written to it during
  its own run (its window): certainly everything the call printed, and whatever ran beside it
  printed meanwhile. A window without the message the caller looks for clears the call; one with
  it is ambiguous, and the caller repeats the call alone. Damage is rare, so almost nothing is
  done twice.
- ``call_capturing_stderr`` (alone): waits until no other call runs and keeps new ones out while
  it runs, so what it captures is its own (plus anything unrelated threads printed).

What others print meanwhile (a progress bar, a warning) is not lost: whenever a watched call
ends, what reached the sink since is written on to the real stderr, less what the callers take
out as their own (``strip``: the same rule for every caller, e.g. libjpeg's damage warnings, which
become an error row instead); ``pass_on`` hands on text an alone-call captured but does not own.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class _Sink:
    """The temporary file fd 2 points at while calls are watched or captured, and who uses it."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.together = 0  # watched calls running
        self.alone = False  # an alone-call is running
        self.alone_waiting = 0  # alone-calls waiting (new watched calls let them go first)
        self.file = None
        self.saved = -1  # the real stderr while fd 2 points at the sink
        self.forwarded = 0  # sink bytes already written on (or stripped)

    def redirect(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)

    def restore(self) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.saved = -1
        os.ftruncate(self.file.fileno(), 0)
        os.lseek(self.file.fileno(), 0, os.SEEK_SET)  # fd 2 shared this offset
        self.forwarded = 0

    def size(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def read(self, start: int, end: int) -> bytes:
        return os.pread(self.file.fileno(), max(0, end - start), start)

    def forward(self, strip: Callable[[str], str]) -> None:
        """Write what reached the sink since the last time, ``strip``ped, to the real stderr."""
        data = self.read(self.forwarded, self.size())
        self.forwarded += len(data)
        _write(self.saved, strip(data.decode("utf-8", errors="replace")))


_sink = _Sink()


def call_watching_stderr(function: Callable[[], T],
                         strip: Callable[[str], str]) -> tuple[T, str]:
    """(``function()``, what was written to fd 2 while it ran, by it or by anything running at the
    same time). Many calls run at once. What was written reaches the real stderr once, as
    ``strip(text)`` (the callers' own messages taken out; every caller must strip by one rule)."""
    with _sink.condition:
        while _sink.alone or _sink.alone_waiting:
            _sink.condition.wait()
        if _sink.together == 0:
            _sink.redirect()
        _sink.together += 1
        start = _sink.size()
    try:
        result = function()
    finally:
        end = _sink.size()  # everything the call printed is in the file by now (unbuffered writes)
        with _sink.condition:
            window = _sink.read(start, end)
            _sink.together -= 1
            _sink.forward(strip)
            if _sink.together == 0:
                _sink.restore()
                _sink.condition.notify_all()
    return result, window.decode("utf-8", errors="replace")


def call_capturing_stderr(function: Callable[[], T]) -> tuple[T, str]:
    """(``function()``, what was written to fd 2 while it ran), run while no other watched or
    captured call runs. Hand what is not the caller's own to ``pass_on``."""
    with _sink.condition:
        _sink.alone_waiting += 1
        try:
            while _sink.alone or _sink.together:
                _sink.condition.wait()
            _sink.redirect()
            _sink.alone = True
        finally:
            _sink.alone_waiting -= 1
            _sink.condition.notify_all()  # if redirect failed, the calls held back for this one go on
    try:
        result = function()
    finally:
        with _sink.condition:
            text = _sink.read(0, _sink.size())
            _sink.restore()
            _sink.alone = False
            _sink.condition.notify_all()
    return result, text.decode("utf-8", errors="replace")


def pass_on(text: str) -> None:
    """Write captured text that belongs to someone else to the real stderr."""
    _write(2, text)


def _write(fd: int, text: str) -> None:
    if text:
        try:
            os.write(fd, text.encode("utf-8", errors="replace"))
        except OSError:
            pass
