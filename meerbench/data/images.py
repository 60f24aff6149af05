"""Decode and validate images: every failure names the file at fault.

Any mode Pillow reads becomes 8-bit RGB with its full range kept: 16-bit greys are scaled
(65535 -> 255, as libpng strips 16 bits), palettes give their colours, 1-bit gives 0/255 and an
alpha channel is dropped (the stored colours are kept, as OpenCV's ``imread`` does). Images
beyond Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused before they
are decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from meerbench.errors import DatasetError

#: Modes whose samples are 16-bit (or wider) integers: Pillow's own conversion clips them.
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
#: Image files every reader and the masking command look for (by suffix, any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB."""
    return _decode(path, "image", "RGB")


def read_mask(path: Path) -> np.ndarray:
    """Read a binary occluder map as (H, W) bool: grey level above half of the full range."""
    return _decode(path, "mask map", "L") > 127


def _decode(path: Path, what: str, mode: str) -> np.ndarray:
    """The pixels of the image at ``path`` as 8-bit ``mode`` (``RGB`` or ``L``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return np.array(_eight_bit(img, path).convert(mode))
    except FileNotFoundError:
        raise DatasetError(f"{what.capitalize()} not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(
            f"Refused {what} {path}: {exc} It is far larger than a face image; shrink it or "
            "remove it from the dataset.") from None
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"Cannot decode {what} {path}: {exc}. The file is corrupt or not an image; "
            "replace it or remove it from the dataset."
        ) from None


def _eight_bit(img: Image.Image, path: Path) -> Image.Image:
    """16-bit greys as 8-bit ``L`` (rounded v * 255 / 65535); other modes as they are."""
    if img.mode == "F":
        raise DatasetError(f"Cannot read {path}: floating-point pixels have no defined range; "
                           "save it as an 8- or 16-bit image.")
    if img.mode not in WIDE_MODES:
        return img
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DatasetError(f"Cannot read {path}: {img.mode} pixels outside 0..65535 (a 32-bit "
                           "image); save it as an 8- or 16-bit image.")
    return Image.fromarray(((values * 255 + 32895) >> 16).astype(np.uint8), "L")
