"""Decompression bombs of each codec, generated small: a few kilobytes to a few megabytes that ask a decoder for
hundreds of megabytes or more. Shared by the imaging tests, the hostile-input corpus and `raiox bench intake`
(which imports `raiox.tools.bench.bombs`, the same generators)."""

from raiox.tools.bench.bombs import (  # noqa: F401 - re-exported for the tests
    deflated_dicom_bomb,
    png_bomb,
    progressive_jpeg_bomb,
    rle_dicom_bomb,
    rle_segment_bomb,
)
