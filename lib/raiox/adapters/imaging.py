"""Radiograph bytes to pixels: type sniffing, safe decoding with a pixel limit, 16-bit aware conversion, DICOM."""

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
    """Not one of the accepted formats (JPEG, PNG, TIFF, DICOM), whatever its name or declared type says."""


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
    # review page's rulers then read millimetres. None for JPEG, PNG and TIFF, and DICOM files without it.
    pixel_spacing_mm: tuple[float, float] | None = None


_JPEG = ImageKind("JPEG", ".jpg", "image/jpeg")
_PNG = ImageKind("PNG", ".png", "image/png")
_TIFF = ImageKind("TIFF", ".tif", "image/tiff")
DICOM = ImageKind("DICOM", ".dcm", "application/dicom")


def sniff(data: bytes) -> ImageKind:
    """The image type from its leading bytes; never from a file name or a Content-Type header."""
    if data.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _TIFF
    if data[128:132] == b"DICM":  # DICOM Part 10: a 128-byte preamble, then the prefix
        return DICOM
    if not data:
        raise UnsupportedImage("the file is empty")
    raise UnsupportedImage("not a JPEG, PNG, TIFF or DICOM image")


def _dicom_number(value: object) -> float:
    """A DICOM numeric element that may hold several values (window centre/width): the first."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


# What pydicom raises on malformed, truncated or inconsistent files (it has no single base exception).
_DICOM_ERRORS = (AttributeError, KeyError, IndexError, TypeError, ValueError, EOFError, OSError, RuntimeError,
                 NotImplementedError, OverflowError, MemoryError)


def _decode_dicom(data: bytes, max_pixels: int) -> Image.Image:
    """A single-frame DICOM image as 8-bit greyscale (or RGB): the modality rescale (slope and intercept), then
    the VOI LUT or the window when the header has one (else the values the film uses are stretched), and
    MONOCHROME1 inverted so that metal is white. Pixel spacing (PixelSpacing, else ImagerPixelSpacing) goes
    to `image.info["pixel_spacing_mm"]`. Multi-frame files are refused, not reduced to their first frame: a
    film series in one file is not one radiograph, and picking a frame for the sender could match the wrong
    implant. Compressed transfer syntaxes decode only where pydicom has a decoder installed (none is shipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on odd but readable files
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        syntax = ds.file_meta.TransferSyntaxUID
        if "PixelData" not in ds:
            raise ImageError("cannot decode DICOM image: it holds no pixel data (not an image, e.g. a report)")
    except ImageError:
        raise
    except (InvalidDicomError, *_DICOM_ERRORS) as exc:
        raise ImageError(f"cannot decode DICOM image: {exc or type(exc).__name__}") from None
    if rows < 1 or columns < 1 or rows * columns > max_pixels:
        raise ImageTooLarge(f"image is {columns}x{rows}, over the limit of {max_pixels} pixels")
    if frames > 1:
        raise UnsupportedImage(f"multi-frame images are not accepted (this DICOM file holds {frames} frames); "
                               "send one radiograph per file")
    try:
        compressed_without_decoder = syntax.is_compressed and not get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):  # a syntax pydicom has no decoder for at all
        compressed_without_decoder = True
    if compressed_without_decoder:
        raise UnsupportedImage(f"DICOM compressed as {syntax.name} cannot be decoded here; export the film "
                               "uncompressed (Explicit VR Little Endian), or as PNG or TIFF")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if photometric.startswith("MONOCHROME") and pixels.ndim == 2:
            values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
            if "VOILUTSequence" in ds:  # a table indexed by the (integer) rescaled values
                values = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0), dtype=np.float64)
                low, high = float(values.min()), float(values.max())
            elif "WindowCenter" in ds and "WindowWidth" in ds:
                centre, width = _dicom_number(ds.WindowCenter), max(_dicom_number(ds.WindowWidth), 1.0)
                low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2  # PS3.3 C.11.2.1.2
            else:
                low, high = (float(v) for v in np.percentile(values, [0.1, 99.9]))
            scaled = np.clip((values - low) * (255.0 / max(high - low, 1e-6)), 0, 255)
            if photometric == "MONOCHROME1":
                scaled = 255 - scaled  # stored with low values white
            image = Image.fromarray(scaled.astype(np.uint8), mode="L")
        elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3 and pixels.shape[-1] == 3:
            if photometric.startswith("YBR"):
                from pydicom.pixels import convert_color_space

                pixels = convert_color_space(pixels, photometric, "RGB")
            image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB")
        else:
            raise UnsupportedImage(f"DICOM photometric interpretation {photometric} is not supported")
    except ImageError:
        raise
    except _DICOM_ERRORS as exc:
        raise ImageError(f"cannot decode DICOM image: {exc or type(exc).__name__}") from None
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is not None:
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])
            if 0 < row_mm < 100 and 0 < col_mm < 100:  # the schema's check; a nonsense value is dropped
                image.info["pixel_spacing_mm"] = (row_mm, col_mm)
        except (TypeError, ValueError, IndexError):
            pass  # a malformed spacing is no reason to refuse the film
    return image


def _open(data: bytes, max_pixels: int) -> tuple[ImageKind, Image.Image]:
    kind = sniff(data)
    if kind is DICOM:
        return kind, _decode_dicom(data, max_pixels)
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
    return ImageInfo(kind, image.width, image.height, image.mode, image.info.get("pixel_spacing_mm"))


def storable(data: bytes, info: ImageInfo) -> tuple[bytes, ImageKind]:
    """The bytes to keep for a film that inspect_image accepted, and their kind: the file itself, except DICOM,
    which browsers cannot show: its windowed 8-bit rendering as a lossless PNG (what the encoder and the admin
    page then read). The pixel spacing is in `info`, for the database; the DICOM header is not kept."""
    if info.kind is not DICOM:
        return data, info.kind
    out = io.BytesIO()
    _decode_dicom(data, info.width * info.height).save(out, format="PNG", optimize=False)
    return out.getvalue(), _PNG


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
    spacing = image.info.get("pixel_spacing_mm")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit_grey(image)
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB")
    if spacing is not None:
        image.info["pixel_spacing_mm"] = spacing
    return image


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
