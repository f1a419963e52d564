"""Event delivery: a webhook receiver that fails for a while and then comes back, a process restart
with events still in the outbox, and a real Mosquitto broker stopped and started again mid-run.
Each test counts every event exactly once at the receiver (by the record's ``id``)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.errors import UserError
from outside_programs import WAIT, free_port, installed_program, wait_for
from edge.event_sinks import EventSinks, MqttTarget, SinkOptions

FAST_RETRY = {"retry_initial": 0.02, "retry_max": 0.1}


def event(number: int, **extra) -> dict:
    return {"id": f"20250101T000000Z-abc123-{number:04d}-start", "event": "crack_start",
            "event_id": number, **extra}


class Receiver:
    """A webhook receiver on 127.0.0.1: answers ``fail_status`` to the first ``failures``
    requests, then 200 (or ``reject_ids``' 400); keeps every accepted body and request headers."""

    def __init__(self, failures: int = 0, fail_status: int = 503, reject_ids: tuple[str, ...] = ()) -> None:
        self.failures_left = failures
        self.requests = 0
        self.accepted: list[dict] = []
        self.headers: list[dict] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    receiver.requests += 1
                    receiver.headers.append(dict(self.headers))
                    if receiver.failures_left > 0:
                        receiver.failures_left -= 1
                        status = fail_status
                    elif body["id"] in reject_ids:
                        status = 400
                    else:
                        receiver.accepted.append(body)
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, login: str = "") -> str:
        return f"http://{login}127.0.0.1:{self.port}/hook"

    def ids(self) -> Counter:
        return Counter(body["id"] for body in self.accepted)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_that_fails_for_a_while_gets_every_event_once_in_order(tmp_path, caplog):
    receiver = Receiver(failures=7)
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    (snaps / "event_0001_frame_000005.jpg").write_bytes(b"\xff\xd8 a jpeg \xff\xd9")
    options = SinkOptions(webhook=receiver.url("inspector:s3cret@"), webhook_snapshots=True,
                          outbox=tmp_path / "outbox.sqlite3", **FAST_RETRY)
    with caplog.at_level(logging.INFO, logger="crack.edge"):
        sinks = EventSinks(options, snapshots=snaps, snapshot_url=lambda name: f"http://device:8080/snapshots/{name}")
        sinks.publish(event(1, snapshot="event_0001_frame_000005.jpg"))
        for number in range(2, 21):
            sinks.publish(event(number))
        wait_for(lambda: len(receiver.accepted) >= 20, "20 events at the receiver")
        sinks.close()
    receiver.close()

    assert receiver.requests == 20 + 7  # 7 refused with 503, then each once
    assert set(receiver.ids().values()) == {1} and len(receiver.ids()) == 20
    assert [body["event_id"] for body in receiver.accepted] == list(range(1, 21))
    first = receiver.accepted[0]
    assert base64.b64decode(first["snapshot_jpeg_base64"]) == b"\xff\xd8 a jpeg \xff\xd9"
    assert first["snapshot_url"] == "http://device:8080/snapshots/event_0001_frame_000005.jpg"
    assert "snapshot_url" not in receiver.accepted[1]
    assert receiver.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"inspector:s3cret").decode()
    log_text = "\n".join(record.getMessage() for record in caplog.records)
    assert "HTTP 503" in log_text and "retrying" in log_text
    assert "s3cret" not in log_text and "inspector" not in log_text and "***@127.0.0.1" in log_text


def test_events_queued_while_the_receiver_is_down_are_delivered_after_a_restart(tmp_path):
    outbox = tmp_path / "outbox.sqlite3"
    with socket.socket() as placeholder:  # a port nobody listens on: connection refused
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    down = EventSinks(SinkOptions(webhook=f"http://127.0.0.1:{dead_port}/hook", outbox=outbox, **FAST_RETRY))
    for number in range(1, 6):
        down.publish(event(number))
    wait_for(lambda: down.threads[0].failures >= 2, "a few failed attempts")
    down.close(grace=0)
    assert down.outbox.path == outbox

    receiver = Receiver()
    up = EventSinks(SinkOptions(webhook=receiver.url(), outbox=outbox, **FAST_RETRY))
    up.publish(event(6))
    wait_for(lambda: len(receiver.accepted) >= 6, "the queued events and the new one")
    up.close()
    receiver.close()
    assert [body["event_id"] for body in receiver.accepted] == [1, 2, 3, 4, 5, 6]


