"""The README's Performance section, rebuilt from benchmarks/results/*.json (by `make bench`).

    python -m benchmarks.summary           # rewrite the section between the markers and the chart

Only figures that some benchmark measured are shown; a missing result is said to be missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.machine import PROJECT, RESULTS_DIR, argument_parser, describe_machine
from benchmarks.real_data import ORIGINAL_PROJECT
from edge.bench import PIPELINE_TARGET

README = PROJECT / "README.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
CHART = RESULTS_DIR / "performance.png"


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def training_time(result: dict) -> str:
    minutes = result["train_seconds"] / 60
    if result.get("train_resumed"):
        return (f"interrupted and resumed with `crack train --resume`, the resumed part took "
                f"{minutes:.0f} min")
    return f"trained in {minutes:.0f} min"


def real_data_lines(result: dict) -> list[str]:
    s = result["settings"]
    lines = [f"**{result['set']}** ({result['split_sizes']['test']} test images, "
             f"{s['img_size']}x{s['img_size']}, {s['epochs']} epochs from random initialisation, "
             f"{training_time(result)}; majority-class baseline "
             f"{result['majority_baseline_accuracy']:.3f}). Machine: "
             f"{describe_machine(result['machine'])}:", "",
             "| model | accuracy | precision | recall | F1 | ROC AUC | size MB | gate |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if "accuracy" not in row:
            lines.append(f"| {row['model']} | failed: {row.get('error')} | | | | | | |")
            continue
        gate = {True: "pass", False: "FAIL", None: ""}[row["passed"]]
        lines.append(f"| {row['model']} | {row['accuracy']:.3f} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {row['f1']:.3f} | {row['roc_auc']:.3f} | "
                     f"{row['size_bytes'] / 1e6:.1f} | {gate} |")
    original = ORIGINAL_PROJECT if result.get("original_project") else None  # published figures
    if original:
        lines.append(f"| original project (ImageNet weights, 224) | {original['accuracy']:.3f} | "
                     f"{original['precision']:.3f} | {original['recall']:.3f} | {original['f1']:.3f} | | | |")
    if result.get("int8_accuracy_drop_pp") is not None:
        lines += ["", f"int8 accuracy change against Keras: {0.0 - result['int8_accuracy_drop_pp']:+.2f} "
                      "percentage points."]
    return lines + [""]


def results_with_kept(name: str) -> list[Path]:
    """<name>.json (this machine, the benchmark's latest run) first, then <name>_<machine>.json: the
    same benchmark kept from other machines (its --out), since int8's speed, and so the stream's
    balance and whether int8 is faster, depend on the CPU."""
    latest = RESULTS_DIR / f"{name}.json"
    others = sorted(RESULTS_DIR.glob(f"{name}_*.json"))
    return ([latest] if latest.is_file() else []) + others


def conversion_lines(convert: dict, path: Path) -> list[str]:
    lines = [f"Conversion, {convert['subject']} (size and single-image latency relative to fp32; "
             f"`{path.name}`). Machine: {describe_machine(convert['machine'])}:", "",
             "| variant | size MB | size / fp32 | median ms | speed-up |", "|---|---|---|---|---|"]
    for v in convert["variants"]:
        lines.append(f"| {v['mode']} | {v['size_bytes'] / 1e6:.1f} | {v['size_ratio'] * 100:.0f}% | "
                     f"{v['median_ms']:.1f} | {v['speedup']:.2f}x |")
    return lines + [""] + conversion_target_lines(convert)


def conversion_target_lines(convert: dict) -> list[str]:
    targets = convert.get("targets")
    if not targets:
        return []
    lines = [f"Targets for int8: at most {targets['int8_size_ratio_max'] * 100:.0f}% of the fp32 size "
             f"({targets['int8_size_ratio'] * 100:.1f}%: {'met' if targets['size_met'] else 'missed'}) and "
             f"at least {targets['int8_speedup_min']:g}x faster ({targets['int8_speedup']:.2f}x: "
             f"{'met' if targets['speed_met'] else 'missed'})."]
    dot_product = convert["machine"].get("int8_dot_product")
    if not targets["speed_met"] and dot_product == []:
        lines[0] += (" This CPU has no int8 dot-product instructions (x86 VNNI, Arm `asimddp`/`i8mm`), "
                     "so XNNPACK's int8 kernels do about as much work per multiply as its float ones; "
                     "int8 still quarters the model and its memory traffic. Run `python -m "
                     "benchmarks.bench_convert` on the target device (a Pi 5's Cortex-A76 has `asimddp`) "
                     "before relying on a speed-up.")
    elif targets["speed_met"] and dot_product:
        lines[0] += (f" This CPU has int8 dot-product instructions ({', '.join(dot_product)}), which "
                     "XNNPACK's int8 kernels use; a CPU without them (a Pi 4's Cortex-A72) gains little "
                     "speed from int8, only size.")
    return lines + [""]


def scaling_lines(scaling: dict) -> list[str]:
    """Linear means each further image costs the same, whatever the batch: compare the marginal
    cost between consecutive runs (each run also pays a fixed startup: loading the model)."""
    runs = sorted(scaling["runs"], key=lambda r: r["count"])
    text = "`score` scaling with int8: " + ", ".join(
        f"{r['count']:,} images {r['seconds']:.0f} s (peak {r['peak_rss_mb']:.0f} MB)" for r in runs) + "."
    marginal_ms = [(b["seconds"] - a["seconds"]) / (b["count"] - a["count"]) * 1000
                   for a, b in zip(runs, runs[1:])]
    memory_spread = max(r["peak_rss_mb"] for r in runs) - min(r["peak_rss_mb"] for r in runs)
    if len(marginal_ms) >= 2:
        spread = max(marginal_ms) / min(marginal_ms) - 1
        startup = runs[0]["seconds"] - runs[0]["count"] * marginal_ms[0] / 1000
        linear = "cost grows linearly" if spread <= 0.10 else "cost does NOT grow linearly"
        flat = "peak memory stays flat" if memory_spread <= 50 else "peak memory GROWS"
        text += (f" Each further image costs {' then '.join(f'{m:.1f}' for m in marginal_ms)} ms "
                 f"({spread * 100:.0f}% apart) on top of about {startup:.1f} s of startup, and peak "
                 f"memory varies by {memory_spread:.0f} MB: {linear} and {flat}.")
    return [text, ""]


def edge_lines(edge: dict) -> list[str]:
    lines = [f"Edge throughput, ResNet50V2 at {edge['size']}x{edge['size']} (random weights; "
             "speed does not depend on them), frames per second. "
             f"Machine: {describe_machine(edge['machine'])}.", "",
             "| variant | invoke ms (median) | bare invoke | `score` on photos | `stream` on video "
             "| score / bare | stream / bare |",
             "|---|---|---|---|---|---|---|"]
    for mode, v in edge["variants"].items():
        lines.append(f"| {mode} | {v['bare_median_ms']:.1f} | {v['bare_invoke_fps']:.1f} | "
                     f"{v['score_fps']:.1f} | {v['stream_fps']:.1f} | {v['score_ratio']:.2f} | "
                     f"{v['stream_ratio']:.2f} |")
    lines.append(f"| Keras `model.predict`, one frame at a time | | | "
                 f"{edge['keras_one_at_a_time_fps']:.1f} | | | |")
    ratios = [v[key] for v in edge["variants"].values() for key in ("score_ratio", "stream_ratio")]
    text = (f"The int8 `score` pipeline is {edge['int8_score_speedup_over_keras']:.1f}x faster than "
            f"the naive Keras loop. Pipeline / bare invoke (medians) ranges from {min(ratios):.2f} to "
            f"{max(ratios):.2f} (target at least {PIPELINE_TARGET:.2f}: "
            f"{'met' if min(ratios) >= PIPELINE_TARGET else 'not met everywhere'}).")
    for mode, v in edge["variants"].items():
        for pipeline, what in (("score", "reading, decoding and resizing each photo"),
                               ("stream", "decoding each video frame, converting and resizing it")):
            if v[f"{pipeline}_ratio"] < PIPELINE_TARGET:
                extra_ms = 1000 / v[f"{pipeline}_fps"] - 1000 / v["bare_invoke_fps"]
                text += (f" {mode} `{pipeline}` misses it: {what} adds about {extra_ms:.1f} ms on "
                         f"the same {edge['machine']['cores']} cores, which shows beside an invoke "
                         f"of {v['bare_median_ms']:.1f} ms.")
    rounds = {mode: v["rounds"] for mode, v in edge["variants"].items() if v.get("rounds")}
    if rounds:
        round_ratios = [r[key] for rs in rounds.values() for r in rs for key in ("score_ratio", "stream_ratio")]
        drift = ", ".join(f"{mode} {min(r['bare_median_ms'] for r in rs):.1f} to "
                          f"{max(r['bare_median_ms'] for r in rs):.1f} ms" for mode, rs in rounds.items())
        text += (f" Bare and pipeline rates are measured in turns, {len(next(iter(rounds.values())))} "
                 f"rounds per variant; single rounds range from {min(round_ratios):.2f} to "
                 f"{max(round_ratios):.2f} because this machine's own speed drifts (bare invoke "
                 f"{drift} from round to round).")
    limited = {mode: v for mode, v in edge["variants"].items() if "stream_limit_ratio" in v}
    if limited:
        target = edge["stream_limit_target"]
        text += (f" `stream` decodes and prepares each frame on its capture thread while the "
                 f"interpreter invokes; its limit is the bare invoke time plus that work spread over "
                 f"the {edge['machine']['cores']} cores, and it reaches "
                 + ", ".join(f"{mode} {v['stream_limit_ratio']:.2f}" for mode, v in limited.items())
                 + f" of it (target at least {target:.2f}: "
                 f"{'met' if min(v['stream_limit_ratio'] for v in limited.values()) >= target else 'not met everywhere'}).")
        single = {mode: v for mode, v in limited.items() if "stream_one_interpreter_limit_ratio" in v}
        if single:
            text += (f" By default it scores with {edge.get('stream_interpreters', 2)} interpreters side by "
                     "side (edge/scoring_pool.py); with one interpreter of every thread "
                     "(`--interpreters 1`) it reaches "
                     + ", ".join(f"{mode} {v['stream_one_interpreter_limit_ratio']:.2f}" for mode, v in single.items())
                     + " of the limit.")
    return lines + ["", text, ""]


def preview_lines(preview: dict) -> list[str]:
    verdict = "met" if preview["ratio"] >= preview["target"] else "not met"
    return [f"Live preview: `stream --serve` with one viewer reading `/stream.mjpg` runs at "
            f"{preview['fps_viewer']:.1f} frames per second against {preview['fps_none']:.1f} with none "
            f"({preview['ratio']:.2f}; target at least {preview['target']:.2f}: {verdict}), "
            f"{preview['model']}, medians of {len(preview['rounds'])} paired rounds. "
            f"Machine: {describe_machine(preview['machine'])}.", ""]


def section() -> str:
    lines = ["## Performance", "",
             "Measured by `make bench` (scripts in `benchmarks/`, results in `benchmarks/results/`). "
             "Each part names the machine it ran on and how many cores other processes kept busy "
             "while it ran (0.00: the machine was the benchmark's alone). Timings are medians of "
             "several runs.", ""]
    for path in results_with_kept("edge_throughput"):
        lines += edge_lines(json.loads(path.read_text()))
    preview = load("preview_viewer")
    if preview:
        lines += preview_lines(preview)
    for path in results_with_kept("convert"):
        lines += conversion_lines(json.loads(path.read_text()), path)
    for name in ("surface_crack", "crackforest"):
        result = load(f"real_data_{name}")
        lines += real_data_lines(result) if result else [f"Real data, {name}: not measured yet.", ""]
    pipeline = load("input_pipeline")
    if pipeline:
        lines += [f"Training input pipeline at {pipeline['img_size']}x{pipeline['img_size']}: tf.data "
                  f"delivers {pipeline['pipeline_first_pass_img_per_s']:.0f} images/s on the first "
                  f"pass (decoding) and {pipeline['pipeline_cached_img_per_s']:.0f} from its cache; "
                  f"the model trains on {pipeline['model_train_img_per_s']:.1f} images/s, so "
                  + ("training never waits for data." if pipeline["first_pass_headroom"] > 1 else
                     "the first pass is slower than training: it waits for data until the cache "
                     "is full."), ""]
    scaling = load("scaling")
    if scaling:
        lines += scaling_lines(scaling)
    if CHART.is_file():
        lines += [f"![edge throughput]({CHART.relative_to(PROJECT)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def chart() -> None:
    edge = load("edge_throughput")
    if not edge:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for mode, v in edge["variants"].items():
        labels += [f"{mode}\nbare invoke", f"{mode}\nscore", f"{mode}\nstream"]
        values += [v["bare_invoke_fps"], v["score_fps"], v["stream_fps"]]
    labels.append("Keras\n1 frame")
    values.append(edge["keras_one_at_a_time_fps"])
    figure, axis = plt.subplots(figsize=(9, 3.5))
    axis.bar(labels, values, color=["#4c72b0"] * 3 + ["#55a868"] * 3 + ["#c44e52"])
    axis.set_ylabel("frames per second")
    dot_product = ", ".join(edge["machine"].get("int8_dot_product") or []) or "no int8 dot product"
    axis.set_title(f"ResNet50V2 {edge['size']}x{edge['size']} on {edge['machine']['cpu']} "
                   f"({dot_product}), {edge['machine']['threads']} threads", fontsize=9)
    figure.tight_layout()
    figure.savefig(CHART, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    argument_parser("benchmarks.summary", __doc__).parse_args(argv)
    chart()
    text = section()
    print(text)
    readme = README.read_text()
    if START in readme and END in readme:
        before, rest = readme.split(START, 1)
        after = rest.split(END, 1)[1]
        README.write_text(f"{before}{START}\n{text}{END}{after}")
        print(f"updated {README}")


if __name__ == "__main__":
    main()
