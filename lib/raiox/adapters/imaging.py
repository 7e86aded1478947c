"""Radiograph bytes to pixels: type sniffing, decoding bounded before it starts (file size, declared pixels and
bytes, frames, DICOM transfer syntax, a bounded inflate), 16-bit aware conversion in float32, DICOM.

Nothing here decodes a film whose header declares more than the limits allow: PNG, JPEG and TIFF headers give the
size and pixel format, DICOM's header gives rows, columns, samples, bits and frames, and a deflated DICOM is
inflated only up to the decoding limit. What a header cannot bound (a malformed stream, a decoder's own appetite)
is bounded by decoding untrusted films in a child process (`raiox.adapters.sandbox`).
"""

from __future__ import annotations

import io
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raiox.errors import TooLarge, Unprocessable, UnsupportedFormat

if TYPE_CHECKING:  # pydicom loads only for a DICOM film
    from pydicom.dataset import FileDataset
    from pydicom.uid import UID

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_DECODED_BYTES = 128 * 1024 * 1024  # 40 MP at 16 bits, or 32 MP in colour
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
MIB = 1024 * 1024


class ImageError(Unprocessable):
    """Bytes that are not a usable radiograph; the message says why."""


class UnsupportedImage(UnsupportedFormat, ImageError):
    """Not one of the accepted formats (JPEG, PNG, TIFF, DICOM), whatever its name or declared type says."""


class ImageTooLarge(TooLarge, ImageError):
    """Over a decoding limit: file size, pixels, decoded bytes (decompression-bomb guard), or the memory or time
    the decoding child may use."""


class DecodingOutOfMemory(ImageTooLarge):
    """A decoder asked for more memory than there was (in a decoding child: more than its limit)."""


@dataclass(frozen=True)
class DecodeLimits:
    """What a film may ask of a decoder, checked from its header before any pixel is decoded."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES  # rows × columns × samples × bytes (× frames)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


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


@dataclass(frozen=True)
class Examined:
    """A film decoded once: what it is, and the bytes to keep (DICOM as its windowed PNG) with their kind."""

    info: ImageInfo
    kept: bytes
    kept_kind: ImageKind


_JPEG = ImageKind("JPEG", ".jpg", "image/jpeg")
_PNG = ImageKind("PNG", ".png", "image/png")
_TIFF = ImageKind("TIFF", ".tif", "image/tiff")
DICOM = ImageKind("DICOM", ".dcm", "application/dicom")
KINDS = {kind.format: kind for kind in (_JPEG, _PNG, _TIFF, DICOM)}

# Bytes per pixel Pillow keeps in memory for each mode (8-bit colour is stored as 4 bytes a pixel).
_PIL_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _describe(exc: BaseException) -> str:
    """An exception's message fit for a person: never a Python object's repr (`<_io.BytesIO object at 0x…>`)."""
    text = _OBJECT_REPR.sub("the file", str(exc)).strip()
    return text or type(exc).__name__


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


def _check_declared(width: int, height: int, bytes_per_pixel: float, limits: DecodeLimits, what: str) -> None:
    """Refuse, before decoding, a film whose header declares more pixels or decoded bytes than the limits."""
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise ImageTooLarge(f"image is {width}x{height}, over the limit of {limits.max_pixels} pixels")
    decoded = width * height * bytes_per_pixel
    if decoded > limits.max_decoded_bytes:
        raise ImageTooLarge(f"image is {width}x{height} {what}: {decoded / MIB:.0f} MiB once decoded, over the "
                            f"decoding limit of {limits.max_decoded_bytes / MIB:.0f} MiB")


def _dicom_number(value: object) -> float:
    """A DICOM numeric element that may hold several values (window centre/width): the first."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[call-overload]
    return float(value)  # type: ignore[arg-type]


# What pydicom raises on malformed, truncated or inconsistent files (it has no single base exception).
_DICOM_ERRORS = (AttributeError, KeyError, IndexError, TypeError, ValueError, EOFError, OSError, RuntimeError,
                 NotImplementedError, OverflowError, zlib.error)
# Transfer syntaxes whose pixel data is stored as it is (deflate wraps the whole dataset, checked apart).
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
_DEFLATED = "1.2.840.10008.1.2.1.99"
_RLE = "1.2.840.10008.1.2.5"
_HEADER_ALLOWANCE = 16 * MIB  # a dataset's elements besides its pixels, within an inflate limit


