"""Radiograph bytes to pixels: type sniffing, safe decoding with a pixel limit, 16-bit aware conversion."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raiox.errors import TooLarge, Unprocessable, UnsupportedFormat

DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(Unprocessable):
    """Bytes that are not a usable radiograph; the message says why."""


class UnsupportedImage(UnsupportedFormat, ImageError):
    """Not one of the accepted formats (JPEG, PNG, TIFF), whatever its name or declared type says."""


class ImageTooLarge(TooLarge, ImageError):
    """More pixels than the limit (decompression-bomb guard)."""


@dataclass(frozen=True)
class ImageKind:
    format: str
    extension: str
    content_type: str


@dataclass(frozen=True)
class ImageInfo:
    kind: ImageKind
    width: int
    height: int
    mode: str
    # Millimetres per pixel (between rows, between columns) when the file says it (DICOM's PixelSpacing); the
    # review page's rulers then read millimetres. None for JPEG, PNG and TIFF.
    pixel_spacing_mm: tuple[float, float] | None = None


_JPEG = ImageKind("JPEG", ".jpg", "image/jpeg")
_PNG = ImageKind("PNG", ".png", "image/png")
_TIFF = ImageKind("TIFF", ".tif", "image/tiff")


def sniff(data: bytes) -> ImageKind:
    """The image type from its leading bytes; never from a file name or a Content-Type header."""
    if data.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _TIFF
    if not data:
        raise UnsupportedImage("the file is empty")
    raise UnsupportedImage("not a JPEG, PNG or TIFF image")


def _open(data: bytes, max_pixels: int) -> tuple[ImageKind, Image.Image]:
    kind = sniff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind.format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"image exceeds {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {kind.format} image: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height}, over the limit of {max_pixels} pixels")
    if getattr(image, "n_frames", 1) > 1:
        raise UnsupportedImage("multi-frame images are not accepted; send one radiograph per file")
    return kind, image


def _decode(data: bytes, max_pixels: int, draft_size: int | None = None) -> tuple[ImageKind, Image.Image]:
    kind, image = _open(data, max_pixels)
    if draft_size and kind is _JPEG:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; keep at least draft_size pixels a side.
        image.draft(image.mode, (draft_size, draft_size))
    try:
        image.load()  # full decode: truncated or corrupt data fails here, not later in a worker
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {kind.format} image: {exc}") from None
    return kind, image


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Check that `data` fully decodes as an accepted image within the pixel limit; return what it is."""
    kind, image = _decode(data, max_pixels)
    return ImageInfo(kind, image.width, image.height, image.mode)


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """Stretch 16-bit and 32-bit greyscale to 0–255 over the values the film actually uses."""
    pixels = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(pixels, [0.1, 99.9])
    if high <= low:
        high = low + 1
    scaled = np.clip((pixels - low) * (255.0 / (high - low)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def load_radiograph(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, 16-bit greyscale windowed, not clipped.

    `draft_size` lets JPEG decoding skip detail the encoder will throw away (it never goes below it)."""
    _, image = _decode(data, max_pixels, draft_size)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit_grey(image)
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def crop_to_implant(image: Image.Image, *, margin: float = 0.15) -> Image.Image:
    """The film cropped to its most radiopaque object (metal) plus a margin, as a square around its centre;
    the whole film when nothing stands out (the metal must be clearly brighter than the rest)."""
    grey = np.asarray(image.convert("L").reduce(4), dtype=np.float32)
    if grey.size == 0:
        return image
    level = np.percentile(grey, 99.5)
    if level - np.median(grey) < 40:  # no object clearly brighter than bone and soft tissue
        return image
    rows, cols = np.nonzero(grey >= level * 0.9)
    top, bottom, left, right = rows.min() * 4, (rows.max() + 1) * 4, cols.min() * 4, (cols.max() + 1) * 4
    side = max(bottom - top, right - left) * (1 + 2 * margin)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    box = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
    return image.crop(box)  # outside the film PIL fills black, like the letterbox
