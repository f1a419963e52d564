"""Credentials in URLs never reach a log, a status, an event or an error message.

An IP camera's address usually carries its login (``rtsp://admin:secret@10.0.0.5/stream1``), and
everything the stream prints ends up in journald. ``mask_urls`` replaces the user and password of
every ``scheme://user:password@host`` in a text with ``***``; ``MaskingFormatter`` applies it to
every log line, whatever module logged it.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://userinfo@ : userinfo is anything up to the last '@' before the host, without '/' or
# whitespace (a password may contain ':' or an escaped '@').
_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+(?:@[^/\s@]+)*)@")


def mask_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _CREDENTIALS.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)


class MaskingFormatter(logging.Formatter):
    """A log formatter whose every line (message, arguments, exception text) has URL
    credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_urls(super().format(record))
