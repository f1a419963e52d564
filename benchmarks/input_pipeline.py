"""Does training ever wait for data? Images per second the tf.data pipeline delivers (decode,
resize, augment, batch; first pass from disk and later passes from its cache) against images per
second ResNet50V2 consumes in a training step, at the same image size and batch size.

    python -m benchmarks.input_pipeline [--img-size 96] [--batch-size 16] [--images N]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from training import tensorflow_env

tensorflow_env.prepare()  # before anything imports TensorFlow

from benchmarks.machine import (  # noqa: E402
    RESULTS_DIR,
    SHARED_DATA,
    argument_parser,
    cpu_mark,
    machine_info,
    print_table,
)


def training_images(limit: int) -> list[tuple[str, int]]:
    from training.data import scan

    source = SHARED_DATA / "surface_crack"
    if not source.is_dir():  # the project's own data when the real data is not beside it
        from training.demo_data import DemoOptions, generate_demo

        source = Path(tempfile.mkdtemp(prefix="crack-bench-")) / "demo"
        generate_demo(DemoOptions(out=source, count=max(limit // 2, 8), size=224))
    items = scan(source).splits["train"]
    return items[:limit]


def pipeline_rate(items, img_size: int, batch_size: int, passes: int = 3) -> list[float]:
    """Images per second for each full pass over the data (pass 1 decodes, later ones hit cache)."""
    from training.pipeline import Augmentation, make_dataset

    dataset = make_dataset(items, img_size, batch_size, training=True, augmentation=Augmentation())
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        count = sum(int(images.shape[0]) for images, _ in dataset)
        rates.append(count / (time.perf_counter() - started))
    return rates


def model_rate(img_size: int, batch_size: int, steps: int) -> float:
    """Images per second of train_on_batch on in-memory batches (no input pipeline at all)."""
    import numpy as np

    from training.model import build_classifier
    from training.train import compile_model

    model, _, _ = build_classifier(img_size, "none")
    compile_model(model, 1e-3)
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, img_size, img_size, 3)).astype("float32")
    labels = (np.arange(batch_size) % 2).astype("float32")
    model.train_on_batch(images, labels)  # trace
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.input_pipeline", __doc__)
    parser.add_argument("--img-size", type=int, default=96, help="training image size in pixels")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--images", type=int, default=600, help="real training photos read by the pipeline")
    parser.add_argument("--steps", type=int, default=8, help="training steps timed")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "input_pipeline.json", help="results JSON")
    args = parser.parse_args(argv)
    mark = cpu_mark()
    items = training_images(args.images)
    rates = pipeline_rate(items, args.img_size, args.batch_size)
    consumed = model_rate(args.img_size, args.batch_size, args.steps)
    result = {
        "machine": machine_info(since=mark),
        "img_size": args.img_size, "batch_size": args.batch_size, "images": len(items),
        "pipeline_first_pass_img_per_s": rates[0],
        "pipeline_cached_img_per_s": sorted(rates[1:])[len(rates[1:]) // 2],
        "model_train_img_per_s": consumed,
    }
    result["first_pass_headroom"] = result["pipeline_first_pass_img_per_s"] / consumed
    result["cached_headroom"] = result["pipeline_cached_img_per_s"] / consumed
    print_table(["", "images/s", "x model"], [
        ["tf.data, first pass (decode)", f"{rates[0]:.0f}", f"{result['first_pass_headroom']:.1f}"],
        ["tf.data, cached passes", f"{result['pipeline_cached_img_per_s']:.0f}",
         f"{result['cached_headroom']:.1f}"],
        ["ResNet50V2 training step", f"{consumed:.1f}", "1.0"],
    ])
    print("training never waits for data" if result["first_pass_headroom"] > 1 else
          "WARNING: the first pass delivers images slower than the model takes them")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
