"""Decode and validate images: every failure names the file at fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from meerbench.errors import DatasetError


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"Image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"Cannot decode image {path}: {exc}. The file is corrupt or not an image; "
            "replace it or remove it from the dataset."
        ) from None


def read_mask(path: Path) -> np.ndarray:
    """Read a binary occluder map as (H, W) bool."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) > 127
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"Cannot read mask map {path}: {exc}") from None
