"""What one viewer of the live preview costs the stream: `stream --serve` on a video file, with one
HTTP client reading /stream.mjpg against none, in paired rounds (target: with a viewer at least
0.9 of the frame rate without).

    python -m benchmarks.preview_viewer [--model M.tflite] [--frames 300] [--repeats 5]

Without --model, the int8 ResNet50V2 (224 px) made by benchmarks.edge_throughput is used (run it
first). Both runs of a round serve the page on 127.0.0.1; only the viewer differs. The preview
draws and encodes frames in its own thread, only while someone watches, at most at its frame-rate
cap. The two runs of a round go in turns, alternating which comes first, and each round records
how many cores other processes kept busy meanwhile. Rates are timed from frame ``--skip`` on; in
the viewer's run the stream waits at its second frame until the viewer has received the first,
so the viewer watches the whole timed part.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

from benchmarks.edge_throughput import real_photos, video_from
from benchmarks.machine import (
    RESULTS_DIR,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    describe_machine,
    machine_info,
    median_of,
    other_processes_cores,
    print_table,
)

DEFAULT_MODEL = WORK_DIR / "edge_throughput" / "resnet50v2_224_int8.tflite"
TARGET = 0.9  # stream fps with one viewer / without
CONNECT_SECONDS = 60.0  # how long the viewer keeps trying to reach the server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MjpegViewer(threading.Thread):
    """A client reading /stream.mjpg to its end, as a browser would: it connects as soon as the
    server listens and counts the JPEG frames it receives."""

    def __init__(self, port: int) -> None:
        super().__init__(name="preview-viewer", daemon=True)
        self.port = port
        self.frames = 0
        self.first_frame = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                connection.request("GET", "/stream.mjpg")
                self._read(connection.getresponse())
                return
            except ConnectionRefusedError:  # the stream is still loading its model
                if time.monotonic() > deadline:
                    self.error = "the preview server never listened"
                    self.first_frame.set()  # nothing is coming: do not keep the stream waiting
                    return
                time.sleep(0.02)
            except (OSError, http.client.HTTPException) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.first_frame.set()
                return
            finally:
                connection.close()

    def _read(self, response: http.client.HTTPResponse) -> None:
        if response.status != 200:
            self.error = f"/stream.mjpg answered {response.status}"
            return
        length = None
        while True:
            line = response.readline()
            if not line:  # the stream ended and the server closed the connection
                return
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
            elif line in (b"\r\n", b"\n") and length is not None:
                if len(response.read(length)) < length:
                    return
                self.frames += 1
                self.first_frame.set()
                length = None


def stream_run(model: Path, video: Path, threads: int | None, skip: int, with_viewer: bool) -> dict:
    """One `stream --serve` run over the video: its frame rate from frame ``skip`` on and, with a
    viewer, what the viewer received."""
    from edge.stream import StreamOptions, run_stream

    port = free_port()
    viewer = MjpegViewer(port) if with_viewer else None
    if viewer is not None:
        viewer.start()
    times: list[float] = []

    def on_frame(index: int, probability: float) -> None:
        if viewer is not None and len(times) == 1:  # frame 0 is offered to the preview by now
            viewer.first_frame.wait(CONNECT_SECONDS)
        times.append(time.perf_counter())

    summary = run_stream(StreamOptions(model=model, source=str(video), threads=threads,
                                       serve=f"127.0.0.1:{port}"), on_frame=on_frame)
    if len(times) < skip + 2:
        raise SystemExit(f"error: only {len(times)} frames scored; use a longer video or a smaller --skip")
    timed_s = times[-1] - times[skip]
    run = {"fps": (len(times) - 1 - skip) / timed_s, "frames": summary.frames}
    if viewer is not None:
        viewer.join(CONNECT_SECONDS)
        if viewer.error or not viewer.frames:
            raise SystemExit(f"error: the viewer received nothing: {viewer.error or 'no frame'}")
        run.update(viewer_frames=viewer.frames, viewer_fps=viewer.frames / (times[-1] - times[0]))
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.preview_viewer", __doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="TFLite model the stream runs (edge_throughput writes the default)")
    parser.add_argument("--frames", type=int, default=300, help="frames of the video (CrackForest photos in turn)")
    parser.add_argument("--skip", type=int, default=10,
                        help="frames scored before the rates are timed (at least 2: the viewer connects at the first)")
    parser.add_argument("--repeats", type=int, default=5, help="paired rounds (no viewer, one viewer)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: the stream's)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "preview_viewer.json", help="results JSON")
    args = parser.parse_args(argv)
    from edge.health import default_threads  # the stream's own default

    if args.skip < 2:
        raise SystemExit("error: --skip must be at least 2: the viewer connects at the stream's first frame")
    if not args.model.is_file():
        raise SystemExit(f"error: model {args.model} not found; run python -m benchmarks.edge_throughput "
                         "first or pass --model")
    mark = cpu_mark()
    photos = real_photos(args.frames)
    work = WORK_DIR / "preview_viewer"
    work.mkdir(parents=True, exist_ok=True)
    video = video_from(photos, work / f"video_{os.getpid()}.avi", args.frames)  # this run's own
    rounds = []
    try:
        for index in range(args.repeats):
            round_mark = cpu_mark()
            runs = {}
            for with_viewer in ((False, True) if index % 2 == 0 else (True, False)):
                runs["viewer" if with_viewer else "none"] = stream_run(args.model, video, args.threads,
                                                                       args.skip, with_viewer)
            none, viewer = runs["none"], runs["viewer"]
            rounds.append({"fps_none": none["fps"], "fps_viewer": viewer["fps"],
                           "ratio": viewer["fps"] / none["fps"], "viewer_frames": viewer["viewer_frames"],
                           "viewer_fps": viewer["viewer_fps"],
                           "other_processes_cores": other_processes_cores(round_mark)})
            print(f"round {index + 1}: {none['fps']:.1f} fps without a viewer, {viewer['fps']:.1f} with one "
                  f"(it received {viewer['viewer_frames']} frames); ratio {rounds[-1]['ratio']:.3f}",
                  flush=True)
    finally:
        video.unlink(missing_ok=True)
    medians = {key: median_of([r[key] for r in rounds])
               for key in ("fps_none", "fps_viewer", "ratio", "viewer_fps")}
    result = {"model": args.model.name, "video_frames": args.frames, "skip": args.skip,
              "video_source": str(photos[0].parent), "target": TARGET, **medians,
              "met": medians["ratio"] >= TARGET, "rounds": rounds,
              "machine": machine_info(args.threads or default_threads(), since=mark)}
    print()
    print_table(["preview", "fps, no viewer", "fps, 1 viewer", "viewer / none", "viewer receives fps"],
                [[args.model.name, f"{medians['fps_none']:.1f}", f"{medians['fps_viewer']:.1f}",
                  f"{medians['ratio']:.3f}", f"{medians['viewer_fps']:.1f}"]])
    print(f"medians of {args.repeats} paired rounds; target with a viewer >= {TARGET:.2f} of without: "
          f"{'met' if result['met'] else 'NOT met'}")
    print(f"machine: {describe_machine(result['machine'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
