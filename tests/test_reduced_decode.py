"""Large JPEGs decoded at reduced scale (issue 17, edge/preprocess.py): the largest libjpeg
reduction that leaves the model its pixels, tiles in full-resolution boxes, the pixel limit
counting what is decoded, and JPEG decodes that run side by side while libjpeg's damage warnings
still reach the right photo (edge/stderr_capture.py).

The model is the session's 32 px "darkness" model (tests/conftest.py): dark images score high."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.image_header import ImageHeader, ImageTooLarge, check_decode_size
from edge.contract import ModelContract
from edge.errors import ImageDecodeError, UserError
from edge.preprocess import (ImageFile, _judge_jpeg, _without_damage, jpeg_reduction, load_for_model,
                             load_image, resize_for_model)
from edge.results_file import read_results
from edge.score import ScoreOptions, run_score
from edge.stderr_capture import call_capturing_stderr, call_watching_stderr
from edge.tiling import TileGrid
from photo_files import camera_exif, jpeg_with_exif

WAIT = 60  # seconds a test waits on an event before it fails (never reached when all is well)


def header(width: int, height: int, fmt: str = "jpeg", bytes_per_sample: int = 1) -> ImageHeader:
    return ImageHeader(fmt, width, height, 3, bytes_per_sample)


def texture(height: int, width: int, seed: int = 3) -> np.ndarray:
    """Smoothed noise around mid-grey: a photo's entropy, so damage lands in real Huffman data."""
    image = np.random.default_rng(seed).integers(60, 200, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(image, (5, 5), 0)


def write_jpeg(path: Path, image: np.ndarray, quality: int = 92) -> Path:
    assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def score(model: Path, inputs, out: Path, **options) -> dict:
    run_score(ScoreOptions(model=model, inputs=tuple(str(i) for i in inputs), out=out,
                           show_progress=False, **options), say=lambda line: None)
    return {row.path: row for row in read_results(out, "csv").rows}


# --- which reduction --------------------------------------------------------------------------

@pytest.mark.parametrize("width, height, side, needed, expected", [
    (4032, 3024, 3024, 224, 8),   # a 12 MP phone photo, whole: 504x378 still covers 224
    (4032, 3024, 1344, 224, 4),   # its tiles of --tiles 2x3 are 1344x1512: 1/8 would leave 168
    (4032, 3024, 447, 224, 1),    # a tile under twice the input size: full resolution
    (480, 320, 320, 224, 1),      # CrackForest at 224: never reduced
    (480, 320, 320, 64, 4),       # ... at 64: 120x80
    (8000, 6000, 6000, 224, 8),   # 48 MP
    (100, 100, 100, 32, 2),
])
def test_the_largest_reduction_that_still_leaves_the_model_its_pixels(width, height, side,
                                                                       needed, expected):
    assert jpeg_reduction(header(width, height), side, needed) == expected


def test_only_8_bit_jpegs_are_reduced():
    assert jpeg_reduction(header(4032, 3024, "png"), 3024, 224) == 1
    assert jpeg_reduction(header(4032, 3024, "tiff"), 3024, 224) == 1
    assert jpeg_reduction(header(4032, 3024, bytes_per_sample=2), 3024, 224) == 1  # 12-bit


def test_load_for_model_decodes_at_the_reduction_and_keeps_close_to_a_full_decode(tmp_path):
    image = texture(400, 520)
    path = write_jpeg(tmp_path / "photo.jpg", image)
    reduced = cv2.imdecode(np.fromfile(path, np.uint8),
                           cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION)
    assert reduced.shape == (50, 65, 3)  # libjpeg rounds up: ceil(400 / 8), ceil(520 / 8)
    with ImageFile(path) as opened:
        assert opened.reduction_for(min(opened.upright_size), 32) == 8
        assert np.array_equal(opened.decode(8), reduced[..., ::-1])
    model_input = load_for_model(path, 32)
    np.testing.assert_array_equal(model_input, resize_for_model(reduced[..., ::-1], 32))
    full = resize_for_model(load_image(path), 32).astype(int)
    assert np.abs(model_input.astype(int) - full).mean() < 2.0  # grey levels of 255


def test_a_real_photo_at_reduced_scale_keeps_close_to_its_full_decode(shared_data):
    photo = min((shared_data / "crackforest" / "image").glob("*.jpg"))  # 480x320: 1/4 at 64 px
    reduced = load_for_model(photo, 64).astype(int)
    full = resize_for_model(load_image(photo), 64).astype(int)
    assert 0 < np.abs(reduced - full).mean() < 2.0
    assert np.array_equal(load_for_model(photo, 224), resize_for_model(load_image(photo), 224))


# --- the contract records the decode a model was trained with -----------------------------------

def test_the_contract_records_the_decode_and_old_contracts_mean_full(tmp_path):
    assert ModelContract().decode == "reduced-jpeg"  # what training writes now
    path = tmp_path / "contract.json"
    ModelContract(input_size=64).save(path)
    assert json.loads(path.read_text())["decode"] == "reduced-jpeg"
    assert ModelContract.load(path).decode == "reduced-jpeg"
    path.write_text(json.dumps({"input_size": 64, "threshold": 0.4}))  # written before the field
    assert ModelContract.load(path).decode == "full"
    path.write_text(json.dumps({"input_size": 64, "decode": "pillow-draft"}))
    with pytest.raises(UserError, match="unsupported contract: decode 'pillow-draft'"):
        ModelContract.load(path)


def test_score_decodes_the_way_the_models_contract_says(edge_models, tmp_path):
    from edge.classifier import CrackClassifier
    from edge.score import scored_rows

    path = write_jpeg(tmp_path / "photo.jpg", texture(400, 520))
    classifier = CrackClassifier(edge_models["fp32"])
    assert classifier.contract.decode == "reduced-jpeg"  # converted by this crackkit
    expected = {"reduced-jpeg": load_for_model(path, 32), "full": resize_for_model(load_image(path), 32)}
    assert not np.array_equal(expected["reduced-jpeg"], expected["full"])
    assert np.array_equal(load_for_model(path, 32, decode="full"), expected["full"])
    for decode, pixels in expected.items():
        classifier.contract = replace(classifier.contract, decode=decode)
        (row,), = list(scored_rows(classifier, [path], TileGrid()))
        assert row.probability == pytest.approx(classifier.predict_one(pixels), abs=1e-6), decode


# --- tiles -------------------------------------------------------------------------------------

def test_tiles_of_a_reduced_decode_are_reported_in_full_resolution_boxes(edge_models, tmp_path):
    """1000x700 in 2x2 tiles of 500x350: decoded at 1/8 for the 32 px model. A dark patch in the
    lower right tile must score there, in the boxes a full decode reports."""
    image = np.full((700, 1000, 3), 200, np.uint8)
    image[360:700, 510:1000] = 15
    path = write_jpeg(tmp_path / "photo.jpg", image)
    rows = score(edge_models["int8"], [path], tmp_path / "r.csv", tiles="2x2")
    tiles = rows[str(path)].tiles
    boxes = [list(tile[:4]) for tile in tiles]
    assert boxes == [box.as_list() for box in TileGrid(2, 2).boxes(700, 1000)]
    probabilities = [tile[4] for tile in tiles]
    assert probabilities[3] > 0.9 and max(probabilities[:3]) < 0.5


def test_tile_size_tiles_keep_their_pixels_and_boxes(edge_models, tmp_path):
    """--tile-size 96 on 768x512: 1/2 leaves 48 px tiles (>= 32), 1/4 would leave 24."""
    image = texture(512, 768)
    path = write_jpeg(tmp_path / "photo.jpg", image)
    with ImageFile(path) as opened:
        assert opened.reduction_for(96, 32) == 2
    rows = score(edge_models["fp32"], [path], tmp_path / "r.csv", tile_size=96, stride=96)
    tiles = rows[str(path)].tiles
    assert [list(tile[:4]) for tile in tiles] == [box.as_list() for box in
                                             TileGrid(tile_size=96, stride=96).boxes(512, 768)]
    from edge.classifier import CrackClassifier
    from edge.tiling import score_frame

    full = score_frame(CrackClassifier(edge_models["fp32"]), load_image(path), TileGrid(tile_size=96, stride=96))
    assert max(abs(tile[4] - t.probability) for tile, t in zip(tiles, full.tiles)) < 0.02


def test_a_portrait_photo_in_tiles_is_turned_once_and_boxed_upright(edge_models, tmp_path):
    stored = np.full((600, 800, 3), 200, np.uint8)
    stored[:, 600:] = 10  # dark band on the right of the stored pixels: the bottom when upright
    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg_with_exif(stored, camera_exif(orientation=6)))
    rows = score(edge_models["int8"], [path], tmp_path / "r.csv", tiles="2x1")
    top, bottom = rows[str(path)].tiles
    assert list(top[:4]) == [0, 0, 600, 400] and list(bottom[:4]) == [0, 400, 600, 800]
    assert bottom[4] > 0.5 > top[4]


