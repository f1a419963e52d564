"""The on-disk outbox: order, acknowledgement per sink, the size bound, and a process killed with
SIGKILL in the middle of delivery that loses nothing and delivers nothing acknowledged again."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from edge.outbox import Outbox

WAIT = 60.0  # upper bound for waiting on a subprocess; never a measured duration


def record(number: int, **extra) -> dict:
    return {"id": f"run1-{number:04d}-start", "event": "crack_start", "event_id": number, **extra}


def test_records_come_in_order_and_an_acknowledged_one_never_again(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, ["webhook"])
    seqs = [outbox.append(record(n)) for n in range(1, 6)]
    assert seqs == sorted(seqs)
    first = outbox.next_for("webhook")
    assert first.id == "run1-0001-start" and first.record["event_id"] == 1
    assert outbox.next_for("webhook").seq == first.seq  # not acknowledged: the same one again
    outbox.ack("webhook", first.seq)
    second = outbox.next_for("webhook")
    outbox.ack("webhook", second.seq)
    outbox.close()

    reopened = Outbox(path, ["webhook"])  # a restart
    assert reopened.pending_ids() == [f"run1-{n:04d}-start" for n in (3, 4, 5)]
    delivered = []
    while (item := reopened.next_for("webhook")) is not None:
        delivered.append(item.record["event_id"])
        reopened.ack("webhook", item.seq)
    assert delivered == [3, 4, 5]
    assert reopened.backlog("webhook") == 0 and reopened.pending_ids() == []
    reopened.close()


def test_each_sink_reads_at_its_own_pace_and_snapshots_stay_protected_until_all_delivered(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3", ["webhook", "mqtt"])
    snap = tmp_path / "snaps" / "event_0001_frame_000010.jpg"
    seq = outbox.append(record(1, snapshot=snap.name), snapshot=snap)
    outbox.append(record(2))
    outbox.ack("webhook", seq)
    assert outbox.next_for("webhook").record["event_id"] == 2
    assert outbox.next_for("mqtt").record["event_id"] == 1
    assert outbox.protected_paths() == [snap]  # mqtt has not delivered it yet
    outbox.ack("mqtt", seq)
    assert outbox.protected_paths() == []
    assert outbox.pending_ids() == ["run1-0002-start"]
    outbox.close()
    # a sink that is no longer configured does not keep records forever
    webhook_only = Outbox(tmp_path / "outbox.sqlite3", ["webhook"])
    assert webhook_only.pending_ids() == ["run1-0002-start"]
    webhook_only.ack("webhook", webhook_only.next_for("webhook").seq)
    assert webhook_only.pending_ids() == []
    webhook_only.close()


def test_a_full_outbox_drops_the_oldest_undelivered_counts_and_logs(tmp_path, caplog):
    one = len(str(record(1, pad="x" * 100)).encode())  # about the size of one record as JSON
    outbox = Outbox(tmp_path / "outbox.sqlite3", ["webhook"], max_bytes=int(one * 3.5))
    with caplog.at_level(logging.WARNING, logger="crack.edge"):
        for n in range(1, 8):
            outbox.append(record(n, pad="x" * 100))
    ids = outbox.pending_ids()
    assert ids == [f"run1-{n:04d}-start" for n in (5, 6, 7)]
    assert outbox.dropped == 4
    dropped_lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped_lines) == 4 and "run1-0001-start" in dropped_lines[0]
    outbox.close()
    assert Outbox(tmp_path / "outbox.sqlite3", ["webhook"]).dropped == 4  # kept across restarts


# --- kill -9 in the middle of delivery -------------------------------------------------------------

DELIVER = """
import os, sys
from edge.outbox import Outbox
outbox = Outbox(sys.argv[1], ["test"])
with open(sys.argv[2], "a") as log:
    while (item := outbox.next_for("test")) is not None:
        log.write(f"{item.seq} {item.id}\\n")   # the receiver has it...
        log.flush()
        os.fsync(log.fileno())
        outbox.ack("test", item.seq)           # ...and the outbox knows
"""


def delivered_lines(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(int(seq), rid) for seq, rid in (line.split() for line in lines if line.count(" ") == 1)]


def test_sigkill_mid_delivery_loses_nothing_and_redelivers_only_the_unacknowledged(tmp_path):
    path, received = tmp_path / "outbox.sqlite3", tmp_path / "received.txt"
    outbox = Outbox(path, ["test"])
    ids = [record(n)["id"] for n in range(1, 401)]
    for n in range(1, 401):
        outbox.append(record(n))
    outbox.close()

    child = subprocess.Popen([sys.executable, "-c", DELIVER, str(path), str(received)])
    deadline = time.monotonic() + WAIT
    while len(delivered_lines(received)) < 20:  # kill it once delivery is well under way
        assert child.poll() is None, "the delivery process ended before it could be killed"
        assert time.monotonic() < deadline, "delivery never started"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(WAIT)
    first_run = delivered_lines(received)
    assert len(first_run) < 400, "the process finished before the kill: the test proves nothing"

    reopened = Outbox(path, ["test"])
    acked_at_kill = reopened.acked_seq("test")
    reopened.close()
    assert acked_at_kill >= first_run[0][0]

    subprocess.run([sys.executable, "-c", DELIVER, str(path), str(received)], check=True, timeout=WAIT)
    everything = delivered_lines(received)
    second_run = everything[len(first_run):]
    # nothing lost, in order
    assert sorted(set(rid for _, rid in everything)) == sorted(ids)
    assert [rid for _, rid in second_run] == ids[len(ids) - len(second_run):]
    # nothing acknowledged before the kill comes again; at most the one in flight is repeated
    assert all(seq > acked_at_kill for seq, _ in second_run)
    assert len(everything) - len(ids) <= 1


def test_event_record_ids_are_unique_across_runs():
    from edge.events import Debouncer, Observation

    ids = set()
    for _ in range(50):  # 50 "restarts" within the same second: the random part keeps them apart
        debouncer = Debouncer(min_frames=1)
        change = debouncer.update(Observation(0, 0.9, True))
        ids.add(change.event.start_record()["id"])
    assert len(ids) == 50


def test_a_damaged_outbox_file_is_moved_aside_and_a_new_one_started(tmp_path, caplog):
    from edge.event_sinks import open_outbox

    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database, the SD card ate it" * 100)
    with caplog.at_level(logging.ERROR, logger="crack.edge"):
        outbox = open_outbox(path, ["webhook"], 10**6)
    outbox.append(record(1))
    assert outbox.pending_ids() == ["run1-0001-start"]
    outbox.close()
    aside = list(tmp_path.glob("outbox.sqlite3.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert any("damaged" in r.getMessage() for r in caplog.records)
