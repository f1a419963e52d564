"""Errors that a user caused and can fix: the CLIs print them on one line and exit with code 2."""


class UserError(Exception):
    """Bad input (missing file, wrong option, unusable data). Shown without a traceback."""


class ImageDecodeError(ValueError):
    """A file that is not a readable image (empty, truncated, corrupt or another format)."""
