"""`crack-edge stream --serve` opened in headless Chromium: the live image updates, an event shows
up with its snapshot, and the token is enforced. The screenshot is kept in
benchmarks/results/preview.png (the README shows it)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PROJECT
from outside_programs import WAIT, free_port, installed_program, wait_for

TOKEN = "bridge-7-token"
SCREENSHOT = PROJECT / "benchmarks" / "results" / "preview.png"


def chromium() -> str:
    return installed_program(("chromium", "chromium-browser"), "chromium")


class Camera:
    """An IP camera on 127.0.0.1: MJPEG frames at about 15 fps, bright (clear) and dark (a crack
    to the darkness model) in turns of 20 frames, until closed."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                number = 0
                try:
                    while not camera.stopping.is_set():
                        level = 220 if (number // 20) % 2 == 0 else 20
                        frame = np.full((240, 320, 3), level, np.uint8)
                        cv2.putText(frame, f"{number}", (20, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (128, 128, 128), 3)
                        jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        number += 1
                        camera.stopping.wait(1 / 15)  # a camera's pace, not a measurement
                except OSError:
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def headless(browser: str, profile: Path, *args: str) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--window-size=1100,650", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT).stdout


@pytest.mark.integration
def test_preview_page_in_chromium_shows_live_frames_events_with_snapshots_and_needs_the_token(
        edge_models, tmp_path):
    browser = chromium()
    camera = Camera()
    port = free_port()
    events, snaps = tmp_path / "events.jsonl", tmp_path / "snaps"
    stream = subprocess.Popen(
        [sys.executable, "-m", "edge", "stream", "--model", str(edge_models["int8"]), "--source", camera.url,
         "--min-frames", "3", "--events", str(events), "--snapshots", str(snaps),
         "--serve", f"127.0.0.1:{port}", "--serve-token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def started_with_snapshot() -> bool:
            assert stream.poll() is None, stream.communicate()[1]
            return events.exists() and any('"snapshot"' in line for line in events.read_text().splitlines())

        wait_for(started_with_snapshot, "a crack event with its snapshot")

        refused = headless(browser, tmp_path / "profile-a", "--dump-dom", f"{base}/")
        assert "token required" in refused and 'id="frames"' not in refused

        page = f"{base}/?token={TOKEN}"
        dom = headless(browser, tmp_path / "profile-b", "--virtual-time-budget=6000", "--dump-dom", page)
        frames = re.search(r'<span id="frames">(\d+)</span>', dom)
        assert frames is not None and int(frames.group(1)) >= 3, dom[-2000:]  # the image updates
        first = json.loads(events.read_text().splitlines()[0])
        item = re.search(r'<li data-id="([^"]+)"[^>]*><img [^>]*src="([^"]+)"[^>]*data-loaded="1"', dom)
        assert item is not None, dom[-3000:]  # an event with its snapshot, loaded
        assert item.group(1).startswith(first["id"].rsplit("-", 2)[0])  # this run's events
        assert f"token={TOKEN}" in item.group(2)  # links carry the token

        headless(browser, tmp_path / "profile-c", "--virtual-time-budget=4000", f"--screenshot={tmp_path / 'shot.png'}", page)
        assert (tmp_path / "shot.png").stat().st_size > 10_000
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "shot.png", SCREENSHOT)

        with urllib.request.urlopen(f"{base}/status.json?token={TOKEN}", timeout=WAIT) as response:
            status = json.load(response)
        assert status["model"] == edge_models["int8"].name and status["frames"] > 0
    finally:
        stream.send_signal(signal.SIGTERM)
        _, stderr = stream.communicate(timeout=WAIT)
        camera.close()
    assert stream.returncode == 0, stderr
    assert "Traceback" not in stderr