def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The `low` and `high` percentiles, from an even subsample of at most ~4 M values for a large film (a full
    percentile copies the whole array)."""
    step = max(1, math.ceil(math.sqrt(values.size / 4_000_000)))
    sample = values[::step, ::step] if values.ndim == 2 else values.reshape(-1)[::step * step]
    found = np.percentile(sample, [low, high])
    return float(found[0]), float(found[1])


def _dicom_meta_syntax(data: bytes) -> str:
    """The transfer syntax from the file meta group alone (group 2 is never deflated), so a deflated dataset
    is never inflated just to be looked at."""
    from pydicom.filereader import read_dataset, read_preamble

    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                        stop_when=lambda tag, vr, length: tag.group != 2)
    return str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))


def _check_inflate(data: bytes, limits: DecodeLimits) -> None:
    """A deflated DICOM dataset is inflated, in pieces, only up to the decoding limit (plus room for its header):
    a few kilobytes can otherwise inflate to gigabytes before any header is read."""
    from pydicom.filereader import read_dataset, read_preamble

    fp = io.BytesIO(data)
    read_preamble(fp, False)
    read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, length: tag.group != 2)
    ceiling = limits.max_decoded_bytes + _HEADER_ALLOWANCE
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, inflated = data[fp.tell():], 0
    while pending:
        inflated += len(inflater.decompress(pending, 4 * MIB))
        pending = inflater.unconsumed_tail
        if inflated > ceiling:
            raise ImageTooLarge(f"the deflated DICOM dataset inflates to more than {ceiling / MIB:.0f} MiB, over "
                                f"the decoding limit of {limits.max_decoded_bytes / MIB:.0f} MiB")


def _dicom_header(data: bytes, limits: DecodeLimits) -> tuple[UID, FileDataset]:
    """The dataset without its pixel data, every limit checked: transfer syntax (a decoder must exist, deflate
    is inflated boundedly), rows × columns × samples × bytes, frames, photometric interpretation."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on odd but readable files
            syntax = UID(_dicom_meta_syntax(data))
            if syntax == _DEFLATED:
                _check_inflate(data, limits)
        if syntax not in _NATIVE:
            try:
                available = syntax.is_compressed and get_decoder(syntax).is_available
            except (NotImplementedError, ValueError):  # a syntax pydicom has no decoder for at all
                available = False
            if not available:
                raise UnsupportedImage(f"DICOM compressed as {syntax.name} cannot be decoded here; export the film "
                                       "uncompressed (Explicit VR Little Endian), or as PNG or TIFF")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes on odd but readable files
            ds = pydicom.dcmread(io.BytesIO(data), force=False, stop_before_pixels=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except ImageError:
        raise
    except (InvalidDicomError, *_DICOM_ERRORS) as exc:
        raise ImageError(f"cannot decode DICOM image: {_describe(exc)}") from None
    if frames < 1 or samples < 1 or bits < 1:
        raise ImageError(f"cannot decode DICOM image: its header declares {frames} frames, {samples} samples per "
                         f"pixel and {bits} bits allocated")
    _check_declared(columns, rows, samples * math.ceil(bits / 8) * frames, limits,
                    f"with {samples} sample(s) of {bits} bits" + (f" in {frames} frames" if frames > 1 else ""))
    if frames > 1:
        raise UnsupportedImage(f"multi-frame images are not accepted (this DICOM file holds {frames} frames); "
                               "send one radiograph per file")
    if photometric.startswith("MONOCHROME") and samples != 1:
        raise UnsupportedImage(f"DICOM {photometric} with {samples} samples per pixel is inconsistent (greyscale "
                               "has one); export the film again")
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") and (samples != 3 or bits != 8):
        raise UnsupportedImage(f"DICOM colour ({photometric}) with {samples} samples of {bits} bits is not "
                               "supported (3 samples of 8 bits are)")
    if not photometric.startswith("MONOCHROME") and photometric not in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        raise UnsupportedImage(f"DICOM photometric interpretation {photometric} is not supported")
    return syntax, ds


def _check_rle_segments(ds: Any, limits: DecodeLimits) -> None:
    """An RLE frame's segments may be no longer than PackBits needs for the rows × columns bytes each holds (a
    literal run of 128 bytes takes 129): pydicom's decoder grows a segment's output until its input ends, so a
    longer one is a bomb (or garbage). What a legal length can still expand to is the decoding child's to bound."""
    from pydicom.encaps import generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    count = int.from_bytes(frame[:4], "little")
    if not 1 <= count <= 15 or len(frame) < 64:
        raise ImageError(f"cannot decode DICOM image: its RLE header declares {count} segments")
    offsets = [int.from_bytes(frame[4 + 4 * n: 8 + 4 * n], "little") for n in range(count)] + [len(frame)]
    most = math.ceil(int(ds.Rows) * int(ds.Columns) / 128) * 129 + 2
    for n in range(count):
        if offsets[n + 1] - offsets[n] > most:
            raise ImageTooLarge(f"RLE segment {n + 1} of the DICOM image is {offsets[n + 1] - offsets[n]} bytes, "
                                f"more than {most} bytes can hold for {ds.Columns}x{ds.Rows} pixels; it would "
                                "decode far past the image (a decompression bomb, or a malformed file)")


def _decode_dicom(data: bytes, max_pixels: int, limits: DecodeLimits | None = None) -> Image.Image:
    """A single-frame DICOM image as 8-bit greyscale (or RGB): the modality rescale (slope and intercept), then
    the VOI LUT or the window when the header has one (else the values the film uses are stretched), and
    MONOCHROME1 inverted so that metal is white, in float32 and in place. Pixel spacing (PixelSpacing, else
    ImagerPixelSpacing) goes to `image.info["pixel_spacing_mm"]`. Multi-frame files are refused, not reduced to
    their first frame: a film series in one file is not one radiograph, and picking a frame for the sender could
    match the wrong implant. Every limit is checked from the header first (`_dicom_header`); compressed transfer
    syntaxes decode only where pydicom has a decoder installed (RLE, in pure Python; no other is shipped)."""
    import pydicom
    from pydicom.pixels.processing import apply_voi_lut

    limits = limits or DecodeLimits(max_pixels=max_pixels)
    _, header = _dicom_header(data, limits)
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
            if "PixelData" not in ds:
                raise ImageError("cannot decode DICOM image: it holds no pixel data (not an image, e.g. a report)")
            if ds.file_meta.TransferSyntaxUID == _RLE:
                _check_rle_segments(ds, limits)
            pixels = ds.pixel_array
        if photometric.startswith("MONOCHROME"):
            if pixels.ndim != 2:
                raise UnsupportedImage(f"DICOM pixel data has shape {pixels.shape}, not one greyscale frame")
            if "ModalityLUTSequence" in ds:
                from pydicom.pixels.processing import apply_modality_lut

                values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
            else:
                values = pixels.astype(np.float32)
                slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
                if slope != 1:
                    values *= slope
                if intercept:
                    values += intercept
            del pixels
            if "VOILUTSequence" in ds:  # a table indexed by the (integer) rescaled values
                values = np.asarray(apply_voi_lut(np.rint(values).astype(np.int32), ds, index=0), dtype=np.float32)
                low, high = float(values.min()), float(values.max())
            elif "WindowCenter" in ds and "WindowWidth" in ds:
                centre, width = _dicom_number(ds.WindowCenter), max(_dicom_number(ds.WindowWidth), 1.0)
                low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2  # PS3.3 C.11.2.1.2
            else:
                low, high = _percentiles(values, 0.1, 99.9)
            values -= low
            values *= 255.0 / max(high - low, 1e-6)
            np.clip(values, 0, 255, out=values)
            if photometric == "MONOCHROME1":
                np.subtract(255, values, out=values)  # stored with low values white
            image = Image.fromarray(values.astype(np.uint8), mode="L")
        else:
            if pixels.ndim != 3 or pixels.shape[-1] != 3:
                raise UnsupportedImage(f"DICOM pixel data has shape {pixels.shape}, not one colour frame")
            if photometric.startswith("YBR"):
                from pydicom.pixels.processing import convert_color_space

                pixels = convert_color_space(pixels, photometric, "RGB")
            image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="RGB")
    except ImageError:
        raise
    except MemoryError:
        raise DecodingOutOfMemory("decoding the DICOM image ran out of memory") from None
    except _DICOM_ERRORS as exc:
        raise ImageError(f"cannot decode DICOM image: {_describe(exc)}") from None
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is not None:
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])
            if 0 < row_mm < 100 and 0 < col_mm < 100:  # the schema's check; a nonsense value is dropped
                image.info["pixel_spacing_mm"] = (row_mm, col_mm)
        except (TypeError, ValueError, IndexError):
            pass  # a malformed spacing is no reason to refuse the film
    return image


