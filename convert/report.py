"""report.json, report.md (one table to read at a glance) and report.png (accuracy and size per
variant), all in ``runs/NAME/tflite/``, each written to a temporary file and renamed into place.
"""

from __future__ import annotations

import io
from pathlib import Path

from edge.atomic_files import write_bytes_atomic, write_json_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _mb(size: int | None) -> str:
    return "-" if not size else f"{size / 1e6:.2f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def markdown(report: dict) -> str:
    keras = report["keras"]
    km = keras["metrics"]
    fp32_size = next((v["size_bytes"] for v in report["variants"] if v["mode"] == "fp32" and v.get("size_bytes")), None)
    lines = [
        f"# TFLite conversion of run `{report['run']['name']}`",
        "",
    ]
    if report["recommended"]:
        lines.append(f"**Deploy `{report['recommended_file']}`** (the first variant that passed the gate, full integer first).")
    else:
        lines.append("**No variant passed the gate: deploy none of them.**")
    failed = report["failed"]
    lines.append("")
    lines.append(f"Gate: at most {report['max_drop_pp']:g} percentage points (pp) ({report['max_drop_reason']}) "
                 "lost in accuracy and in F1, under the worst kernel set, "
                 f"against the Keras model, on the same {report['test_set']['count']} test images, "
                 f"threshold {report['threshold']:g}. "
                 + (f"Failed: {', '.join(failed)} (exit code 1)." if failed else "All requested variants passed."))
    lines += [
        "",
        "| variant | gate | accuracy % | Δacc pp | F1 % | ΔF1 pp | precision % | recall % | ROC AUC "
        "| agree % | mean \\|Δp\\| | max \\|Δp\\| | p std | size MB | size vs fp32 | latency ms (median / p90) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| Keras (reference) | - | {_pct(km['accuracy'])} | - | {_pct(km['f1'])} | - | {_pct(km['precision'])} "
        f"| {_pct(km['recall'])} | {_num(km['roc_auc'])} | - | - | - | {_num(km['probability_std'])} "
        f"| {_mb(keras.get('size_bytes'))} | - | - |",
    ]
    for v in report["variants"]:
        gate = v["gate"]
        m = v.get("metrics") or {}
        c = v.get("comparison") or {}
        lat = v.get("latency") or {}
        verdict = "pass" if gate["passed"] else "**FAIL**"
        ratio = f"{v['size_bytes'] / fp32_size * 100:.0f}%" if fp32_size and v.get("size_bytes") else "-"
        latency = f"{lat['median_ms']:.2f} / {lat['p90_ms']:.2f}" if lat else "-"
        lines.append(
            f"| {v['mode']} | {verdict} | {_pct(m.get('accuracy'))} | {_signed(0.0 - gate['accuracy_drop_pp'] if gate['accuracy_drop_pp'] is not None else None)} "
            f"| {_pct(m.get('f1'))} | {_signed(0.0 - gate['f1_drop_pp'] if gate['f1_drop_pp'] is not None else None)} "
            f"| {_pct(m.get('precision'))} | {_pct(m.get('recall'))} | {_num(m.get('roc_auc'))} "
            f"| {_pct(c.get('agreement'), 1)} | {_num(c.get('mean_abs_prob_diff'), '.4f')} "
            f"| {_num(c.get('max_abs_prob_diff'), '.4f')} | {_num(m.get('probability_std'))} "
            f"| {_mb(v.get('size_bytes'))} | {ratio} | {latency} |")
    lines += ["", "Δ columns: variant minus Keras (negative = lost) on the worst kernel set that "
              "scored the whole split, the figure the gate judges; the other columns are the default "
              "kernels'. agree: share of images whose label "
              "matches the Keras model's. p std: spread of the crack probabilities over the test images "
              "(near 0 = the model predicts one value for everything).", ""]
    lines += kernel_sets_section(report)
    notes = []
    for v in report["variants"]:
        if not v["gate"]["passed"]:
            notes.append(f"- `{v['mode']}` failed: {'; '.join(v['gate']['reasons'])}")
    int8 = report.get("int8_input")
    if int8:
        if int8["raw_pixels"]:
            notes.append(f"- `int8` input: uint8 with scale {int8['scale']:g} and zero point {int8['zero_point']}: "
                         "it takes raw camera pixels 0..255 unchanged (the model's first layer scales them).")
        else:
            notes.append(f"- `int8` input: uint8 with scale {int8['scale']:.6g} and zero point "
                         f"{int8['zero_point']}, NOT (1, 0): pixels are rescaled on the way in "
                         "(CrackClassifier does this from the model's parameters).")
    for v in report["variants"]:
        correction = (v.get("conversion") or {}).get("output_bias_correction")
        if isinstance(correction, dict):
            if correction["applied"]:
                notes.append(
                    f"- `{v['mode']}` output bias corrected: its logit was {correction['logit_shift']:+.3f} off the "
                    f"Keras logit on average over {correction['images']} calibration images (int8 step "
                    f"{correction['logit_step']:.4f}), so that much was taken out of the last layer's bias; their "
                    f"mean |Δp| went from {correction['calibration_mean_abs_prob_diff_before']:.4f} to "
                    f"{correction['calibration_mean_abs_prob_diff_after']:.4f}.")
            else:
                notes.append(f"- `{v['mode']}` output bias not corrected: {correction['reason'].rstrip('.')}.")
        converter = (v.get("conversion") or {}).get("converter") or {}
        if converter.get("name") == "litert-quantizer":
            notes.append(f"- `{v['mode']}`: made by litert-quantizer {converter.get('litert-quantizer')} from the "
                         f"converter's fp32 model ({v['conversion'].get('recipe')}; calibration: "
                         f"{v['conversion'].get('calibration_statistics')}).")
    calibration = report.get("calibration")
    if calibration:
        low, high = calibration["observed_pixel_range"]
        anchor = ("; to make the int8 input range exactly 0..255: " + "; ".join(calibration["anchored"])
                  if calibration["anchored"] else "; they already span 0..255")
        counts = calibration.get("label_counts")
        counted = f" ({counts['crack']} crack, {counts['no_crack']} no_crack)" if counts else ""
        notes.append(f"- Calibration: {calibration['count']} images{counted} from `{calibration['source']}`, "
                     f"pixel range {low}..{high}{anchor}.")
    selective = report.get("selective")
    if selective:
        kept = selective.get("kept_in_float") or []
        if kept:
            names = ", ".join(f"`{layer['tensor_name']}` ({layer['op_name']}, RMSE/scale "
                              f"{layer['rmse_scale']:.2f})" for layer in kept)
            notes.append(f"- `int8_selective`: {selective['outcome']}: kept in float: {names}. "
                         "It has float input and output, so it is not for integer-only accelerators.")
        else:
            notes.append(f"- Selective int8 (quantisation debugger): {selective['outcome']}.")
    interp = report.get("latency_setup")
    if interp:
        notes.append(f"- Latency: single image through CrackClassifier ({interp}), "
                     f"{report['options']['latency_runs']} runs after warm-up, on this machine.")
    notes.append(f"- Metrics: {report['metrics_implementation']}.")
    if report["test_set"]["skipped"]:
        notes.append(f"- {report['test_set']['skipped']} unreadable test image(s) skipped.")
    lines += ["## Notes", ""] + notes + [""]
    return "\n".join(lines)


