"""systemd's notify protocol (sd_notify) with the standard library: one datagram per message to
the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` is an abstract socket name).

With ``Type=notify`` the unit is "active" only after ``READY=1``; with ``WatchdogSec`` systemd
sets ``$WATCHDOG_USEC`` and kills and restarts the service when ``WATCHDOG=1`` stops coming for
that long; ``STATUS=`` is the line ``systemctl status`` shows. Outside systemd (no
``$NOTIFY_SOCKET``) every call does nothing. Sending never raises: a lost status is not worth a
crash.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("crack.edge")


class SystemdNotifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls) -> "SystemdNotifier":
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())) else None
        return cls(os.environ.get("NOTIFY_SOCKET"), watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of systemd's timeout, as sd_watchdog_enabled(3)
        advises; None when the unit has no watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (e.g. "READY=1", "STATUS=...") as one message; False if not sent."""
        if self.address is None:
            return False
        message = "\n".join(field.replace("\n", " ") for field in fields)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), target)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False
        return True
