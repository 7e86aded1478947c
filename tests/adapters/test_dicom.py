"""DICOM films: sniffed by content, rescaled and windowed as the header says, MONOCHROME1 inverted, pixel
spacing kept, stored as PNG; hostile files (truncated, compressed without a decoder, multi-frame, too large,
no pixels) refused with an ImageError that says why."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from raiox.adapters.encoder import Encoder
from raiox.adapters.imaging import (
    DICOM,
    ImageError,
    ImageTooLarge,
    UnsupportedImage,
    inspect_image,
    load_radiograph,
    sniff,
    storable,
)
from raiox.errors import TooLarge, Unprocessable, UnsupportedFormat
from support import dicom_pixels, make_dicom


def grey(data: bytes) -> np.ndarray:
    return np.asarray(load_radiograph(data).convert("L"), dtype=float)


def test_dicom_is_sniffed_by_content_and_decodes_with_metal_white() -> None:
    info = inspect_image(make_dicom(PixelSpacing=[0.035, 0.04]))
    assert (info.kind.format, info.kind.extension, info.kind.content_type) == ("DICOM", ".dcm", "application/dicom")
    assert (info.width, info.height) == (40, 60) and info.pixel_spacing_mm == (0.035, 0.04)
    pixels = grey(make_dicom())
    assert pixels[30, 20] > 240 and pixels[2, 2] < 15  # the post white, the background dark: stretched to 8 bits
    assert sniff(bytes(128) + b"DICM") is DICOM


def test_without_the_dicm_prefix_it_is_not_dicom() -> None:
    with pytest.raises(UnsupportedImage, match="not a JPEG, PNG, TIFF or DICOM image"):
        sniff(bytes(128) + b"DICX" + bytes(100))


def test_sensor_pixel_spacing_counts_and_its_absence_is_none() -> None:
    assert inspect_image(make_dicom(ImagerPixelSpacing=[0.02, 0.025])).pixel_spacing_mm == (0.02, 0.025)
    assert inspect_image(make_dicom()).pixel_spacing_mm is None
    assert inspect_image(make_dicom(PixelSpacing=[0, 0.1])).pixel_spacing_mm is None  # nonsense is dropped
    assert load_radiograph(make_dicom(PixelSpacing=[0.1, 0.1])).info["pixel_spacing_mm"] == (0.1, 0.1)


def test_monochrome1_is_inverted_so_metal_stays_white() -> None:
    stored = 4095 - dicom_pixels()  # MONOCHROME1: low values are white
    pixels = grey(make_dicom(stored, photometric="MONOCHROME1"))
    assert pixels[30, 20] > 240 and pixels[2, 2] < 15


def test_window_from_the_header_is_applied_after_the_rescale() -> None:
    pixels = dicom_pixels()
    pixels[0:5, :] = 1700  # a grey band
    # The rescale doubles the values; the window (centre 4000, width 2000) then shows 3000…5000.
    windowed = grey(make_dicom(pixels, RescaleSlope=2, RescaleIntercept=0, WindowCenter=4000, WindowWidth=2000))
    assert windowed[2, 2] == pytest.approx(0.2 * 255, abs=3)  # 3400: a fifth into the window
    assert windowed[30, 20] > 250 and windowed[40, 2] < 5  # 8000 above the window, 200 below it
    plain = grey(make_dicom(pixels))  # no window: the values the film uses are stretched instead
    assert plain[2, 2] == pytest.approx((1700 - 100) / 3900 * 255, abs=3)


def test_a_negative_intercept_and_several_windows_use_the_first() -> None:
    pixels = dicom_pixels()
    pixels[0:5, :] = 1100  # rescaled to 100: mid-window of the first window (0…200)
    out = grey(make_dicom(pixels, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=[100, 2000],
                          WindowWidth=[200, 4000]))
    assert out[2, 2] == pytest.approx(127, abs=3) and out[30, 20] > 250 and out[40, 2] < 5


def test_voi_lut_sequence_is_applied() -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.LUTData = [0] * 2048 + [65535] * 2048  # a step: below 2048 black, above white
    lut["LUTData"].VR = "US"
    pixels = dicom_pixels()
    pixels[0:5, :] = 1500
    out = grey(make_dicom(pixels, VOILUTSequence=[lut]))
    assert out[2, 2] < 5 and out[30, 20] > 250  # 1500 fell below the step, although above the background


@pytest.mark.parametrize("cut", [100, 400, 1500])
def test_truncated_dicom_is_an_image_error_not_a_crash(cut: int) -> None:
    data = make_dicom()
    with pytest.raises(ImageError, match="DICOM") as raised:
        inspect_image(data[: len(data) - cut] if cut < len(data) else data[:200])
    assert isinstance(raised.value, Unprocessable)  # the web edge answers 422


@pytest.mark.parametrize(("syntax", "named"), [(JPEGLSLossless, "JPEG-LS"), (JPEG2000Lossless, "JPEG 2000"),
                                               (RLELossless, None)])
def test_compressed_dicom_without_a_decoder_is_unsupported_naming_the_compression(syntax: object,
                                                                                   named: str | None) -> None:
    from pydicom.pixels import get_decoder

    data = make_dicom(syntax=syntax)
    if get_decoder(syntax).is_available:  # RLE: pydicom decodes it in pure Python; the fake frame is corrupt
        with pytest.raises(ImageError, match="cannot decode DICOM image"):
            inspect_image(data)
        return
    with pytest.raises(UnsupportedImage, match=f"{named}.*export the film uncompressed") as raised:
        inspect_image(data)
    assert isinstance(raised.value, UnsupportedFormat)  # the web edge answers 415


def test_multi_frame_dicom_is_refused_not_reduced_to_a_frame() -> None:
    with pytest.raises(UnsupportedImage, match="multi-frame images are not accepted .*3 frames"):
        inspect_image(make_dicom(frames=3))


def test_dicom_pixel_limit_is_checked_before_decoding() -> None:
    data = make_dicom(dicom_pixels(200, 200))
    assert inspect_image(data, max_pixels=200 * 200).width == 200
    with pytest.raises(ImageTooLarge) as raised:
        inspect_image(data, max_pixels=200 * 200 - 1)
    assert isinstance(raised.value, TooLarge)


def test_dicm_without_a_dataset_or_without_pixels_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="cannot decode DICOM image"):
        inspect_image(bytes(128) + b"DICM" + b"\x02\x00garbage")
    report = make_dicom()
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(report))
    del ds.PixelData
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(ImageError, match="no pixel data"):
        inspect_image(out.getvalue())


def test_colour_dicom_is_refused_when_its_photometric_is_unknown() -> None:
    with pytest.raises(UnsupportedImage, match="PALETTE COLOR"):
        inspect_image(make_dicom(photometric="PALETTE COLOR"))


def test_a_dicom_film_is_stored_as_the_png_the_encoder_reads() -> None:
    data = make_dicom(PixelSpacing=[0.05, 0.05], WindowCenter=2000, WindowWidth=4000)
    info = inspect_image(data)
    kept, kind = storable(data, info)
    assert (kind.format, kind.extension) == ("PNG", ".png") and kept.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(kept))), grey(data).astype(np.uint8))
    png = kept
    assert storable(png, inspect_image(png)) == (png, inspect_image(png).kind)  # other kinds are kept as they came


def test_the_encoder_embeds_a_dicom_film_like_the_same_film_as_png(tiny_encoder: Encoder) -> None:
    png = io.BytesIO()
    Image.fromarray(grey(make_dicom()).astype(np.uint8), mode="L").save(png, format="PNG")
    assert np.allclose(tiny_encoder.encode_one(make_dicom()), tiny_encoder.encode_one(png.getvalue()), atol=1e-5)
