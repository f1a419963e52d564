"""Site calibration without retraining: `crack-edge calibrate` on the session's converted darkness
models (tests/conftest.py: a grey level L scores sigmoid(-6 (L - 128) / 127.5), threshold 0.5), and
`crack calibrate` on the session's tiny run.

The "site" is a surface darker than the model knows: its clean photos (grey 100-115) score 0.65-0.79,
above the model's threshold, while its cracks (grey 40-70) score higher still. The model ranks the
site perfectly; only its threshold is wrong there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.calibrate import CalibrateOptions, run_calibrate
from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.golden import GoldenSet, golden_path
from edge.metrics import choose_threshold
from edge.model_metadata import file_sha256, read_model_card, sidecar_path
from edge.verify import VerifyOptions, verify_model
from fixtures_training import run_crack

CRACK_LEVELS = (40, 46, 52, 58, 64, 70)
CLEAN_LEVELS = (100, 103, 106, 109, 112, 115)
PROJECT = Path(__file__).resolve().parents[1]


def darkness(level: int) -> float:
    return float(1 / (1 + np.exp(6 * (level - 128) / 127.5)))


def write_site(folder: Path, crack=CRACK_LEVELS, clean=CLEAN_LEVELS) -> Path:
    for name, levels in (("crack", crack), ("no_crack", clean)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for level in levels:
            cv2.imwrite(str(folder / name / f"grey_{level}.png"), np.full((40, 40, 3), level, np.uint8))
    return folder


def files_of(model: Path) -> dict[str, str]:
    """sha256 of the model and the files beside it that belong to it."""
    return {path.name: file_sha256(path) for path in (model, sidecar_path(model), golden_path(model))
            if path.is_file()}


def crack_edge(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=PROJECT)


@pytest.fixture
def site(tmp_path) -> Path:
    return write_site(tmp_path / "bridge")


def test_choose_threshold_names_the_data_it_chose_on():
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.6, 0.7, 0.8, 0.9])
    threshold, rule = choose_threshold(labels, scores)  # midway between the weakest crack and the next score
    assert (threshold, rule) == (pytest.approx(0.75), "best F1 on the validation split")
    threshold, rule = choose_threshold(labels, scores, 0.5, on="4 photos")
    assert (threshold, rule) == (pytest.approx(0.85), "highest threshold with recall >= 0.5 on 4 photos")
    assert choose_threshold(np.array([1, 0]), np.array([0.2, 0.3]))[0] == 0.2  # no lower score: the score
    assert choose_threshold(np.array([1, 1]), np.array([0.2, 0.3]), on="the site")[0] == 0.5


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_calibrate_writes_a_copy_with_the_sites_threshold_and_never_touches_the_model(edge_models, site, tmp_path, mode):
    model = tmp_path / f"model_{mode}.tflite"  # a private copy of the session's model and its files
    for name, _ in files_of(edge_models[mode]).items():
        (tmp_path / name).write_bytes((edge_models[mode].parent / name).read_bytes())
    before = files_of(model)
    assert len(before) == 3  # model, sidecar, golden inputs

    result = run_calibrate(CalibrateOptions(model=model, data=(str(site),), show_progress=False))

    assert files_of(model) == before  # the original is untouched
    copy = tmp_path / f"model_{mode}_bridge.tflite"
    assert result.model == copy and [p.name for p in result.written] == [
        copy.name, golden_path(copy).name, sidecar_path(copy).name]
    found = read_model_card(copy)
    assert found.embedded and found.sidecar  # both written, and they agree (else read_model_card refuses)
    site_scores = CrackClassifier(model).predict(
        np.stack([np.full((32, 32, 3), level, np.uint8) for level in CRACK_LEVELS + CLEAN_LEVELS]))
    contract = found.card.contract
    weakest_crack, strongest_clean = site_scores[:len(CRACK_LEVELS)].min(), site_scores[len(CRACK_LEVELS):].max()
    assert strongest_clean > 0.6 > 0.5  # the site's clean photos are cracks at the model's threshold
    assert contract.threshold == pytest.approx((weakest_crack + strongest_clean) / 2)  # midway between
    assert contract.threshold_rule == (
        "best F1 on 12 labelled photos of site bridge, right on 6 of the 6 images it decides unlike 0.5")
    record = contract.extra["site_calibration"]
    assert (record["site"], record["photos"], record["crack"], record["no_crack"]) == ("bridge", 12, 6, 6)
    assert record["previous_threshold"] == 0.5
    assert record["before"]["accuracy"] == 0.5 and record["after"]["accuracy"] == 1.0
    assert contract.extra["run"] == read_model_card(model).card.contract.extra["run"]  # provenance kept
    original_card = read_model_card(model).card
    assert (found.card.source_run, found.card.mode, found.card.details) == (
        original_card.source_run, original_card.mode, original_card.details)

    lines = result.lines()
    assert lines[1].startswith("before: threshold 0.5000: accuracy 0.5000")
    assert lines[2].startswith(f"after:  threshold {contract.threshold:.4f} (best F1 on 12") \
        and "accuracy 1.0000" in lines[2] and "false alarms 0 of 6 clean" in lines[2]
    assert any(line.startswith("warning: fewer than 10 photos of a class") for line in lines)

    # the golden inputs travel with the copy, judged at the new threshold; the device check passes
    golden, original = GoldenSet.load(golden_path(copy)), GoldenSet.load(golden_path(model))
    assert golden.threshold == contract.threshold != original.threshold
    assert np.array_equal(golden.images, original.images) and np.array_equal(golden.build, original.build)
    assert found.card.golden.sha256 == file_sha256(golden_path(copy))
    assert verify_model(VerifyOptions(model=copy)).passed
    # scoring with the copy labels the site right, with no option
    labels = CrackClassifier(copy).contract.label_index
    assert [labels(p) for p in site_scores] == [1] * 6 + [0] * 6


def test_target_recall_and_a_named_site_and_out(edge_models, site, tmp_path):
    out = tmp_path / "deployed" / "bridge12.tflite"
    result = run_calibrate(CalibrateOptions(model=edge_models["fp32"], data=(str(site),), out=out,
                                            site="Bridge 12", target_recall=0.5, show_progress=False))
    contract = read_model_card(out).card.contract
    cracks = sorted(darkness(level) for level in CRACK_LEVELS)  # the 3 darkest of 6 reach recall 0.5:
    assert contract.threshold == pytest.approx((cracks[3] + cracks[2]) / 2, abs=1e-4)  # midway to the 4th
    assert contract.threshold_rule == "highest threshold with recall >= 0.5 on 12 labelled photos of site Bridge 12"
    assert contract.extra["site_calibration"]["target_recall"] == 0.5
    assert result.calibration.after["recall"] == 0.5 and result.calibration.after["precision"] == 1.0
    assert not (edge_models["fp32"].parent / "model_fp32_Bridge_12.tflite").exists()


@pytest.mark.parametrize("clean_above, kept", [((115,), True), ((103, 109, 115), True),
                                               ((100, 103, 106, 109, 112, 115), False)])
def test_the_models_threshold_stays_unless_the_sites_photos_show_a_clearly_better_one(
        edge_models, tmp_path, clean_above, kept):
    """Clean photos that score above the model's threshold, among others well below it: with one or
    three of them the best-F1 threshold is right on every photo it decides unlike 0.5, but so few
    could go either way by chance (a sign test, as training's rule), so 0.5 stays; with six it moves.
    Either way the copy is written, recording what was measured."""
    clean = clean_above + (150, 160, 170, 180, 190, 200)[:12 - 6 - len(clean_above)]
    site = write_site(tmp_path / "deck", clean=clean)
    out = tmp_path / "deck.tflite"
    result = run_calibrate(CalibrateOptions(model=edge_models["fp32"], data=(str(site),), out=out,
                                            show_progress=False))
    contract = read_model_card(out).card.contract
    differ = len(clean_above)
    if kept:
        assert contract.threshold == 0.5
        assert contract.threshold_rule.startswith("0.5 kept: the best F1 threshold on 12 labelled photos "
                                                  "of site deck (")
        assert contract.threshold_rule.endswith(
            f"is right on {differ} of the {differ} images it decides unlike 0.5, not clearly better")
        assert result.calibration.after == result.calibration.before
        assert any(line.startswith("the threshold is unchanged: these photos do not show a better one "
                                   "clearly") for line in result.lines())
    else:
        assert contract.threshold > max(darkness(level) for level in clean_above)
        assert contract.threshold_rule.endswith(f"right on {differ} of the {differ} images it decides unlike 0.5")
        assert result.calibration.after["accuracy"] == 1.0
        assert not any("threshold is unchanged" in line for line in result.lines())
    assert contract.extra["site_calibration"]["previous_threshold"] == 0.5


def test_a_model_without_golden_inputs_or_sidecar_gives_a_copy_without_them(edge_models, site, tmp_path):
    model = tmp_path / "bare.tflite"
    model.write_bytes(edge_models["int8"].read_bytes())  # the card inside, no sidecar, no golden file
    result = run_calibrate(CalibrateOptions(model=model, data=(str(site),), show_progress=False))
    assert [path.name for path in result.written] == ["bare_bridge.tflite"]
    assert any("golden inputs model_int8.golden.npz are not beside bare.tflite" in line for line in result.lines())
    found = read_model_card(tmp_path / "bare_bridge.tflite")
    assert (found.embedded, found.sidecar, found.card.golden) == (True, False, None)


@pytest.mark.parametrize("arguments, message", [
    (["--out", "{model}"], "is the model itself: calibrate writes a copy and never changes the original"),
    (["--out", "{tmp}/copy.bin"], "the calibrated model must be a .tflite file"),
    (["--out", "{tmp}/taken.tflite"], "taken.tflite exists; pass --overwrite to replace it"),
    (["--target-recall", "0"], "--target-recall must be in (0, 1], got 0.0"),
])
def test_usage_errors_are_one_line_and_exit_2(edge_models, site, tmp_path, arguments, message):
    (tmp_path / "taken.tflite").write_bytes(b"someone's file")
    model = edge_models["fp32"]
    before = files_of(model)
    args = [a.format(model=model, tmp=tmp_path) for a in arguments]
    result = crack_edge("calibrate", "--model", model, "--data", site, "--no-progress", *args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert files_of(model) == before and (tmp_path / "taken.tflite").read_bytes() == b"someone's file"


def test_a_site_with_one_class_or_no_card_is_refused(edge_models, tmp_path):
    only_cracks = write_site(tmp_path / "cracks_only", clean=())
    result = crack_edge("calibrate", "--model", edge_models["fp32"], "--data", only_cracks, "--no-progress")
    assert result.returncode == 2
    assert "error: site cracks_only: no no_crack photo among the 6 labelled; calibration needs both classes" \
        in result.stderr
    bare = tmp_path / "nocard.tflite"  # no card inside, no sidecar: no contract at all
    bare.write_bytes(_strip_card(edge_models["fp32"]))
    result = crack_edge("calibrate", "--model", bare, "--data", write_site(tmp_path / "s"), "--no-progress")
    assert result.returncode == 2 and "nocard.tflite has no model card" in result.stderr


def _strip_card(model: Path) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model.read_bytes()), 0)
    tree.metadata = [m for m in tree.metadata or [] if m.name not in (b"crackkit.contract", "crackkit.contract")]
    builder = flatbuffers.Builder(1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.slow
def test_crack_calibrate_writes_a_new_run_with_the_sites_threshold(tiny_run, tmp_path):
    from convert.source import check_run

    site = write_site(tmp_path / "wall")
    before = {path.name: file_sha256(path) for path in tiny_run.iterdir() if path.is_file()}
    out = tmp_path / "runs" / "tiny-wall"
    result = run_crack("calibrate", "--run", tiny_run, "--data", site, "--out", out)
    assert result.exit_code == 0, result.output
    assert {path.name: file_sha256(path) for path in tiny_run.iterdir() if path.is_file()} == before
    assert file_sha256(out / "model.keras") == before["model.keras"]
    contract = json.loads((out / "contract.json").read_text())
    calibration = json.loads((out / "calibration.json").read_text())
    assert contract["threshold"] == calibration["threshold"]
    assert contract["extra"]["site_calibration"]["photos"] == 12 and calibration["source_run"] == "tiny"
    assert "on 12 labelled photos of site wall" in contract["extra"]["threshold_rule"]
    assert calibration["previous_threshold"] == json.loads((tiny_run / "contract.json").read_text())["threshold"]
    assert "before: threshold" in result.output and "after:  threshold" in result.output
    assert check_run(out).contract.threshold == contract["threshold"]  # `crack convert` takes it
    with pytest.raises(UserError, match="tiny-wall exists; choose another --out"):  # never overwrites a run
        run_crack("calibrate", "--run", tiny_run, "--data", site, "--out", out)
