"""The README's Performance section, rebuilt from benchmarks/results/*.json (by `make bench`).

    python -m benchmarks.summary           # rewrite the section between the markers and the chart

Only figures that some benchmark measured are shown; a missing result is said to be missing.
"""

from __future__ import annotations

import json

from benchmarks.machine import PROJECT, RESULTS_DIR, describe_machine

README = PROJECT / "README.md"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
CHART = RESULTS_DIR / "performance.png"


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def real_data_lines(result: dict) -> list[str]:
    s = result["settings"]
    lines = [f"**{result['set']}** ({result['split_sizes']['test']} test images, "
             f"{s['img_size']}x{s['img_size']}, {s['epochs']} epochs from random initialisation, "
             f"trained in {result['train_seconds'] / 60:.0f} min; majority-class baseline "
             f"{result['majority_baseline_accuracy']:.3f}):", "",
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
    original = result.get("original_project")
    if original:
        lines.append(f"| original project (ImageNet weights, 224) | {original['accuracy']:.3f} | "
                     f"{original['precision']:.3f} | {original['recall']:.3f} | 0.985 | | | |")
    if result.get("int8_accuracy_drop_pp") is not None:
        lines += ["", f"int8 accuracy change against Keras: {-result['int8_accuracy_drop_pp']:+.2f} "
                      "percentage points."]
    return lines + [""]


def section() -> str:
    lines = ["## Performance", "",
             "Measured by `make bench` (scripts in `benchmarks/`, results in `benchmarks/results/`); "
             "figures of this session were taken while other jobs shared the 2 cores.", ""]
    edge = load("edge_throughput")
    if edge:
        lines += [f"Machine: {describe_machine(edge['machine'])}.", "",
                  f"Edge throughput, ResNet50V2 at {edge['size']}x{edge['size']} (random weights; "
                  "speed does not depend on them), frames per second:", "",
                  "| variant | invoke ms (median) | bare invoke | `score` on photos | `stream` on video | score / bare |",
                  "|---|---|---|---|---|---|"]
        for mode, v in edge["variants"].items():
            lines.append(f"| {mode} | {v['bare_median_ms']:.1f} | {v['bare_invoke_fps']:.1f} | "
                         f"{v['score_fps']:.1f} | {v['stream_fps']:.1f} | {v['score_ratio']:.2f} |")
        lines.append(f"| Keras `model.predict`, one frame at a time | | | "
                     f"{edge['keras_one_at_a_time_fps']:.1f} | | |")
        lines += ["", f"The int8 `score` pipeline is {edge['int8_score_speedup_over_keras']:.1f}x "
                      "faster than the naive Keras loop.", ""]
    convert = load("convert")
    if convert:
        lines += ["Conversion (size and single-image latency relative to fp32):", "",
                  "| variant | size MB | size / fp32 | median ms | speed-up |", "|---|---|---|---|---|"]
        for v in convert["variants"]:
            lines.append(f"| {v['mode']} | {v['size_bytes'] / 1e6:.1f} | {v['size_ratio'] * 100:.0f}% | "
                         f"{v['median_ms']:.1f} | {v['speedup']:.2f}x |")
        lines.append("")
    for name in ("surface_crack", "crackforest"):
        result = load(f"real_data_{name}")
        lines += real_data_lines(result) if result else [f"Real data, {name}: not measured yet.", ""]
    pipeline = load("input_pipeline")
    if pipeline:
        lines += [f"Training input pipeline at {pipeline['img_size']}x{pipeline['img_size']}: tf.data "
                  f"delivers {pipeline['pipeline_first_pass_img_per_s']:.0f} images/s on the first "
                  f"pass (decoding) and {pipeline['pipeline_cached_img_per_s']:.0f} from its cache; "
                  f"the model trains on {pipeline['model_train_img_per_s']:.1f} images/s, so "
                  "training never waits for data.", ""]
    scaling = load("scaling")
    if scaling:
        runs = ", ".join(f"{r['count']:,} images {r['seconds']:.0f} s ({r['ms_per_image']:.1f} ms "
                         f"each, peak {r['peak_rss_mb']:.0f} MB)" for r in scaling["runs"])
        lines += [f"`score` scaling with int8: {runs}.", ""]
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
    axis.set_title(f"ResNet50V2 {edge['size']}x{edge['size']} on {edge['machine']['cpu']} "
                   f"({edge['machine']['threads']} threads)", fontsize=9)
    figure.tight_layout()
    figure.savefig(CHART, dpi=90)
    plt.close(figure)


def main() -> None:
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
