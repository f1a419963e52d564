"""The live preview of `crack-edge stream --serve HOST:PORT`: a page for a phone next to the device.

Endpoints (all but ``/healthz`` need the token when ``--serve-token`` is set, as ``?token=`` or
``Authorization: Bearer``; the page passes it on to every link it makes):

  /               the page (edge/preview_page.html: no external assets, works offline on a LAN)
  /stream.mjpg    the annotated live view, MJPEG (multipart/x-mixed-replace), capped fps and quality
  /snapshot.jpg   the newest annotated frame
  /status.json    fps, last probability, temperature, model, uptime, viewers
  /events.json    the last events, newest first, paged: ?limit=N&before=SEQ (``next_before``)
  /snapshots/NAME an event's snapshot from --snapshots
  /healthz        "ok" (200) while frames are being scored, "stale" (503) otherwise; no token
                  needed and nothing revealed, for monitoring

Why the standard library's ``ThreadingHTTPServer``: it needs nothing installed on the device,
the clients are a few people and a monitor on a LAN (a thread each is fine), and an MJPEG stream
is just a response that keeps writing. A web framework would add dependencies for no gain here.
It is not meant to face the internet: put a reverse proxy with TLS in front for that.

Scoring never waits for the preview: the stream thread only hands over its newest frame and
result (``offer``, a reference swap under a lock). Drawing the overlay and encoding the JPEG
happen in the server's own encoder thread, only while someone watches (or asks for
/snapshot.jpg), at most ``max_fps`` times a second.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from edge.errors import RuntimeFailure, UserError

log = logging.getLogger("crack.edge")

PAGE = Path(__file__).with_name("preview_page.html")
DEFAULT_HOST = "127.0.0.1"
BOUNDARY = "frame"
KEEP_EVENTS = 500  # events the page can page through (this run's)
STALE_SECONDS = 30.0  # /healthz says "stale" when no frame was scored for this long
SNAPSHOT_WAIT = 5.0  # seconds /snapshot.jpg waits for a fresh encode
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.jpg$")


@dataclass(frozen=True)
class PreviewOptions:
    serve: str  # HOST:PORT, :PORT or PORT (127.0.0.1 unless a host is given)
    token: str | None = None
    max_fps: float = 5.0  # encoded frames a second, at most
    jpeg_quality: int = 70
    max_width: int = 960  # preview frames wider than this are scaled down

    def address(self) -> tuple[str, int]:
        host, _, port = self.serve.rpartition(":")
        host = host.strip("[]") or DEFAULT_HOST
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UserError(f"--serve takes HOST:PORT or PORT (e.g. 0.0.0.0:8080), not {self.serve!r}")
        return host, int(port)

    def validate(self) -> None:
        self.address()
        if self.token is not None and not self.token.strip():
            raise UserError("--serve-token must not be empty")
        if not 0 < self.max_fps <= 30:
            raise UserError("the preview frame rate must be between 0 and 30")
        if not 10 <= self.jpeg_quality <= 95:
            raise UserError("the preview JPEG quality must be between 10 and 95")


@dataclass
class _Offered:
    """What the stream thread handed over: the raw frame and its result, not yet drawn."""

    image: object  # BGR ndarray
    score: object  # edge.tiling.FrameScore
    threshold: float
    label: str
    fps: float | None
    event_open: bool
    seq: int
    at: float  # time.monotonic()


class PreviewServer:
    def __init__(self, options: PreviewOptions, snapshots: Path | None = None,
                 about: dict | None = None) -> None:
        options.validate()
        self.options = options
        self.snapshots = snapshots
        self.about = dict(about or {})  # model, source, threshold, ...: shown on the page
        self.started = time.monotonic()
        self.events: deque[dict] = deque(maxlen=KEEP_EVENTS)
        self.events_seen = 0
        self.frames_encoded = 0
        self.viewers = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a new frame offered / a new JPEG encoded
        self._offered: _Offered | None = None
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0  # the offered frame the JPEG shows
        self._snapshot_wanted = 0
        self._stopping = threading.Event()
        host, port = options.address()
        try:
            server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
            self.httpd = server_class((host, port), _handler_for(self))
        except OSError as exc:
            raise RuntimeFailure(f"--serve {options.serve}: cannot listen there ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._threads = [threading.Thread(target=self.httpd.serve_forever, name="preview-http", daemon=True),
                         threading.Thread(target=self._encode_loop, name="preview-encode", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("live preview on %s%s", self.base_url, " (token required)" if options.token else "")

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else _hostname()
        return f"http://{host}:{self.port}"

    def snapshot_url(self, name: str) -> str:
        """The absolute URL of a snapshot (for webhook and MQTT messages)."""
        url = f"{self.base_url}/snapshots/{quote(name)}"
        return url + (f"?token={quote(self.options.token)}" if self.options.token else "")

    # --- from the stream thread: cheap, never blocks on the network -------------------------------

    def offer(self, image, score, threshold: float, label: str, fps: float | None, event_open: bool) -> None:
        with self._lock:
            seq = self._offered.seq + 1 if self._offered is not None else 1
            self._offered = _Offered(image, score, threshold, label, fps, event_open, seq, time.monotonic())
            if self.viewers or self._snapshot_wanted:
                self._changed.notify_all()

    def add_event(self, record: dict) -> None:
        with self._lock:
            self.events_seen += 1
            self.events.append({"seq": self.events_seen, **record})

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the encoder thread ------------------------------------------------------------------------

    def _encode_loop(self) -> None:
        interval = 1.0 / self.options.max_fps
        next_encode = 0.0
        while not self._stopping.is_set():
            with self._lock:
                self._changed.wait_for(lambda: self._stopping.is_set() or (
                    (self.viewers or self._snapshot_wanted) and self._offered is not None
                    and self._offered.seq != self._jpeg_seq), timeout=1.0)
                offered = self._offered
                wanted = (self.viewers or self._snapshot_wanted) and offered is not None \
                    and offered.seq != self._jpeg_seq
            if self._stopping.is_set() or not wanted:
                continue
            delay = next_encode - time.monotonic()
            if delay > 0:  # the frame-rate cap; a newer frame may arrive meanwhile
                self._stopping.wait(delay)
                continue
            next_encode = time.monotonic() + interval
            try:
                jpeg = self._encode(offered)
            except Exception as exc:  # never let a drawing bug end the preview
                log.warning("preview: cannot encode frame %d: %s", offered.seq, exc)
                jpeg = None
            with self._lock:
                self._jpeg_seq = offered.seq
                if jpeg is not None:
                    self._jpeg = jpeg
                    self.frames_encoded += 1
                self._changed.notify_all()

    def _encode(self, offered: _Offered) -> bytes | None:
        import cv2

        from edge.overlay import draw_overlay

        canvas = draw_overlay(offered.image, offered.score, offered.threshold, offered.label,
                              offered.fps, offered.event_open)
        height, width = canvas.shape[:2]
        if width > self.options.max_width:
            size = (self.options.max_width, max(1, round(height * self.options.max_width / width)))
            canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
        ok, buffer = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
        return buffer.tobytes() if ok else None

    # --- for the handlers --------------------------------------------------------------------------

    def next_jpeg(self, after_seq: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG once it shows a frame after ``after_seq`` (or what there is at timeout)."""
        with self._lock:
            self._changed.wait_for(lambda: self._stopping.is_set() or (
                self._jpeg is not None and self._jpeg_seq != after_seq), timeout)
            return self._jpeg, self._jpeg_seq

    def fresh_snapshot(self) -> bytes | None:
        with self._lock:
            if self._offered is None:
                return None
            if self._jpeg is not None and self._jpeg_seq == self._offered.seq:
                return self._jpeg
            self._snapshot_wanted += 1
            self._changed.notify_all()
            current = self._jpeg_seq
        try:
            jpeg, _ = self.next_jpeg(current, SNAPSHOT_WAIT)
            return jpeg
        finally:
            with self._lock:
                self._snapshot_wanted -= 1

    def watching(self, delta: int) -> None:
        with self._lock:
            self.viewers += delta
            self._changed.notify_all()

    def status(self) -> dict:
        from edge.health import temperature_c

        with self._lock:
            offered = self._offered
            viewers, encoded, events = self.viewers, self.frames_encoded, self.events_seen
        now = time.monotonic()
        return {
            **self.about,
            "uptime_s": round(now - self.started, 1),
            "frames": offered.seq if offered else 0,
            "fps": round(offered.fps, 2) if offered and offered.fps else None,
            "probability": round(float(offered.score.probability), 4) if offered else None,
            "label": offered.label if offered else None,
            "event_open": offered.event_open if offered else False,
            "last_frame_age_s": round(now - offered.at, 1) if offered else None,
            "events": events,
            "temperature_c": temperature_c(),
            "viewers": viewers,
            "preview": {"max_fps": self.options.max_fps, "jpeg_quality": self.options.jpeg_quality,
                        "frames_encoded": encoded},
        }

    def healthy(self) -> bool:
        with self._lock:
            offered = self._offered
        return offered is not None and time.monotonic() - offered.at < STALE_SECONDS

    def events_page(self, limit: int, before: int | None) -> dict:
        with self._lock:
            newest_first = [event for event in reversed(self.events) if before is None or event["seq"] < before]
        page = [dict(event) for event in newest_first[:limit]]
        for event in page:
            if event.get("snapshot"):
                event["snapshot_url"] = f"/snapshots/{quote(event['snapshot'])}"
        more = len(newest_first) > limit
        return {"events": page, "next_before": page[-1]["seq"] if page and more else None}

    def authorised(self, query: dict, headers) -> bool:
        token = self.options.token
        if token is None:
            return True
        given = (query.get("token") or [""])[0]
        bearer = headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = given or bearer[len("Bearer "):].strip()
        return hmac.compare_digest(given.encode(), token.encode())


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _hostname() -> str:
    return socket.gethostname()


