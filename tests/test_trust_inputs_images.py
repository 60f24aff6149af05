"""Issue 12, untrusted images: every mode decodes to the right 8-bit RGB; bombs and broken files
are a DatasetError naming the file, never a traceback or an all-white face."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from meerbench.data.images import read_mask, read_rgb
from meerbench.errors import DatasetError


def png_header_only(path, width, height):
    """A PNG that declares ``width`` x ``height`` 1-bit pixels but holds almost no data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("value", "expected"), [(32768, 128), (65535, 255), (257 * 100, 100),
                                                 (0, 0)])
def test_16_bit_grey_png_keeps_its_level(tmp_path, value, expected):
    path = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 4), value, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert (read_rgb(path) == expected).all()


def test_16_bit_mask_map_is_thresholded_at_half_its_range(tmp_path):
    levels = np.array([[0, 25700, 32768, 65535]], np.uint16)  # 8-bit 0, 100, 128, 255
    Image.fromarray(levels).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").tolist() == [[False, False, True, True]]


def test_32_bit_and_float_images_are_refused_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 70000, np.int32), "I").save(tmp_path / "i32.tif")
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(tmp_path / "f.tif")
    for name in ("i32.tif", "f.tif"):
        with pytest.raises(DatasetError, match=str(tmp_path / name)):
            read_rgb(tmp_path / name)


def test_other_modes_give_their_colours(tmp_path):
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=1)
    Image.new("LA", (4, 4), (100, 0)).save(tmp_path / "la.png")
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "one.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    expected = {"p.png": (200, 100, 50), "la.png": (100, 100, 100), "rgba.png": (10, 20, 30),
                "one.png": (255, 255, 255)}
    for name, colour in expected.items():
        rgb = read_rgb(tmp_path / name)
        assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3) and (rgb == colour).all(), name
    assert (np.abs(read_rgb(tmp_path / "cmyk.jpg").astype(int) - 255) <= 2).all()


def test_decompression_bomb_is_a_dataset_error_naming_the_file(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DatasetError, match=f"Refused image {bomb}"):
        read_rgb(bomb)
    with pytest.raises(DatasetError, match=f"Refused mask map {bomb}"):
        read_mask(bomb)


def test_image_over_the_pixel_limit_is_refused_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")  # 1600 px: Pillow only warns
    with pytest.raises(DatasetError, match=f"Refused image {tmp_path / 'big.png'}"):
        read_rgb(tmp_path / "big.png")


def test_truncated_and_non_image_files_name_the_file(tmp_path):
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 30])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.jpg", "cut.png", "text.png"):
        with pytest.raises(DatasetError, match=f"Cannot decode image {tmp_path / name}"):
            read_rgb(tmp_path / name)
    with pytest.raises(DatasetError, match=f"Image not found: {tmp_path / 'none.png'}"):
        read_rgb(tmp_path / "none.png")
