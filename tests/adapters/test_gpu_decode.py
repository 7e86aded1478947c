"""Device JPEG decoding: which images are routed to it, that it prepares films as the CPU path does (run on
the CPU here, through torchvision's CPU decoder: the same code with another device), and the fallbacks."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raiox.adapters import gpu_decode
from raiox.adapters.encoder import Encoder
from raiox.adapters.gpu_decode import DeviceJpegDecoder, device_decoder_for, device_jpeg_header
from raiox.adapters.imaging import ImageError
from support import make_xray


@pytest.fixture(scope="module")
def tiny_encoder(tiny_checkpoint: Path) -> Encoder:
    """The open_clip adapter itself (conftest's tiny_encoder is the identifier that wraps it)."""
    return Encoder.load("raiox-tiny-vit", str(tiny_checkpoint), device="cpu", batch_size=4)

LIMIT = 40_000_000


def _jpeg(mode: str = "L", size: tuple[int, int] = (300, 420), orientation: int = 1, **save: object) -> bytes:
    """An asymmetric film (a bright post off-centre, a bar near the top): a wrong orientation shows."""
    width, height = size
    film = np.random.default_rng(3).normal(60, 12, size=(height, width))
    film[height // 5:height * 3 // 4, width // 6:width // 6 + width // 8] = 230
    film[height // 12:height // 12 + 10, width // 2:] = 180
    image = Image.fromarray(np.clip(film, 0, 255).astype(np.uint8), mode="L").convert(mode)
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, **save)
    return out.getvalue()


def _patched(data: bytes, marker: bytes, offset: int, value: int) -> bytes:
    """`data` with one byte changed, `offset` bytes after the first `marker`."""
    changed = bytearray(data)
    changed[data.index(marker) + offset] = value
    return bytes(changed)


def _broken_huffman_table(data: bytes) -> bytes:
    changed = bytearray(data)
    start = data.index(b"\xff\xc4") + 5
    changed[start:start + 16] = b"\xff" * 16  # code counts no Huffman table can have
    return bytes(changed)


TAKEN: dict[str, Callable[[], bytes]] = {
    "greyscale baseline": lambda: _jpeg(),
    "colour 4:2:0": lambda: _jpeg("RGB"),
    "progressive": lambda: _jpeg(progressive=True),
    "EXIF orientation": lambda: _jpeg(orientation=6),
}
REFUSED: dict[str, Callable[[], bytes]] = {
    "PNG": lambda: make_xray(1),
    "16-bit PNG": lambda: make_xray(1, mode="I;16"),
    "TIFF": lambda: make_xray(1, fmt="TIFF"),
    "CMYK JPEG": lambda: _jpeg("CMYK"),
    "truncated JPEG": lambda: _jpeg()[:2000],
    "12-bit JPEG": lambda: _patched(_jpeg(), b"\xff\xc0", 4, 12),
    "arithmetic-coded JPEG": lambda: _patched(_jpeg(), b"\xff\xc0", 1, 0xC9),
    "lossless JPEG": lambda: _patched(_jpeg(), b"\xff\xc0", 1, 0xC3),
    "over the pixel limit": lambda: _jpeg(size=(5000, 9000)),
    "empty": lambda: b"",
}


@pytest.mark.parametrize("kind", TAKEN)
def test_baseline_and_progressive_8bit_jpegs_go_to_the_device(kind: str) -> None:
    data = TAKEN[kind]()
    header = device_jpeg_header(data, max_pixels=LIMIT)
    assert header is not None
    assert (header.width, header.height) == (300, 420)
    assert header.components == (3 if kind == "colour 4:2:0" else 1)
    assert header.progressive == (kind == "progressive")
    assert header.orientation == (6 if kind == "EXIF orientation" else 1)


@pytest.mark.parametrize("kind", REFUSED)
def test_everything_else_stays_on_the_cpu(kind: str) -> None:
    assert device_jpeg_header(REFUSED[kind](), max_pixels=LIMIT) is None


def test_only_a_cuda_encoder_with_the_letterbox_gets_a_device_decoder(tiny_encoder: Encoder) -> None:
    ops, size = tiny_encoder._pixel_ops, tiny_encoder.image_size
    decoder = device_decoder_for("cuda", ops, size, max_pixels=LIMIT)  # built without touching CUDA
    assert isinstance(decoder, DeviceJpegDecoder) and decoder.device == "cuda" and decoder.size == size
    assert isinstance(device_decoder_for("cuda:1", ops, size, max_pixels=LIMIT), DeviceJpegDecoder)
    assert device_decoder_for("cpu", ops, size, max_pixels=LIMIT) is None
    assert tiny_encoder.device_decoder is None  # a CPU encoder decodes everything as before
    assert device_decoder_for("cuda", ops, size, max_pixels=LIMIT, crop=True) is None  # crops on the CPU
    import open_clip

    squash = open_clip.image_transform(size, is_train=False, resize_mode="squash")
    assert device_decoder_for("cuda", squash, size, max_pixels=LIMIT) is None  # not the letterbox


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_device_path_prepares_films_as_the_cpu_path_does(tiny_encoder: Encoder, orientation: int, mode: str) -> None:
    """Decode at the draft scale PIL would pick, orient, letterbox: within one grey level of PIL's pixels."""
    decoder = DeviceJpegDecoder("cpu", tiny_encoder.image_size, max_pixels=LIMIT)
    data = _jpeg(mode, size=(600, 840), orientation=orientation)
    job = decoder.route(data)
    assert job is not None
    device = decoder.decode([job])[0].numpy().astype(int)
    cpu = tiny_encoder.prepare(data).astype(int)
    assert device.shape == cpu.shape == (tiny_encoder.image_size, tiny_encoder.image_size, 3)
    assert np.abs(device - cpu).max() <= 2 and np.abs(device - cpu).mean() < 0.5


def test_encoder_routes_jpegs_to_the_device_and_the_rest_to_the_cpu(tiny_encoder: Encoder) -> None:
    cpu_only = tiny_encoder
    routed = copy.copy(tiny_encoder)
    routed.device_decoder = DeviceJpegDecoder("cpu", tiny_encoder.image_size, max_pixels=LIMIT)
    images = [_jpeg(size=(600, 840)), make_xray(2), _jpeg("RGB", size=(640, 480), progressive=True),
              make_xray(3, mode="I;16"), _jpeg(size=(600, 840))[:3000], make_xray(4, fmt="JPEG"),
              b"not an image"]
    expected, got = cpu_only.encode(images), routed.encode(images)
    assert routed.device_decoder.decoded == 3 and routed.device_decoder.fallbacks == 0  # the three JPEGs
    assert set(got.errors) == set(expected.errors) == {4, 6}
    assert set(got.embeddings) == set(expected.embeddings) == {0, 1, 2, 3, 5}
    for position, vector in expected.embeddings.items():
        assert float(vector @ got.embeddings[position]) > 0.9999


def test_a_batch_the_device_refuses_is_decoded_on_the_cpu(tiny_encoder: Encoder) -> None:
    """A JPEG whose header looks fine but whose data does not decode: the CPU path names the error."""
    routed = copy.copy(tiny_encoder)
    routed.device_decoder = DeviceJpegDecoder("cpu", tiny_encoder.image_size, max_pixels=LIMIT)
    broken = _broken_huffman_table(_jpeg())
    assert device_jpeg_header(broken, max_pixels=LIMIT) is not None
    result = routed.encode([_jpeg(), broken, _jpeg("RGB")])
    assert routed.device_decoder.fallbacks == 3 and routed.device_decoder.decoded == 0
    assert set(result.embeddings) == {0, 2} and isinstance(result.errors[1], ImageError)
    assert float(result.embeddings[0] @ tiny_encoder.encode_one(_jpeg())) > 0.9999


def test_exif_orientation_reader_survives_odd_blocks() -> None:
    assert gpu_decode._exif_orientation(b"XX\x00\x00") is None  # no byte order
    assert gpu_decode._exif_orientation(b"II*\x00\xff\xff\x00\x00") is None  # IFD beyond the block
    assert gpu_decode._exif_orientation(b"MM\x00*\x00\x00\x00\x08\x00\x00") == 1  # no entries: upright


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_nvjpeg_prepares_films_as_the_cpu_path_does(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    """The device check for a GPU machine: nvJPEG's decoding against PIL's, through the whole encoder."""
    on_gpu = Encoder.load("raiox-tiny-vit", str(tiny_checkpoint), device="cuda", batch_size=4)
    assert on_gpu.device_decoder is not None
    films = [_jpeg(size=(600, 840), orientation=o) for o in (1, 6)] + [_jpeg("RGB", progressive=True), make_xray(5)]
    for data in films[:3]:
        job = on_gpu.device_decoder.route(data)
        assert job is not None
        device = on_gpu.device_decoder.decode([job])[0].cpu().numpy().astype(int)
        assert np.abs(device - on_gpu.prepare(data).astype(int)).mean() < 1.0
    on_gpu.device_decoder.decoded = 0
    got = on_gpu.encode(films)
    assert on_gpu.device_decoder.decoded == 3 and got.errors == {}
    on_gpu.device_decoder = None
    expected = on_gpu.encode(films)
    for position, vector in expected.embeddings.items():
        assert float(vector @ got.embeddings[position]) > 0.999