def test_a_record_the_receiver_refuses_for_good_is_skipped_not_retried_forever(tmp_path, caplog):
    receiver = Receiver(reject_ids=(event(2)["id"],))
    sinks = EventSinks(SinkOptions(webhook=receiver.url(), outbox=tmp_path / "o.sqlite3", **FAST_RETRY))
    with caplog.at_level(logging.ERROR, logger="crack.edge"):
        for number in (1, 2, 3):
            sinks.publish(event(number))
        wait_for(lambda: len(receiver.accepted) >= 2, "events 1 and 3")
        sinks.close()
    receiver.close()
    assert [body["event_id"] for body in receiver.accepted] == [1, 3]
    assert receiver.requests == 3 and sinks.threads[0].rejected == 1
    assert any("refused event" in record.getMessage() and event(2)["id"] in record.getMessage()
               for record in caplog.records)


def test_option_errors_are_user_errors_that_name_the_option_and_hide_the_password(monkeypatch):
    with pytest.raises(UserError, match="--webhook must be an http"):
        SinkOptions(webhook="ftp://user:pw@host/x").validate()
    with pytest.raises(UserError) as bad_mqtt:
        SinkOptions(mqtt="http://user:hunter2@broker/topic").validate()
    assert "--mqtt" in str(bad_mqtt.value) and "hunter2" not in str(bad_mqtt.value)
    with pytest.raises(UserError, match="--webhook-snapshots needs --webhook"):
        SinkOptions(webhook_snapshots=True, mqtt="mqtt://broker/t").validate()
    with pytest.raises(UserError, match="wildcard"):
        SinkOptions(mqtt="mqtt://broker/site/#").validate()
    target = MqttTarget.parse("mqtts://dev:pa%40ss@broker.example:8884/bridge/7/events")
    assert (target.host, target.port, target.topic, target.tls, target.username, target.password) == \
        ("broker.example", 8884, "bridge/7/events", True, "dev", "pa@ss")
    assert MqttTarget.parse("mqtt://10.0.0.2").port == 1883
    assert MqttTarget.parse("mqtt://10.0.0.2").topic == "crackkit/events"

    monkeypatch.setitem(__import__("sys").modules, "paho.mqtt.client", None)  # paho not installed
    with pytest.raises(UserError, match=r"--mqtt needs paho-mqtt.*pip install"):
        SinkOptions(mqtt="mqtt://127.0.0.1:1883/events").validate()


# --- a real Mosquitto broker ---------------------------------------------------------------------


def mosquitto_binary() -> str:
    """The broker (Debian's mosquitto is in /usr/sbin), or skip; with CI=true a missing one fails."""
    found = installed_program(("mosquitto",), "mosquitto", also=("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"))
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install '.[mqtt]')")
    return found


