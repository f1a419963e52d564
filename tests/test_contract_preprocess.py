"""The model input contract and the shared image decoding: the pieces every stage relies on."""

import json

import cv2
import numpy as np
import pytest

from edge.contract import ModelContract
from edge.atomic_files import write_bytes_atomic
from edge.errors import ImageDecodeError, UserError
from edge.preprocess import decode_image, frame_to_rgb, load_for_model, load_image, resize_for_model


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def test_contract_round_trip_and_labels(tmp_path):
    contract = ModelContract(input_size=96, threshold=0.37, extra={"run": "demo"})
    contract.save(tmp_path / "contract.json")
    loaded = ModelContract.load(tmp_path / "contract.json")
    assert loaded == contract
    assert loaded.label_name(0.36) == "no_crack"
    assert loaded.label_name(0.37) == "crack"
    assert loaded.with_threshold(0.9).label_index(0.5) == 0


@pytest.mark.parametrize("bad", [{"input_size": 8}, {"threshold": 1.5}, {"colour_order": "BGR"}])
def test_contract_rejects_what_the_models_cannot_take(bad):
    with pytest.raises(UserError):
        ModelContract(**bad)


def test_contract_rejects_unknown_keys_and_bad_json(tmp_path):
    path = tmp_path / "contract.json"
    path.write_text(json.dumps({"input_size": 64, "mean": [0.5]}))
    with pytest.raises(UserError, match=r"unknown field\(s\) mean"):
        ModelContract.load(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        ModelContract.load(path)
    with pytest.raises(UserError, match="not found"):
        ModelContract.load(tmp_path / "missing.json")


def test_colour_order_is_rgb_for_files_and_frames(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's BGR order
    rgb = decode_image(_png(bgr))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert frame_to_rgb(bgr)[0, 0].tolist() == [0, 0, 255]


def test_grayscale_rgba_and_16_bit_become_8_bit_rgb():
    gray = np.full((5, 5), 200, np.uint8)
    assert decode_image(_png(gray))[0, 0].tolist() == [200, 200, 200]
    bgra = np.zeros((5, 5, 4), np.uint8)
    bgra[..., 2] = 255
    bgra[..., 3] = 10
    assert decode_image(_png(bgra))[0, 0].tolist() == [255, 0, 0]
    deep = np.full((5, 5, 3), 65535, np.uint16)
    deep[..., 0] = 256 * 7  # blue channel 7 after >> 8
    decoded = decode_image(_png(deep))
    assert decoded.dtype == np.uint8 and decoded[0, 0].tolist() == [255, 255, 7]


def test_bad_files_raise_a_clear_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode_image(b"this is a text file, not a picture")
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(jpeg.tobytes()[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path / "missing.jpg")


def test_resize_squashes_to_the_model_size_with_raw_pixels(tmp_path):
    image = np.zeros((30, 60, 3), np.uint8)
    image[:, 30:] = 255  # right half white
    path = tmp_path / "wide.png"
    path.write_bytes(_png(image))
    model_input = load_for_model(path, 32)
    assert model_input.shape == (32, 32, 3) and model_input.dtype == np.uint8
    assert model_input[:, :15].max() == 0 and model_input[:, 17:].min() == 255  # squashed, not cropped
    # an image already at model size goes through untouched (no resampling blur)
    already = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_for_model(already, 32), already)


def _varied(shape, seed=0) -> np.ndarray:
    """Smooth gradients plus noise: resizing must average many different pixels."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) % 256
    image = ramp[..., None] if len(shape) == 3 else ramp
    noise = rng.integers(0, 40, shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("stored", [
    _varied((320, 480, 3)),                                   # a photo: BGR, odd scale factor
    _varied((50, 70)),                                        # grey, upscaled
    _varied((120, 90, 4)),                                    # with alpha
    (_varied((60, 80, 3)).astype(np.uint16) * 257),           # 16-bit: the general path
], ids=["bgr", "grey", "bgra", "16-bit"])
def test_load_for_model_gives_the_same_pixels_as_decode_then_resize(tmp_path, stored):
    """load_for_model resizes before converting colours (faster); training, conversion and the
    edge runner must still see exactly the pixels of the plain decode-then-resize path."""
    path = tmp_path / "image.png"
    path.write_bytes(_png(stored))
    for size in (32, 224):
        np.testing.assert_array_equal(load_for_model(path, size), resize_for_model(load_image(path), size))


def test_load_for_model_matches_on_a_real_photo(shared_data):
    photo = min((shared_data / "crackforest" / "image").glob("*.jpg"))
    np.testing.assert_array_equal(load_for_model(photo, 224), resize_for_model(load_image(photo), 224))


@pytest.mark.parametrize("dtype,scale,zero_point", [
    (np.uint8, 1.0, 0), (np.int8, 1.0, -128), (np.uint8, 1.0, 3), (np.int8, 0.5, -10), (np.uint8, 2.0, 0)])
def test_quantize_pixels_follows_the_tflite_formula(dtype, scale, zero_point):
    from edge.classifier import quantize_pixels

    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    info = np.iinfo(dtype)
    expected = np.clip(np.round(pixels / scale + zero_point), info.min, info.max).astype(dtype)
    got = quantize_pixels(pixels, np.dtype(dtype), scale, zero_point)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    assert quantize_pixels(pixels.astype(np.float32), np.dtype(dtype), scale, zero_point).tolist() == expected.tolist()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    write_bytes_atomic(target, b"old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", failing_fsync)
    with pytest.raises(OSError):
        write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no temporary left behind


def test_atomic_writes_get_normal_permissions_not_mkstemps_0600(tmp_path):
    """Models, sidecars and reports are copied to devices and shared: they follow the umask like
    any file the user writes (0644 under the usual 022), not the private 0600 of mkstemp."""
    import os
    import stat

    from edge.atomic_files import _UMASK, write_json_atomic

    write_json_atomic(tmp_path / "metrics.json", {"accuracy": 1.0})
    write_bytes_atomic(tmp_path / "model.tflite", b"model")
    for name in ("metrics.json", "model.tflite"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~_UMASK