def kernel_sets_section(report: dict) -> list[str]:
    """One row per variant and kernel set: what the gate's worst case was taken from."""
    checked = [v for v in report["variants"] if len(v.get("kernel_sets") or []) > 1]
    if not checked:
        return []
    keras = report["keras"]["metrics"]
    lines = ["## Kernel sets", "",
             "Quantised variants run under XNNPACK (what the device uses by default), TFLite's built-in "
             "kernels without it, and the reference kernels. The gate uses the worst kernel set evaluated "
             "on the whole test split; a subset (the reference kernels are slow) is reported, not gated.", "",
             "| variant | kernels | images | accuracy % | Δacc pp | F1 % | ΔF1 pp | agree % | mean \\|Δp\\| "
             "| max \\|Δp\\| |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in checked:
        for k in v["kernel_sets"]:
            m, c = k["metrics"], k["comparison"]
            whole = k["whole_split"]
            images = str(k["images"]) if whole else f"{k['images']} (subset)"
            d_acc = _signed((m["accuracy"] - keras["accuracy"]) * 100) if whole else "-"
            d_f1 = _signed((m["f1"] - keras["f1"]) * 100) if whole else "-"
            worst = " (worst)" if k["kernels"] == v["gate"].get("worst_kernels") and whole else ""
            lines.append(f"| {v['mode']} | {k['kernels']}{worst} | {images} | {_pct(m['accuracy'])} | {d_acc} "
                         f"| {_pct(m['f1'])} | {d_f1} | {_pct(c['agreement'], 1)} "
                         f"| {_num(c['mean_abs_prob_diff'], '.4f')} | {_num(c['max_abs_prob_diff'], '.4f')} |")
    return lines + [""]


def chart_png(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    variants = [v for v in report["variants"] if v.get("metrics")]
    names = ["keras"] + [v["mode"] for v in variants]
    accuracy = [report["keras"]["metrics"]["accuracy"] * 100] + [v["metrics"]["accuracy"] * 100 for v in variants]
    sizes = [(report["keras"].get("size_bytes") or 0) / 1e6] + [v["size_bytes"] / 1e6 for v in variants]
    colours = ["#888888"] + ["#2e7d32" if v["gate"]["passed"] else "#c62828" for v in variants]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, accuracy, color=colours)
    low = max(0.0, min(accuracy) - 5)
    left.set_ylim(low, 100)
    left.set_ylabel("test accuracy (%)")
    left.set_title("Accuracy (green: passed, red: failed)")
    for i, value in enumerate(accuracy):
        left.text(i, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    right.bar(names, sizes, color=colours)
    right.set_ylabel("file size (MB)")
    right.set_title("Size")
    for i, value in enumerate(sizes):
        right.text(i, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    figure.suptitle(f"run {report['run']['name']}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def write_reports(directory: Path, report: dict) -> dict[str, Path]:
    paths = {"json": directory / REPORT_JSON, "md": directory / REPORT_MD, "png": directory / REPORT_PNG}
    write_bytes_atomic(paths["png"], chart_png(report))
    write_bytes_atomic(paths["md"], markdown(report).encode())
    write_json_atomic(paths["json"], report)  # last: its presence means the others are current
    return paths
