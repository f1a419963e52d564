"""systemd's notify protocol and the watchdog: READY once the first frame is scored, WATCHDOG only
while frames flow, none while the source is stalled, exit 3 after --stall-timeout; the unit file
passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from conftest import PROJECT
from edge.errors import EXIT_STALLED
from edge.systemd_notify import SystemdNotifier
from edge_models import crack_frame, line_model_path
from test_edge_stream import MjpegServer

WAIT = 60.0  # upper bound for a subprocess; never a measured duration
UNIT = PROJECT / "edge" / "crack-edge.service"


class NotifyListener:
    """A NOTIFY_SOCKET of our own: collects every datagram in order."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.address = address
        self.messages: list[str] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.closed.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self) -> list[str]:
        self.closed.set()
        self.thread.join(WAIT)
        self.sock.close()
        return self.messages


def test_notify_sends_datagrams_to_a_path_and_an_abstract_socket(tmp_path, monkeypatch):
    for address in (str(tmp_path / "notify.sock"), f"@crackkit-test-{id(tmp_path)}"):
        listener = NotifyListener(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        notifier = SystemdNotifier.from_environment()
        assert notifier.enabled and notifier.watchdog_interval == 2.0
        assert notifier.notify("READY=1", "STATUS=two\nlines")
        assert notifier.notify("WATCHDOG=1")
        threading.Event().wait(0.3)  # let the receiving thread take both datagrams
        assert listener.close() == ["READY=1\nSTATUS=two lines", "WATCHDOG=1"]


def test_watchdog_env_for_another_process_and_no_socket_do_nothing(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier.from_environment()
    assert notifier.watchdog_interval is None and not notifier.enabled
    assert notifier.notify("READY=1") is False


def test_ready_once_watchdog_while_frames_flow_none_when_stalled_then_exit_3(tmp_path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    camera = MjpegServer(crack_frame(), frames=40)
    environment = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edge", "stream", "--model", str(line_model_path()), "--source", camera.url,
             "--stall-timeout", "2", "--events", str(tmp_path / "events.jsonl")],
            cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=WAIT)
    finally:
        camera.stop()
        messages = listener.close()
    assert result.returncode == EXIT_STALLED, result.stderr
    assert "Traceback" not in result.stderr
    assert "(--stall-timeout 2): exiting with code 3" in result.stderr
    assert result.stdout.strip().endswith("stopped by stalled")

    kinds = [message.split("=", 1)[0] for message in messages]  # "READY=1\nSTATUS=..." -> READY
    assert kinds.count("READY") == 1
    ready = kinds.index("READY")
    assert "WATCHDOG" not in kinds[:ready]  # nothing before the first frame is scored
    assert "WATCHDOG" in kinds[ready:]  # pings while frames flow
    assert re.fullmatch(r"READY=1\nSTATUS=\d+\.\d fps, last p=\d\.\d{3}, .*", messages[ready])
    stalled = next(i for i, m in enumerate(messages) if m.startswith("STATUS=no frame from http://127.0.0.1:"))
    assert ready < stalled
    assert "WATCHDOG" not in kinds[stalled:]  # none while stalled: systemd would act on its own
    assert messages[-1] == "STOPPING=1"


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "RestartPreventExitStatus=2\n", "Restart=on-failure",
                 "EnvironmentFile=", "--config /etc/crackkit/crackkit.toml"):
        assert line in text
    assert text.count("RestartPreventExitStatus") == 1  # 2 only: 1 and 3 are restarted
    # verify checks that ExecStart's program exists: point it at this interpreter
    unit = tmp_path / "crack-edge.service"
    unit.write_text(text.replace("/opt/crackkit/.venv/bin/python", sys.executable))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