# --- the pixel limit counts the pixels decoded --------------------------------------------------

def test_the_pixel_limit_counts_the_pixels_actually_decoded(edge_models, tmp_path):
    """2048x1536 (3.1 MP) under --max-pixels 100000: the JPEG decodes at 1/8 (49152 pixels) and is
    scored, whole and in 2x2 tiles; the same picture as a PNG is refused, and so is the JPEG when
    its 96 px tiles need 1/2 scale (786432 pixels)."""
    image = texture(1536, 2048)
    jpeg = write_jpeg(tmp_path / "big.jpg", image)
    png = tmp_path / "big.png"
    assert cv2.imwrite(str(png), image)
    for options in ({}, {"tiles": "2x2"}):
        rows = score(edge_models["int8"], [jpeg, png], tmp_path / "r.csv", max_pixels=100_000,
                     overwrite=True, **options)
        assert rows[str(jpeg)].error == "" and rows[str(jpeg)].probability is not None
        assert rows[str(png)].error == ("image too large: 2048x1536 is 3.1 MP, over the "
                                        "--max-pixels limit of 0.1 MP")
    rows = score(edge_models["int8"], [jpeg], tmp_path / "r.csv", max_pixels=100_000,
                 overwrite=True, tile_size=96)
    assert rows[str(jpeg)].error == ("image too large: 2048x1536 is 3.1 MP (0.8 MP decoded at "
                                     "1/2), over the --max-pixels limit of 0.1 MP")