class Broker:
    """Mosquitto on 127.0.0.1 with persistence on, so that a subscriber's session and its queued
    QoS 1 messages survive a restart of the broker."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.port = binary, free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nautosave_interval 1\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT
        while True:
            assert self.process.poll() is None, f"mosquitto exited: {self.log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start listening"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.process.wait(WAIT)


class Subscriber:
    """A subscriber with a persistent session (clean_session=False, fixed client id, QoS 1):
    the broker keeps its messages while it is away, and across a broker restart."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[dict] = []
        self.connects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crack-edge-test-office",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, _userdata, _flags, _reason, _properties) -> None:
            self.connects += 1
            client.subscribe(topic, qos=1)

        def on_message(_client, _userdata, message) -> None:
            self.received.append(json.loads(message.payload))

        self.client.on_connect, self.client.on_message = on_connect, on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def ids(self) -> Counter:
        return Counter(body["id"] for body in self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
def test_mqtt_every_event_arrives_across_a_broker_restart(tmp_path):
    broker = Broker(mosquitto_binary(), tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, "site/bridge7/events")
    sinks = None
    try:
        wait_for(lambda: subscriber.connects >= 1 and subscriber.client.is_connected(), "the subscriber")
        sinks = EventSinks(SinkOptions(mqtt=f"mqtt://127.0.0.1:{broker.port}/site/bridge7/events",
                                       outbox=tmp_path / "outbox.sqlite3", **FAST_RETRY))
        for number in range(1, 11):
            sinks.publish(event(number))
        wait_for(lambda: len(subscriber.ids()) >= 10, "the first 10 events")

        broker.stop()
        for number in range(11, 21):  # published while the broker is down: they wait in the outbox
            sinks.publish(event(number))
        wait_for(lambda: sinks.threads[0].failures >= 1, "a failed attempt while the broker is down")
        assert sinks.outbox.backlog("mqtt") >= 1
        broker.start()

        for number in range(21, 31):
            sinks.publish(event(number))
        wait_for(lambda: len(subscriber.ids()) >= 30, "all 30 events after the restart")
        wait_for(lambda: sinks.outbox.backlog("mqtt") == 0, "every event acknowledged by the broker")
    finally:
        if sinks is not None:
            sinks.close()
        subscriber.close()
        broker.stop()
    ids = subscriber.ids()
    # QoS 1 is at least once: a repeat is allowed and dropped by id here, a loss is not
    assert sorted(ids) == sorted(event(number)["id"] for number in range(1, 31))
    assert subscriber.connects >= 2  # it really was cut off and came back
    first_seen = list(dict.fromkeys(body["event_id"] for body in subscriber.received))
    assert first_seen == list(range(1, 31))  # in order


# --- through the real `crack-edge stream` --------------------------------------------------------


def level_video(path: Path, levels: list[int]) -> Path:
    """A 64x64 video of flat frames: dark ones are cracks to the darkness model of ``edge_models``."""
    import numpy as np

    from edge_models import write_video

    return write_video(path, [np.full((64, 64, 3), level, np.uint8) for level in levels])


def crack_edge(*args: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=120)


def test_stream_events_wait_in_the_outbox_while_the_webhook_is_down_and_arrive_once_after_a_restart(
        edge_models, tmp_path):
    bright, dark = 220, 20
    video = level_video(tmp_path / "two_cracks.avi", [bright] * 6 + [dark] * 6 + [bright] * 6 + [dark] * 6 + [bright] * 6)
    quiet = level_video(tmp_path / "quiet.avi", [bright] * 6)
    events, snaps, outbox = tmp_path / "events.jsonl", tmp_path / "snaps", tmp_path / "outbox.sqlite3"
    dead_port = free_port()
    first = crack_edge("stream", "--model", str(edge_models["int8"]), "--source", str(video), "--min-frames", "3",
                       "--events", str(events), "--snapshots", str(snaps), "--outbox", str(outbox),
                       "--webhook", f"http://office:pw@127.0.0.1:{dead_port}/hook", "--webhook-snapshots")
    assert first.returncode == 0, first.stderr
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["event"] for r in written] == ["crack_start", "crack_end"] * 2
    assert "4 waiting in the outbox" in first.stderr
    assert "pw@" not in first.stderr + first.stdout and "***@127.0.0.1" in first.stderr

    receiver = Receiver()
    try:
        second = crack_edge("stream", "--model", str(edge_models["int8"]), "--source", str(quiet),
                            "--events", str(events), "--snapshots", str(snaps), "--outbox", str(outbox),
                            "--webhook", receiver.url("office:pw@"), "--webhook-snapshots")
    finally:
        receiver.close()
    assert second.returncode == 0, second.stderr
    assert [body["id"] for body in receiver.accepted] == [r["id"] for r in written]  # once each, in order
    start = receiver.accepted[0]
    assert start["snapshot"] == written[0]["snapshot"]
    assert base64.b64decode(start["snapshot_jpeg_base64"]) == (snaps / start["snapshot"]).read_bytes()


def test_stream_with_mqtt_but_no_paho_is_a_one_line_usage_error(edge_models, tmp_path):
    import sys

    blocker = tmp_path / "no_paho"
    (blocker / "paho").mkdir(parents=True)
    (blocker / "paho" / "__init__.py").write_text("raise ImportError('paho-mqtt is not installed')\n")
    result = subprocess.run(
        [sys.executable, "-m", "edge", "stream", "--model", str(edge_models["int8"]), "--source", "0",
         "--mqtt", "mqtt://user:pw@127.0.0.1:1883/cracks"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(blocker)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --mqtt needs paho-mqtt, which is not installed: pip install 'crackkit[mqtt]' (or pip install paho-mqtt)"]
