"""Turning whatever image file a user has into the job's HWC uint8 pixels, or a one-line reason why not.

Handled: EXIF orientation (phone photos), grayscale/RGBA/LA/palette/CMYK/16-bit/float modes, transparency
(composited on white), truncated and corrupt files, zero-byte files, non-images, decompression bombs.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own guard: warns above MAX_IMAGE_PIXELS (~89 Mpx) and raises above twice that. Both are refused here,
# since a shard image is at most a few hundred pixels wide and such a file is an attack or a mistake.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class BadImage(Exception):
    """An image that cannot be used; the message says why in a few words."""


class MissingImage(BadImage):
    """The image file is not there (anymore, or not on this machine)."""


def load_pixels(load, shape: tuple[int, int, int]) -> np.ndarray:
    """Call `load()` (which returns a PIL image), convert and resize to `shape` (H, W, C); raise `BadImage`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = load()
            with image:
                if image.width * image.height > MAX_PIXELS:
                    raise BadImage(_bomb(image.width * image.height))
                image.load()
                return to_pixels(image, shape)
    except BadImage:
        raise
    except FileNotFoundError:
        raise MissingImage("file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit ..."
        raise BadImage(_bomb(int(claimed[1])) if claimed else f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image or an unsupported format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "corrupt/truncated"
        raise BadImage(f"corrupt or truncated image: {exc}") from None


def _bomb(pixels: int) -> str:
    return f"decompression bomb: {pixels:,} pixels claimed, more than {MAX_PIXELS:,}"


def to_pixels(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """An opened image -> (H, W, C) uint8, upright, in the job's channels, resized with bilinear filtering."""
    h, w, c = shape
    image = ImageOps.exif_transpose(image)
    image = _eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("L" if c == 1 else "RGB")  # CMYK, YCbCr, 1-bit, ... all convert here
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(h, w, c)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grayscale -> 8-bit `L` by scaling the value range (Pillow's convert would clip)."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255) else 255.0
    if image.mode == "F":
        top = 1.0 if values.max() <= 1.0 else 255.0
    return Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
