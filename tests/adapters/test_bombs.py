"""Decompression bombs of each codec: refused from their headers before any pixel is decoded, with a reason
that names the limit; what no header can bound (a decoder that grows without end) ends only its child process,
with the memory or time limit named; the parent decodes the next film as usual."""

from __future__ import annotations

import io
import logging
import os
import resource
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from bombs import deflated_dicom_bomb, png_bomb, progressive_jpeg_bomb, rle_dicom_bomb, rle_segment_bomb
from raiox.adapters.imaging import DecodeLimits, ImageError, ImageTooLarge, UnsupportedImage, examine, inspect_image
from raiox.adapters.sandbox import DecoderPool, SandboxLimits
from raiox.errors import TooLarge
from support import make_dicom, make_xray

MIB = 1024 * 1024

# Each bomb, and what its refusal must name. A generous child (512 MiB) cannot decode any of them either: only
# the header check can give this message (a child that tried would report its memory limit instead).
HEADER_BOMBS = {
    "deflated DICOM (1 GiB from ~1 MB)": (lambda: deflated_dicom_bomb(1024),
                                          "inflates to more than 144 MiB, over the decoding limit of 128 MiB"),
    "RLE DICOM 6000x6656 at 32 bits": (rle_dicom_bomb, "152 MiB once decoded, over the decoding limit of 128 MiB"),
    "16-bit RGBA PNG of 36 megapixels": (png_bomb, "137 MiB once decoded, over the decoding limit of 128 MiB"),
    "progressive JPEG of 36 megapixels": (progressive_jpeg_bomb, "343 MiB once decoded"),
}


@pytest.fixture(scope="module")
def pool() -> DecoderPool:
    decoders = DecoderPool(SandboxLimits(memory_bytes=512 * MIB, seconds=60, processes=1))
    yield decoders
    decoders.close()


@pytest.mark.parametrize("name", list(HEADER_BOMBS))
def test_each_codecs_bomb_is_refused_from_its_header_naming_the_limit(name: str, pool: DecoderPool) -> None:
    make, reason = HEADER_BOMBS[name]
    data = make()
    assert len(data) < 3 * MIB
    with pytest.raises(ImageTooLarge, match=reason) as raised:
        inspect_image(data)
    assert isinstance(raised.value, TooLarge)  # the web edge answers 413
    with pytest.raises(ImageTooLarge, match=reason):
        pool.examine(data, DecodeLimits())


def test_refusing_header_bombs_in_this_process_costs_no_memory() -> None:
    """Checked in a fresh interpreter whose peak memory is read after: the four bombs ask for ~2 GiB."""
    import subprocess
    import sys

    script = (
        "import resource, bombs\n"
        "from raiox.adapters.imaging import inspect_image, ImageTooLarge\n"
        "made = [bombs.deflated_dicom_bomb(2048), bombs.rle_dicom_bomb(), bombs.png_bomb(),"
        " bombs.progressive_jpeg_bomb()]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for data in made:\n"
        "    try:\n        inspect_image(data)\n    except ImageTooLarge:\n        pass\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    grown_mib = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                   check=True, timeout=300).stdout.strip())
    assert grown_mib < 64, f"refusing the bombs grew the process by {grown_mib} MiB"


def test_a_small_header_deflated_bomb_names_the_inflate_limit_not_its_photometric() -> None:
    with pytest.raises(ImageTooLarge, match="inflates to more than") as raised:
        inspect_image(deflated_dicom_bomb(256, rows=8, columns=8))
    assert "photometric" not in str(raised.value)


def test_a_deflated_film_within_the_limit_decodes() -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    info = inspect_image(make_dicom(syntax=DeflatedExplicitVRLittleEndian))
    assert (info.kind.format, info.width, info.height) == ("DICOM", 40, 60)


def test_declared_bytes_count_samples_and_bits_not_only_pixels() -> None:
    film = make_dicom(np.zeros((100, 100), dtype=np.uint16))  # 16 bits: 20,000 bytes
    assert inspect_image(film, max_decoded_bytes=20_000).width == 100
    with pytest.raises(ImageTooLarge, match="over the decoding limit"):
        inspect_image(film, max_decoded_bytes=19_999)
    colour = io.BytesIO()
    Image.new("RGB", (100, 100)).save(colour, format="PNG")  # Pillow keeps RGB as 4 bytes a pixel
    with pytest.raises(ImageTooLarge, match="in mode RGB"):
        inspect_image(colour.getvalue(), max_decoded_bytes=39_999)


def test_the_file_size_is_capped_before_anything_is_read() -> None:
    with pytest.raises(ImageTooLarge, match="over the limit of 1000 bytes"):
        inspect_image(make_xray(1), max_file_bytes=1000)


def test_a_bomb_no_header_can_bound_ends_only_its_child_naming_the_memory_limit(pool: DecoderPool) -> None:
    """An RLE segment that decodes to 1 GiB behind a 64 x 64 header: pydicom grows its output until the segment
    ends. The child hits its 512 MiB limit; this process stays small and the next film decodes."""
    bomb = rle_segment_bomb(1024)
    pool.examine(make_xray(1), DecodeLimits())  # a warm child, and the pipes' buffers
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLarge, match=r"needs more than 512 MiB of memory.*RAIOX_DECODE_MEMORY_MB"):
        pool.examine(bomb, DecodeLimits())
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 64 * MIB
    assert pool.examine(make_dicom(), DecodeLimits()).info.width == 40