def _pixel_bytes(image: Image.Image) -> float:
    """Bytes a decoded pixel takes: Pillow's own storage, plus a progressive JPEG's coefficient buffers (two
    bytes per sample, held for the whole image until the last scan)."""
    size = _PIL_PIXEL_BYTES.get(image.mode, 4)
    if image.format == "JPEG" and image.info.get("progressive"):
        size += 2 * len(image.getbands())
    return size


def _open(data: bytes, limits: DecodeLimits) -> tuple[ImageKind, Image.Image]:
    if len(data) > limits.max_file_bytes:
        raise ImageTooLarge(f"the file is {len(data)} bytes, over the limit of {limits.max_file_bytes} bytes")
    kind = sniff(data)
    if kind is DICOM:
        return kind, _decode_dicom(data, limits.max_pixels, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on odd but readable headers
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind.format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"image exceeds {limits.max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot decode {kind.format} image: its header is not valid {kind.format}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {kind.format} image: {_describe(exc)}") from None
    width, height = image.size
    _check_declared(width, height, _pixel_bytes(image), limits, f"in mode {image.mode}")
    try:
        frames = getattr(image, "n_frames", 1)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode {kind.format} image: {_describe(exc)}") from None
    if frames > 1:
        raise UnsupportedImage("multi-frame images are not accepted; send one radiograph per file")
    return kind, image