def _handler_for(server: PreviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "crack-edge"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/healthz":
                healthy = server.healthy()
                return self._send(200 if healthy else 503, b"ok\n" if healthy else b"stale\n", "text/plain")
            if not server.authorised(query, self.headers):
                return self._send(401, b"token required: open this page with ?token=YOUR_TOKEN\n", "text/plain",
                                  {"WWW-Authenticate": 'Bearer realm="crack-edge"'})
            if url.path in ("/", "/index.html"):
                return self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            if url.path == "/status.json":
                return self._json(server.status())
            if url.path == "/events.json":
                try:
                    limit = min(100, max(1, int((query.get("limit") or ["20"])[0])))
                    before = int(query["before"][0]) if "before" in query else None
                except ValueError:
                    return self._send(400, b"limit and before are numbers\n", "text/plain")
                return self._json(server.events_page(limit, before))
            if url.path == "/snapshot.jpg":
                jpeg = server.fresh_snapshot()
                if jpeg is None:
                    return self._send(503, b"no frame yet\n", "text/plain")
                return self._send(200, jpeg, "image/jpeg")
            if url.path == "/stream.mjpg":
                return self._stream()
            if url.path.startswith("/snapshots/"):
                return self._snapshot_file(url.path[len("/snapshots/"):])
            return self._send(404, b"not found\n", "text/plain")

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            server.watching(+1)
            sent = 0
            try:
                while not server._stopping.is_set():
                    jpeg, seq = server.next_jpeg(sent, timeout=0.5)
                    if jpeg is None or seq == sent:
                        if self._viewer_gone():  # stop counting it, so encoding stops too
                            break
                        continue
                    sent = seq
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()
            except OSError:  # the viewer went away
                pass
            finally:
                server.watching(-1)

        def _viewer_gone(self) -> bool:
            """True when the viewer closed the connection (it sends nothing while it watches)."""
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _snapshot_file(self, name: str) -> None:
            from urllib.parse import unquote

            name = unquote(name)
            path = server.snapshots / name if server.snapshots is not None and SNAPSHOT_NAME.match(name) else None
            if path is None or not path.is_file():
                return self._send(404, b"no such snapshot\n", "text/plain")
            return self._send(200, path.read_bytes(), "image/jpeg", cache="max-age=86400")

        def _json(self, data: dict) -> None:
            self._send(200, json.dumps(data).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None,
                  cache: str = "no-store") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", cache)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # requests are not logged: the journal stays quiet
            pass

    return Handler