def test_size_check_messages_name_the_scale():
    with pytest.raises(ImageTooLarge, match=r"^image too large: 8000x6000 is 48.0 MP \(0.8 MP "
                                            r"decoded at 1/8\), over the --max-pixels limit of 0.5 MP$"):
        check_decode_size(header(8000, 6000), 500_000, reduction=8)
    check_decode_size(header(8000, 6000), 1_000_000, reduction=8)
    progressive = ImageHeader("jpeg", 8000, 6000, 3, 1, working_bytes=300_000_000)
    with pytest.raises(ImageTooLarge, match=r"^image too large: decoding this 8000x6000 JPEG at "
                                            r"1/8 scale \(1.0 MB file\) needs 306 MB"):
        check_decode_size(progressive, 10_000_000, reduction=8, file_bytes=1_000_000)


def test_the_decode_cost_shrinks_with_the_reduction(tmp_path):
    path = write_jpeg(tmp_path / "photo.jpg", texture(512, 768))
    with ImageFile(path) as opened:
        costs = [opened.cost(reduction) - opened.size for reduction in (1, 2, 4, 8)]
    assert costs[0] == 2 * 768 * 512 * 3  # the decoded image, held twice while decoding
    assert costs == [costs[0] // 4 ** step for step in range(4)]


def test_a_reduction_is_only_asked_of_a_jpeg(tmp_path):
    png = tmp_path / "photo.png"
    assert cv2.imwrite(str(png), texture(64, 64))
    with ImageFile(png) as opened, pytest.raises(ValueError, match="cannot be decoded at 1/2"):
        opened.decode(2)


# --- decodes side by side, damage still caught ----------------------------------------------------

def test_watched_calls_run_together_and_see_what_was_written_meanwhile(capfd):
    """Two watched calls are inside their functions at once (a lock around them would never let
    the barrier open); the quiet one's window holds what the other wrote during it; the stripped
    message never reaches the real stderr, the rest does, once."""
    barrier = threading.Barrier(2, timeout=WAIT)
    written = threading.Event()
    windows: dict[str, str] = {}

    def noisy() -> None:
        barrier.wait()
        os.write(2, b"someone else's ")
        os.write(2, b"Corrupt JPEG data: 3 extraneous bytes before marker 0xd9\n")
        os.write(2, b"line\n")
        written.set()
        barrier.wait()

    def quiet() -> None:
        barrier.wait()
        assert written.wait(WAIT)
        barrier.wait()

    def run(name, function) -> None:
        windows[name] = call_watching_stderr(function, strip=_without_damage)[1]

    threads = [threading.Thread(target=run, args=item) for item in (("noisy", noisy), ("quiet", quiet))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert "Corrupt JPEG data" in windows["noisy"] and "Corrupt JPEG data" in windows["quiet"]
    assert capfd.readouterr().err == "someone else's line\n"
    _, alone = call_capturing_stderr(lambda: os.write(2, b"mine\n"))
    assert alone == "mine\n" and capfd.readouterr().err == ""


def test_a_damage_warning_behind_another_threads_unfinished_line_is_still_the_verdict(capfd):
    data = cv2.imencode(".jpg", texture(64, 64))[1].tobytes()
    caught = "progress 50%Corrupt JPEG data: premature end of data segment\nWarning: unknown JFIF revision number 1.05\n"
    with pytest.raises(ImageDecodeError, match="^damaged JPEG: Corrupt JPEG data: premature end of data segment$"):
        _judge_jpeg(np.zeros((8, 8, 3), np.uint8), caught, data, ImageHeader("jpeg", 64, 64, 3, 1))
    assert capfd.readouterr().err == "progress 50%Warning: unknown JFIF revision number 1.05\n"
    _judge_jpeg(np.zeros((8, 8, 3), np.uint8), "Corrupt JPEG data: bad ICC marker\n", data,
                ImageHeader("jpeg", 64, 64, 3, 1))  # harmless: passed on, not a verdict
    assert capfd.readouterr().err == "Corrupt JPEG data: bad ICC marker\n"


def test_damaged_and_intact_photos_decoded_side_by_side_each_get_their_own_verdict(
        edge_models, tmp_path, capfd):
    folder = tmp_path / "photos"
    folder.mkdir()
    expected = {}
    for index in range(12):
        data = cv2.imencode(".jpg", texture(300, 400, seed=index), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        middle = len(data) // 2
        if index % 3 == 0:
            data, verdict = data[:middle] + data[middle + 500:], "damaged JPEG: Corrupt JPEG data"
        elif index % 3 == 1:
            data, verdict = data[:middle], "truncated JPEG"
        else:
            verdict = ""
        path = folder / f"{index:02d}.jpg"
        path.write_bytes(data)
        expected[str(path)] = verdict
    rows = score(edge_models["int8"], [folder], tmp_path / "r.csv", decode_workers=4, batch_size=2)
    for path, verdict in expected.items():
        if verdict:
            assert rows[path].error.startswith(verdict), rows[path]
        else:
            assert rows[path].error == "" and rows[path].probability is not None
            by_itself = score(edge_models["int8"], [path], tmp_path / "alone.csv", overwrite=True)
            assert by_itself[path].probability == rows[path].probability
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # the verdicts are rows, not noise


# --- the benchmark runs ---------------------------------------------------------------------------

def test_the_survey_photos_benchmark_writes_its_figures(edge_models, tmp_path):
    from benchmarks import survey_photos

    out = tmp_path / "survey.json"
    survey_photos.main(["--photo-size", "300", "400", "--photos", "3", "--decode-photos", "1",
                        "--rounds", "1", "--runs", "2", "--skip-memory", "--parity-photos", "2",
                        "--model", str(edge_models["int8"]), "--parity-model", str(edge_models["fp32"]),
                        "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["photo_size"] == [400, 300] and saved["reduction"] == 8  # 300 >= 8 x 32
    assert saved["limit_ms"] == pytest.approx(saved["bare_median_ms"]
                                              + saved["reduced_decode_ms"] / saved["machine"]["cores"])
    assert saved["score_limit_ratio"] == pytest.approx(saved["rounds"][0]["score_fps"]
                                                       / saved["rounds"][0]["limit_fps"])
    (parity,) = saved["decode_parity"]
    assert parity["input_size"] == 32 and parity["sets"]["survey mosaics"]["photos"] == 2
    assert 0 <= parity["sets"]["survey mosaics"]["max_abs_dp"] < 0.05
    assert saved["machine"]["other_processes_cores"] >= 0
