"""JPEG decoding on the encoder's device (nvJPEG through torchvision) for batches; other images stay on the CPU."""

from __future__ import annotations

import logging
import struct
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Start-of-frame markers nvJPEG decodes: baseline and extended sequential (Huffman), progressive (Huffman).
# Lossless, hierarchical and arithmetic-coded frames (C3, C5–C7, C9–CB, CD–CF) go to the CPU.
_DEVICE_SOF = {0xC0: False, 0xC1: False, 0xC2: True}
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


@dataclass(frozen=True)
class JpegHeader:
    """What the device path needs to know before decoding: size, channels, EXIF orientation (1–8)."""

    width: int
    height: int
    components: int
    progressive: bool
    orientation: int


def device_jpeg_header(data: bytes, *, max_pixels: int) -> JpegHeader | None:
    """The header of a JPEG the device decoder takes, else None (the CPU path decides, errors included).

    Taken: baseline or progressive Huffman-coded, 8 bits per sample, greyscale or YCbCr (no Adobe colour
    transform), within `max_pixels`, complete (an end-of-image marker at the end) and with a readable EXIF
    orientation if it has one. Reading only the markers before the scan, this costs microseconds."""
    if not data.startswith(b"\xff\xd8") or b"\xff\xd9" not in data[-64:]:
        return None
    position, orientation, frame = 2, 1, None
    try:
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                return None
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in _STANDALONE:
                position += 2
                continue
            (length,) = struct.unpack_from(">H", data, position + 2)
            segment = data[position + 4:position + 2 + length]
            if length < 2 or len(segment) != length - 2:
                return None
            if marker == 0xDA:  # start of scan: the header is over
                break
            if marker in _DEVICE_SOF:
                precision, height, width, components = struct.unpack_from(">BHHB", segment)
                if precision != 8 or components not in (1, 3) or height == 0 or width == 0:
                    return None
                frame = (width, height, components, _DEVICE_SOF[marker])
            elif marker in _OTHER_SOF:
                return None
            elif marker == 0xEE and segment.startswith(b"Adobe"):  # RGB or CMYK by Adobe's transform
                return None
            elif marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
                found = _exif_orientation(segment[6:])
                if found is None:
                    return None
                orientation = found
            position += 2 + length
    except struct.error:
        return None
    if frame is None:
        return None
    width, height, components, progressive = frame
    if width * height > max_pixels:
        return None
    return JpegHeader(width, height, components, progressive, orientation)


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of IFD0 (1 when absent); None when the block cannot be read."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        (first_ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (entries,) = struct.unpack_from(order + "H", tiff, first_ifd)
        for number in range(entries):
            tag, kind, _count, value = struct.unpack_from(order + "HHI4s", tiff, first_ifd + 2 + 12 * number)
            if tag == 0x0112:
                (orientation,) = struct.unpack_from(order + "H", value) if kind == 3 else (1,)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        return None
    return 1


@dataclass(frozen=True)
class DeviceJob:
    """An image routed to the device decoder (stands in the encoder's batch until that batch is decoded)."""

    data: bytes
    header: JpegHeader


class _Slot:
    """One image's place in a batch decoded together: `result()` as a future's."""

    def __init__(self, whole: Future[list[Any]], number: int) -> None:
        self.whole, self.number = whole, number

    def result(self) -> Any:
        return self.whole.result()[self.number]