def _decode(data: bytes, max_pixels: int, draft_size: int | None = None,
            limits: DecodeLimits | None = None) -> tuple[ImageKind, Image.Image]:
    limits = limits or DecodeLimits(max_pixels=max_pixels)
    kind, image = _open(data, limits)
    if draft_size and kind is _JPEG:
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; keep at least draft_size pixels a side.
        image.draft(image.mode, (draft_size, draft_size))
    try:
        image.load()  # full decode: truncated or corrupt data fails here, not later in a worker
    except MemoryError:
        raise DecodingOutOfMemory(f"decoding the {kind.format} image ran out of memory") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode {kind.format} image: {_describe(exc)}") from None
    return kind, image


def _limits(max_pixels: int, max_decoded_bytes: int | None, max_file_bytes: int | None) -> DecodeLimits:
    return DecodeLimits(max_pixels, max_decoded_bytes or DEFAULT_MAX_DECODED_BYTES,
                        max_file_bytes or DEFAULT_MAX_FILE_BYTES)


def inspect_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_decoded_bytes: int | None = None,
                  max_file_bytes: int | None = None) -> ImageInfo:
    """Check that `data` fully decodes as an accepted image within the limits; return what it is."""
    kind, image = _decode(data, max_pixels, limits=_limits(max_pixels, max_decoded_bytes, max_file_bytes))
    return ImageInfo(kind, image.width, image.height, image.mode, image.info.get("pixel_spacing_mm"))


def examine(data: bytes, limits: DecodeLimits | None = None) -> Examined:
    """Decode `data` once, within the limits: what it is and the bytes to keep (see `storable`). What the fetch
    step and intake run on an untrusted film, in a child process (`raiox.adapters.sandbox`)."""
    limits = limits or DecodeLimits()
    kind, image = _decode(data, limits.max_pixels, limits=limits)
    info = ImageInfo(kind, image.width, image.height, image.mode, image.info.get("pixel_spacing_mm"))
    if kind is not DICOM:
        return Examined(info, data, kind)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return Examined(info, out.getvalue(), _PNG)


def storable(data: bytes, info: ImageInfo) -> tuple[bytes, ImageKind]:
    """The bytes to keep for a film that inspect_image accepted, and their kind: the file itself, except DICOM,
    which browsers cannot show: its windowed 8-bit rendering as a lossless PNG (what the encoder and the admin
    page then read). The pixel spacing is in `info`, for the database; the DICOM header is not kept. (`examine`
    does both in one decoding.)"""
    if info.kind is not DICOM:
        return data, info.kind
    out = io.BytesIO()
    _decode_dicom(data, info.width * info.height).save(out, format="PNG", optimize=False)
    return out.getvalue(), _PNG


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    """Stretch 16-bit and 32-bit greyscale to 0–255 over the values the film actually uses (float32, in place)."""
    pixels = np.asarray(image, dtype=np.float32)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    low, high = _percentiles(pixels, 0.1, 99.9)
    if high <= low:
        high = low + 1
    pixels -= low
    pixels *= 255.0 / (high - low)
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def load_radiograph(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None,
    max_decoded_bytes: int | None = None, grey: bool = False,
) -> Image.Image:
    """Decode to an upright RGB image (`grey`: 8-bit greyscale, the same levels as that RGB image's): EXIF
    orientation applied, 16-bit greyscale windowed, not clipped.

    `draft_size` lets JPEG decoding skip detail the encoder will throw away (it never goes below it)."""
    _, image = _decode(data, max_pixels, draft_size, limits=_limits(max_pixels, max_decoded_bytes, None))
    spacing = image.info.get("pixel_spacing_mm")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit_grey(image)
    if image.mode in ("LA", "RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if not (grey and image.mode == "L"):  # every other mode reaches grey through RGB, as an RGB caller's does
        image = image.convert("RGB")
    if grey:
        image = image.convert("L")
    if spacing is not None:
        image.info["pixel_spacing_mm"] = spacing
    return image