def test_a_film_that_takes_too_long_is_stopped_naming_the_time_limit() -> None:
    slow = DecoderPool(SandboxLimits(memory_bytes=4096 * MIB, seconds=1, processes=1))
    try:
        started = time.monotonic()
        with pytest.raises(ImageTooLarge, match=r"took longer than 1 s.*RAIOX_DECODE_SECONDS"):
            slow.examine(rle_segment_bomb(2048), DecodeLimits())  # pure-Python RLE: many seconds of work
        assert time.monotonic() - started < 30
        assert slow.examine(make_xray(2), DecodeLimits()).info.kind.format == "PNG"
    finally:
        slow.close()


def test_a_child_killed_mid_film_fails_that_film_only(pool: DecoderPool) -> None:
    pool.examine(make_xray(3), DecodeLimits())  # a warm child
    [child] = pool._idle

    def kill_soon() -> None:
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGKILL)

    threading.Thread(target=kill_soon, daemon=True).start()
    slow = DecoderPool(SandboxLimits(memory_bytes=4096 * MIB, seconds=60, processes=1))
    slow._idle.append(pool._idle.pop())
    try:
        with pytest.raises(ImageTooLarge, match="stopped the decoder \\(signal SIGKILL\\)"):
            slow.examine(rle_segment_bomb(2048), DecodeLimits())
        assert slow.examine(make_xray(4), DecodeLimits()).info.width == 160
    finally:
        slow.close()


def test_what_the_child_answers_is_what_decoding_here_gives(pool: DecoderPool) -> None:
    for data in (make_dicom(PixelSpacing=[0.05, 0.04]), make_xray(5), make_xray(6, fmt="JPEG"),
                 make_xray(7, mode="I;16")):
        assert pool.examine(data, DecodeLimits()) == examine(data, DecodeLimits())
    for bad, kind in ((b"text", UnsupportedImage), (make_xray(1)[:300], ImageError)):
        with pytest.raises(kind) as there:
            pool.examine(bad, DecodeLimits())
        with pytest.raises(kind) as here:
            examine(bad, DecodeLimits())
        assert str(there.value) == str(here.value)


def test_without_child_processes_films_are_decoded_here_and_that_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    decoders = DecoderPool(SandboxLimits(processes=1))
    with caplog.at_level(logging.ERROR, logger="raiox.adapters.sandbox"):
        assert decoders.examine(make_xray(8), DecodeLimits()).info.width == 160
    assert "decoded in this process" in caplog.text
    with pytest.raises(ImageTooLarge, match="over the decoding limit"):
        decoders.examine(png_bomb(), DecodeLimits())  # the header limits still hold


@pytest.mark.parametrize("data", [b"\xff\xd8\xff" + bytes(64), b"\x89PNG\r\n\x1a\n" + bytes(64),
                                  b"II*\x00" + bytes(64), b"MM\x00*" + b"\xff" * 64])
def test_refusals_never_show_a_python_object(data: bytes) -> None:
    with pytest.raises(ImageError) as raised:
        inspect_image(data)
    assert " at 0x" not in str(raised.value) and "<_io" not in str(raised.value)


def test_an_rle_segment_longer_than_its_frame_can_need_is_refused_before_decoding() -> None:
    from raiox.tools.bench.bombs import _rle_dicom

    with pytest.raises(ImageTooLarge, match=r"RLE segment 1 .* more than 4130 bytes can hold for 64x64 pixels"):
        inspect_image(_rle_dicom(64, 64, 8, 512 * MIB))
