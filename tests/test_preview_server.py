"""The live preview server in-process with synthetic frames: every endpoint, the token, paging,
the MJPEG stream, and no encoding while nobody watches."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge.errors import UserError
from edge.preview_server import PreviewOptions, PreviewServer
from edge.tiling import Box, FrameScore, TileScore
from outside_programs import WAIT, wait_for

TOKEN = "s3cret-token"


def offer(server: PreviewServer, number: int) -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    cv2.putText(image, str(number), (10, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
    score = FrameScore(0.8, [TileScore(Box(0, 0, 80, 60), 0.8), TileScore(Box(80, 0, 160, 60), 0.1)])
    server.offer(image, score, 0.5, "crack", 12.5, True)


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.fixture
def server(tmp_path):
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    cv2.imwrite(str(snaps / "event_0001_frame_000004.jpg"), np.zeros((40, 40, 3), np.uint8))
    server = PreviewServer(PreviewOptions("127.0.0.1:0", token=TOKEN, max_fps=20), snaps,
                           {"model": "model_int8.tflite", "source": "video.avi", "threshold": 0.5})
    yield server
    server.close()


def test_every_endpoint_needs_the_token_except_healthz(server):
    base = f"http://127.0.0.1:{server.port}"
    assert get(f"{base}/healthz")[0] == 503  # no frame scored yet: stale
    offer(server, 1)
    assert get(f"{base}/healthz")[:2] == (200, b"ok\n")
    for path in ("/", "/status.json", "/events.json", "/snapshot.jpg", "/stream.mjpg",
                 "/snapshots/event_0001_frame_000004.jpg"):
        status, body, _ = get(base + path)
        assert status == 401 and b"token required" in body, path
        assert get(f"{base}{path}?token=wrong")[0] == 401, path
    status, page, kind = get(f"{base}/?token={TOKEN}")
    assert status == 200 and kind.startswith("text/html") and b"<img id=\"view\"" in page
    assert b"http://" not in page and b"https://" not in page  # no external assets
    status, _, kind = get(f"{base}/status.json", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and kind == "application/json"


def test_status_snapshot_and_snapshot_files(server):
    base = f"http://127.0.0.1:{server.port}"
    offer(server, 1)
    status = json.loads(get(f"{base}/status.json?token={TOKEN}")[1])
    assert status["model"] == "model_int8.tflite" and status["source"] == "video.avi"
    assert status["frames"] == 1 and status["fps"] == 12.5 and status["probability"] == 0.8
    assert status["label"] == "crack" and status["event_open"] is True and status["viewers"] == 0
    assert status["uptime_s"] >= 0 and "temperature_c" in status
    code, jpeg, kind = get(f"{base}/snapshot.jpg?token={TOKEN}")
    assert code == 200 and kind == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (120, 160, 3)
    assert image[30, 40, 2] > image[30, 40, 0] + 40  # the crack tile's red heat map is drawn
    code, body, _ = get(f"{base}/snapshots/event_0001_frame_000004.jpg?token={TOKEN}")
    assert code == 200 and body[:2] == b"\xff\xd8"
    assert get(f"{base}/snapshots/..%2Fsecret.jpg?token={TOKEN}")[0] == 404
    assert get(f"{base}/snapshots/missing.jpg?token={TOKEN}")[0] == 404


def test_events_are_newest_first_and_paged(server):
    base = f"http://127.0.0.1:{server.port}"
    for number in range(1, 8):
        server.add_event({"id": f"run-{number:04d}-start", "event": "crack_start", "event_id": number,
                          "snapshot": f"event_{number:04d}_frame_000004.jpg"})
    first = json.loads(get(f"{base}/events.json?limit=3&token={TOKEN}")[1])
    assert [e["event_id"] for e in first["events"]] == [7, 6, 5]
    assert first["events"][0]["snapshot_url"] == "/snapshots/event_0007_frame_000004.jpg"
    second = json.loads(get(f"{base}/events.json?limit=3&before={first['next_before']}&token={TOKEN}")[1])
    assert [e["event_id"] for e in second["events"]] == [4, 3, 2]
    last = json.loads(get(f"{base}/events.json?limit=3&before={second['next_before']}&token={TOKEN}")[1])
    assert [e["event_id"] for e in last["events"]] == [1] and last["next_before"] is None
    assert get(f"{base}/events.json?limit=x&token={TOKEN}")[0] == 400


def read_parts(response, count: int) -> list[bytes]:
    """``count`` JPEGs from a multipart/x-mixed-replace response."""
    parts = []
    while len(parts) < count:
        line = response.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            response.readline()  # the blank line after the part's headers
            parts.append(response.read(length))
    return parts


def test_mjpeg_streams_new_frames_and_encodes_only_while_watched(server):
    for number in range(1, 20):  # nobody watches: nothing is encoded
        offer(server, number)
    time.sleep(0.3)  # give a (wrong) encoder the chance to run; the assertion below must hold anyway
    assert server.frames_encoded == 0

    url = f"http://127.0.0.1:{server.port}/stream.mjpg?token={TOKEN}"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        wait_for(lambda: server.viewers == 1, "the viewer to be counted")
        number = 20
        parts = []
        while len(parts) < 3:
            offer(server, number)
            number += 1
            parts += read_parts(response, 1)
        assert len(set(parts)) == 3  # three different frames
        assert all(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) is not None for p in parts)
    wait_for(lambda: server.viewers == 0, "the viewer to leave")
    encoded = server.frames_encoded
    for more in range(5):
        offer(server, 100 + more)
    time.sleep(0.3)
    assert server.frames_encoded == encoded


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="--serve takes HOST:PORT"):
        PreviewOptions("localhost").validate()
    with pytest.raises(UserError, match="--serve takes"):
        PreviewOptions("127.0.0.1:99999").validate()
    with pytest.raises(UserError, match="--serve-token must not be empty"):
        PreviewOptions("8080", token=" ").validate()
    assert PreviewOptions("8080").address() == ("127.0.0.1", 8080)
    assert PreviewOptions("0.0.0.0:8080").address() == ("0.0.0.0", 8080)
    assert PreviewOptions("[::1]:8080").address() == ("::1", 8080)
