"""Event delivery from the device: a webhook and an MQTT broker, fed through the on-disk outbox.

``EventSinks.publish(record)`` (called by the stream for every event record) appends the record
to the outbox (``edge.outbox``) and returns at once; one delivery thread per sink reads the outbox
in order and moves on only when the receiver has acknowledged the record:

- ``--webhook URL``: HTTP POST of the record as JSON; acknowledged by any 2xx answer. A 400, 413
  or 422 means the receiver refuses this record for good: it is logged and skipped, so one bad
  record cannot hold up the rest. Any other answer, a timeout or a refused connection is retried.
  ``user:password@`` in the URL is sent as HTTP basic authentication.
- ``--mqtt mqtt://[user:password@]HOST[:PORT]/TOPIC`` (``mqtts://`` for TLS): the record as JSON,
  published with QoS 1 through paho-mqtt (the optional extra ``pip install ".[mqtt]"``);
  acknowledged by the broker's PUBACK. A message in flight when the connection drops is resent by
  paho on reconnect, not published a second time by us.

Failed attempts wait with exponential backoff and full jitter (``retry_initial`` doubling up to
``retry_max``). Delivery is at least once: a record whose acknowledgement was lost in a crash is
delivered again after the restart, with the same ``id``, so receivers drop repeats by ``id``.

The snapshot of a ``crack_start`` travels as ``snapshot_url`` (a link to the preview server, with
``--serve``) and, with ``--webhook-snapshots``, inline as ``snapshot_jpeg_base64`` in the webhook
body. Every log line masks credentials in URLs (``edge.secrets.mask_urls``).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from edge.errors import RuntimeFailure, UserError, first_line
from edge.outbox import DEFAULT_OUTBOX_MB, MB, OUTBOX_FILENAME, Outbox, OutboxRecord
from edge.secrets import mask_urls
from edge.sources import Backoff

log = logging.getLogger("crack.edge")

HTTP_TIMEOUT = 10.0  # seconds for one webhook POST
STOP_WAIT = 2.0  # seconds a delivery thread gets to finish its attempt at shutdown
PUBACK_TIMEOUT = 10.0  # seconds to wait for the broker's acknowledgement before backing off
MAX_UNQUEUED = 100  # event records kept in memory while the outbox cannot be written
REJECTED_FOR_GOOD = (400, 413, 422)  # the receiver will never take this record: skip it
DEFAULT_MQTT_TOPIC = "crackkit/events"


class DeliveryFailed(Exception):
    """This attempt failed; the record stays in the outbox and is tried again after a backoff."""


class DeliveryRejected(Exception):
    """The receiver refuses this record for good; it is logged and skipped."""


@dataclass(frozen=True)
class SinkOptions:
    webhook: str | None = None
    webhook_snapshots: bool = False  # inline the snapshot JPEG (base64) in the webhook body
    mqtt: str | None = None
    outbox: Path | None = None  # the outbox file; None: beside the events file, else the working directory
    outbox_mb: float = DEFAULT_OUTBOX_MB
    retry_initial: float = 1.0  # seconds before the first retry; doubles, with jitter...
    retry_max: float = 60.0  # ...up to this

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or self.mqtt)

    def validate(self) -> None:
        if self.webhook is not None:
            parts = urlsplit(self.webhook)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(f"--webhook must be an http:// or https:// URL, not {mask_urls(self.webhook)!r}")
        if self.mqtt is not None:
            MqttTarget.parse(self.mqtt)
            try:
                import paho.mqtt.client  # noqa: F401
            except ImportError:
                raise UserError("--mqtt needs paho-mqtt, which is not installed: "
                                "pip install 'crackkit[mqtt]' (or pip install paho-mqtt)") from None
        if self.webhook_snapshots and self.webhook is None:
            raise UserError("--webhook-snapshots needs --webhook")
        if self.outbox_mb <= 0:
            raise UserError("--outbox-mb must be positive")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise UserError("the retry delays need 0 < initial <= maximum")

    def outbox_path(self, events: Path | None) -> Path:
        if self.outbox is not None:
            return self.outbox
        if events is not None:
            return events.with_name(f"{events.name}.{OUTBOX_FILENAME}")
        return Path(OUTBOX_FILENAME)


# --- the sinks: one attempt at one record ----------------------------------------------------------


class Webhook:
    name = "webhook"

    def __init__(self, url: str, inline_snapshots: bool = False) -> None:
        parts = urlsplit(url)
        self.shown = mask_urls(url)
        self._headers = {"Content-Type": "application/json", "User-Agent": "crack-edge"}
        if parts.username is not None:
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            parts = parts._replace(netloc=netloc)
        self.url = urlunsplit(parts)
        self.inline_snapshots = inline_snapshots

    def body(self, item: OutboxRecord, snapshot_url: str | None) -> bytes:
        record = dict(item.record)
        if snapshot_url is not None:
            record["snapshot_url"] = snapshot_url
        if self.inline_snapshots and item.snapshot is not None:
            try:
                record["snapshot_jpeg_base64"] = base64.b64encode(item.snapshot.read_bytes()).decode()
            except OSError as exc:
                log.warning("webhook: snapshot %s of event %s cannot be read (%s); sent without it",
                            item.snapshot.name, item.id, first_line(exc))
        return json.dumps(record).encode()

    def send(self, item: OutboxRecord, snapshot_url: str | None, stop: threading.Event) -> None:
        request = urllib.request.Request(self.url, data=self.body(item, snapshot_url),
                                         headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in REJECTED_FOR_GOOD:
                raise DeliveryRejected(f"HTTP {exc.code} {exc.reason}") from None
            raise DeliveryFailed(f"HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:  # refused, timed out, reset, DNS, bad TLS
            raise DeliveryFailed(first_line(exc)) from None

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> "MqttTarget":
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UserError(f"--mqtt must look like mqtt://HOST:PORT/TOPIC, not {mask_urls(url)!r}")
        try:
            port = parts.port
        except ValueError:
            raise UserError(f"--mqtt has a bad port: {mask_urls(url)!r}") from None
        tls = parts.scheme == "mqtts"
        topic = unquote(parts.path.lstrip("/")) or DEFAULT_MQTT_TOPIC
        if "+" in topic or "#" in url:  # urlsplit takes '#' for a fragment
            raise UserError(f"--mqtt topic {topic!r} contains a wildcard; a publish topic cannot")
        return cls(parts.hostname, port or (8883 if tls else 1883), topic, tls,
                   unquote(parts.username) if parts.username is not None else None,
                   unquote(parts.password) if parts.password is not None else None)


class MqttPublisher:
    name = "mqtt"

    def __init__(self, url: str, puback_timeout: float = PUBACK_TIMEOUT) -> None:
        import paho.mqtt.client as mqtt

        self.target = MqttTarget.parse(url)
        self.shown = mask_urls(url)
        self.puback_timeout = puback_timeout
        # a clean session with a generated client id: what is in flight is resent by paho on
        # reconnect, and what is not yet acknowledged stays in the outbox
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if self.target.username is not None:
            self.client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()  # paho's network thread connects, and reconnects after a drop
        self._in_flight: tuple[int, object] | None = None  # (outbox seq, paho MQTTMessageInfo)

    def send(self, item: OutboxRecord, snapshot_url: str | None, stop: threading.Event) -> None:
        info = self._in_flight[1] if self._in_flight and self._in_flight[0] == item.seq else None
        if info is None:
            if not self.client.is_connected():
                raise DeliveryFailed(f"not connected to {self.target.host}:{self.target.port}")
            record = dict(item.record)
            if snapshot_url is not None:
                record["snapshot_url"] = snapshot_url
            info = self.client.publish(self.target.topic, json.dumps(record), qos=1)
            if info.rc != 0:
                raise DeliveryFailed(f"publish failed (paho code {info.rc})")
            self._in_flight = (item.seq, info)
        deadline = time.monotonic() + self.puback_timeout
        while not info.is_published():
            if time.monotonic() > deadline:
                raise DeliveryFailed("no PUBACK from the broker yet")
            if stop.wait(0.02):
                raise DeliveryFailed("stopped before the broker's PUBACK")
        self._in_flight = None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- one delivery thread per sink ----------------------------------------------------------------


def jittered(delays: Backoff):
    """Exponential backoff with full jitter: each wait is uniform between 0 and the next step."""
    for delay in delays.delays():
        yield random.uniform(0, delay)


class DeliveryThread:
    """Delivers ``sink``'s backlog from the outbox in order, retrying with backoff."""

    def __init__(self, outbox: Outbox, sink, backoff: Backoff,
                 snapshot_url: Callable[[str], str] | None = None) -> None:
        self.outbox = outbox
        self.sink = sink
        self.backoff = backoff
        self.snapshot_url = snapshot_url
        self.delivered = 0
        self.rejected = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"deliver-{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        waits = jittered(self.backoff)
        while not self._stop.is_set():
            item = self.outbox.next_for(self.sink.name)
            if item is None:
                self.outbox.wait_for(self.sink.name, timeout=0.5)
                continue
            name = item.record.get("snapshot")
            url = self.snapshot_url(name) if self.snapshot_url is not None and name else None
            try:
                self.sink.send(item, url, self._stop)
            except DeliveryRejected as exc:
                self.rejected += 1
                log.error("%s %s refused event %s for good (%s); skipped", self.sink.name, self.sink.shown,
                          item.id, exc)
            except Exception as exc:  # DeliveryFailed, or a bug: the thread must not die
                self.failures += 1
                wait = next(waits)
                log.warning("%s %s: event %s not delivered (%s); retrying in %.1f s", self.sink.name,
                            self.sink.shown, item.id, mask_urls(str(exc) if isinstance(exc, DeliveryFailed)
                                                                else first_line(exc)), wait)
                self._stop.wait(wait)
                continue
            else:
                self.delivered += 1
            self.outbox.ack(self.sink.name, item.seq)
            waits = jittered(self.backoff)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backlog to be delivered; True if it was."""
        deadline = time.monotonic() + timeout
        while self.outbox.backlog(self.sink.name) > 0:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> bool:
        """Stop; False if the thread is still inside a send (a webhook POST waits up to
        HTTP_TIMEOUT): it is a daemon thread and ends with the process."""
        self._stop.set()
        self._thread.join(STOP_WAIT)
        self.sink.close()
        return not self._thread.is_alive()


def open_outbox(path: Path, sinks: list[str], max_bytes: int) -> Outbox:
    """The outbox at ``path``; a file that is not a usable outbox (damaged by a bad SD card) is
    moved aside as ``PATH.damaged-TIME`` and a new one started, so the device keeps reporting."""
    try:
        return Outbox(path, sinks, max_bytes)
    except (OSError, sqlite3.OperationalError) as exc:  # cannot open or create it; locked
        raise RuntimeFailure(f"cannot open the outbox {path}: {first_line(exc)}") from None
    except sqlite3.DatabaseError as exc:  # not a database, malformed
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        log.error("outbox %s is damaged (%s): moved to %s, starting a new one", path, first_line(exc), aside)
        try:
            path.rename(aside)
            return Outbox(path, sinks, max_bytes)
        except (OSError, sqlite3.Error) as again:
            raise RuntimeFailure(f"cannot open the outbox {path}: {first_line(again)}") from None


class EventSinks:
    """The stream's event delivery: ``publish`` each record; ``close`` at the end of the run."""

    def __init__(self, options: SinkOptions, events: Path | None = None, snapshots: Path | None = None,
                 snapshot_url: Callable[[str], str] | None = None) -> None:
        options.validate()
        sinks = []
        if options.webhook is not None:
            sinks.append(Webhook(options.webhook, options.webhook_snapshots))
        if options.mqtt is not None:
            sinks.append(MqttPublisher(options.mqtt))
        self.snapshots = snapshots
        self.queue_failures = 0
        self._unqueued: deque[tuple[dict, Path | None]] = deque(maxlen=MAX_UNQUEUED)
        self.outbox = open_outbox(options.outbox_path(events), [sink.name for sink in sinks],
                                  int(options.outbox_mb * MB))
        backoff = Backoff(options.retry_initial, options.retry_max)
        self.threads = [DeliveryThread(self.outbox, sink, backoff, snapshot_url) for sink in sinks]
        for thread in self.threads:
            log.info("events go to %s %s (outbox %s, %d waiting)", thread.sink.name, thread.sink.shown,
                     self.outbox.path, self.outbox.backlog(thread.sink.name))
            thread.start()

    def publish(self, record: dict) -> None:
        """Queue ``record`` for every sink (durable on return); never blocks on the network. When
        the outbox cannot be written (a full disk), the record waits in memory and is queued with
        the next one; at most ``MAX_UNQUEUED`` wait, older ones are dropped and counted."""
        name = record.get("snapshot")
        self._unqueued.append((record, self.snapshots / name if name and self.snapshots is not None else None))
        while self._unqueued:
            waiting, snapshot = self._unqueued[0]
            try:
                self.outbox.append(waiting, snapshot)
            except (sqlite3.Error, OSError) as exc:
                self.queue_failures += 1
                log.error("outbox %s: cannot queue event %s (%s); will retry with the next event",
                          self.outbox.path, waiting.get("id"), first_line(exc))
                return
            self._unqueued.popleft()

    def protected_paths(self) -> list[Path]:
        """Snapshots not yet delivered: disk pruning keeps them."""
        return self.outbox.protected_paths()

    def close(self, grace: float = 5.0) -> None:
        """Give the sinks up to ``grace`` seconds to deliver the backlog, then stop; what is left
        stays in the outbox for the next run."""
        deadline = time.monotonic() + grace
        for thread in self.threads:
            thread.drain(max(0.0, deadline - time.monotonic()))
        stopped = True
        for thread in self.threads:
            stopped = thread.stop() and stopped
            left = self.outbox.backlog(thread.sink.name)
            log.info("%s: %d events delivered, %d retries%s%s", thread.sink.name, thread.delivered,
                     thread.failures, f", {thread.rejected} refused" if thread.rejected else "",
                     f"; {left} waiting in the outbox for the next run" if left else "")
        if self.outbox.dropped:
            log.warning("outbox: %d events dropped because it was full (--outbox-mb)", self.outbox.dropped)
        if stopped:  # a thread still sending would acknowledge into a closed database
            self.outbox.close()