class DeviceJpegDecoder:
    """Decodes the JPEGs `device_jpeg_header` takes on `device`, all of a batch in one call, then orients and
    letterboxes them as the encoder's PIL steps do: keep the ratio, the longest side to `size` (bicubic,
    antialiased), centred on black. Output: (size, size, 3) uint8 on the device, as `Encoder.prepare` on
    the CPU gives. Any image the batch call fails on sends that batch back to the CPU path."""

    def __init__(self, device: str, size: int, *, max_pixels: int) -> None:
        self.device = device
        self.size = size
        self.max_pixels = max_pixels
        self.decoded = 0  # images decoded on the device (and CPU fallbacks), for benchmarks and tests
        self.fallbacks = 0
        self._lock = threading.Lock()
        # One batch decodes here while the model runs the previous one.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raiox-device-decode")

    def route(self, data: bytes) -> DeviceJob | None:
        header = device_jpeg_header(data, max_pixels=self.max_pixels)
        return None if header is None else DeviceJob(data, header)

    def routed(self, prepare: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """`prepare` for the decode threads: a DeviceJob for what the device takes, else the CPU result."""
        return lambda data: self.route(data) or prepare(data)

    def pipelined(self, submit: Callable[[Sequence[int]], list[Any]],
                  cpu: Callable[[bytes], Any]) -> Callable[[Sequence[int]], list[Any]]:
        """Wrap the encoder's `submit(chunk) -> futures`: the chunk's device jobs decode together on this
        decoder's thread once its CPU work is done; every slot then answers a device tensor or an error."""

        def submit_chunk(chunk: Sequence[int]) -> list[Any]:
            futures = submit(chunk)
            whole = self._thread.submit(lambda: self.resolve([future.result() for future in futures], cpu))
            return [_Slot(whole, number) for number in range(len(futures))]

        return submit_chunk

    def resolve(self, prepared: list[Any], cpu: Callable[[bytes], Any]) -> list[Any]:
        """Decode the batch's DeviceJobs in one call; CPU-prepared pixels move to the device; errors stay."""
        import torch

        jobs = [number for number, item in enumerate(prepared) if isinstance(item, DeviceJob)]
        out = list(prepared)
        if jobs:
            try:
                decoded = self.decode([prepared[number] for number in jobs])
                with self._lock:
                    self.decoded += len(jobs)
            except RuntimeError as exc:  # nvJPEG refused something in the batch: the CPU path says what
                log.warning("device JPEG decoding failed for a batch of %d (%s); decoding it on the CPU",
                            len(jobs), exc)
                with self._lock:
                    self.fallbacks += len(jobs)
                decoded = [cpu(prepared[number].data) for number in jobs]
            for number, pixels in zip(jobs, decoded, strict=True):
                out[number] = pixels
        return [torch.from_numpy(item).to(self.device, non_blocking=True) if isinstance(item, np.ndarray) else item
                for item in out]

    def decode(self, jobs: Sequence[DeviceJob]) -> list[Any]:
        """DeviceJobs → (size, size, 3) uint8 tensors on the device; raises RuntimeError when nvJPEG fails."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        images: list[Any] = [None] * len(jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points at TorchCodec
            warnings.filterwarnings("ignore", message="The given buffer is not writable")  # read only, no copy
            for grey in (True, False):
                numbers = [number for number, job in enumerate(jobs) if (job.header.components == 1) == grey]
                if numbers:
                    encoded = [torch.frombuffer(jobs[number].data, dtype=torch.uint8) for number in numbers]
                    mode = ImageReadMode.GRAY if grey else ImageReadMode.RGB
                    for number, image in zip(numbers, decode_jpeg(encoded, mode=mode, device=self.device),
                                             strict=True):
                        images[number] = image
        # Films of one size and orientation (most of a batch, usually) are scaled together.
        groups: dict[tuple[int, ...], list[int]] = {}
        for number, (image, job) in enumerate(zip(images, jobs, strict=True)):
            groups.setdefault((*image.shape, job.header.orientation), []).append(number)
        out: list[Any] = [None] * len(jobs)
        for key, numbers in groups.items():
            batch = _orient(self._draft(torch.stack([images[number] for number in numbers])), key[-1])
            for number, pixels in zip(numbers, self._letterbox(batch), strict=True):
                out[number] = pixels
        return out

    def _draft(self, images: Any) -> Any:
        """What PIL's JPEG draft mode gives the CPU path: films at 1/2, 1/4 or 1/8 scale (the largest that
        keeps both sides at least `size`), each pixel about the mean of its block; (n, c, h, w) float."""
        import torch

        height, width = images.shape[-2:]
        limit = min(width // self.size, height // self.size)
        scale = next(s for s in (8, 4, 2, 1) if limit >= s)
        images = images.float()
        return torch.nn.functional.avg_pool2d(images, scale, ceil_mode=True) if scale > 1 else images

    def _letterbox(self, images: Any) -> Any:
        """(n, c, h, w) float → (n, size, size, 3) uint8: open_clip's ResizeKeepRatio(longest=1) and
        CenterCropOrPad, as the CPU path applies them with PIL."""
        import torch

        count, _, height, width = images.shape
        ratio = max(height / self.size, width / self.size)
        new_height, new_width = round(height / ratio), round(width / ratio)
        resized = torch.nn.functional.interpolate(images, size=(new_height, new_width), mode="bicubic",
                                                  antialias=True, align_corners=False)
        resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        out = torch.zeros((count, self.size, self.size, 3), dtype=torch.uint8, device=images.device)
        top, left = (self.size - new_height) // 2, (self.size - new_width) // 2
        out[:, top:top + new_height, left:left + new_width] = resized.permute(0, 2, 3, 1)  # grey fills R, G, B
        return out


def _orient(image: Any, orientation: int) -> Any:
    """Apply an EXIF orientation to (…, h, w), as PIL's ImageOps.exif_transpose does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1, -2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return image.rot90(-1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return image.rot90(1, dims=(-2, -1))
    return image


def device_decoder_for(device: str, pixel_ops: Any, image_size: int, *, max_pixels: int,
                       crop: bool = False) -> DeviceJpegDecoder | None:
    """The device decoder an encoder on `device` uses, or None (every image on the CPU): only on CUDA, only
    when the encoder's PIL steps are the letterbox this decoder reproduces and nothing else (cropping to the
    implant works on the decoded film, so it stays on the CPU)."""
    if not device.startswith("cuda") or crop:
        return None
    names = [type(step).__name__ for step in getattr(pixel_ops, "transforms", [])]
    if names != ["ResizeKeepRatio", "CenterCropOrPad", "MaybeConvertMode"]:
        log.info("preprocessing %s is not the letterbox the device decoder reproduces: JPEGs decode on the CPU",
                 names)
        return None
    resize, pad = pixel_ops.transforms[0], pixel_ops.transforms[1]
    if resize.longest != 1.0 or tuple(resize.size) != (image_size, image_size) or pad.fill not in (0, None):
        return None
    if "bicubic" not in str(resize.interpolation).lower():
        return None
    return DeviceJpegDecoder(device, image_size, max_pixels=max_pixels)
