"""Decompression bombs of each codec, generated in memory and small: kilobytes to a few megabytes that ask a
decoder for hundreds of megabytes or gigabytes. `raiox bench intake` and the tests feed them to intake."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Iterator

from PIL import Image

MIB = 1024 * 1024


def _deflate(pieces: Iterator[bytes], *, raw: bool = False) -> bytes:
    """Compress piece by piece (never holding the inflated bytes); `raw`: no zlib header (DICOM's deflate)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush())
    return b"".join(out)


def _dicom_file(syntax: str, rows: int, columns: int, bits: int, samples: int = 1) -> tuple[bytes, bytes]:
    """(preamble + file meta, the dataset's elements before its pixel data, in Explicit VR Little Endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import UID, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    head = DicomBytesIO()
    head.write(bytes(128) + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "IO"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, "MONOCHROME2" if samples == 1 else "RGB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return head.getvalue(), body.getvalue()


def deflated_dicom_bomb(inflated_mb: int = 2048, rows: int = 64, columns: int = 64) -> bytes:
    """A DICOM in the Deflated Explicit VR Little Endian syntax with a small header (`rows` × `columns`, 16 bits)
    whose dataset inflates to `inflated_mb` MiB: its pixel data element is that long, of zeros. About 1 MB per
    GiB; a decoder that inflates the whole dataset before reading it (pydicom does) holds all of it. Made of one
    compressed 4 MiB block repeated (each ends with a full flush, so the copies are independent)."""
    head, body = _dicom_file("1.2.840.10008.1.2.1.99", rows, columns, 16)
    length = inflated_mb * MIB
    pixel_element = struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", length)
    start = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    prefix = start.compress(body + pixel_element) + start.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    blocks, rest = divmod(length, 4 * MIB)
    repeated = block.compress(bytes(4 * MIB)) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    tail = end.compress(bytes(rest)) + end.flush(zlib.Z_FINISH)
    return head + prefix + repeated * blocks + tail


def _rle_segment(decoded: int) -> bytes:
    """`decoded` zero bytes as PackBits runs of 128 (two bytes each): 64 times smaller."""
    runs, rest = divmod(decoded, 128)
    segment = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" if rest else b"")
    return segment + (b"\x00" if len(segment) % 2 else b"")


def _rle_dicom(rows: int, columns: int, bits: int, segment_bytes: int) -> bytes:
    from pydicom.encaps import encapsulate

    segments = bits // 8
    segment = _rle_segment(segment_bytes)
    offsets = [64 + n * len(segment) for n in range(segments)]
    frame = struct.pack("<16I", segments, *offsets, *([0] * (15 - segments))) + segment * segments
    head, body = _dicom_file("1.2.840.10008.1.2.5", rows, columns, bits)
    pixels = encapsulate([frame])
    element = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFF)
    return head + body + element + pixels + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # sequence delimiter


def rle_dicom_bomb(rows: int = 6656, columns: int = 6000, bits: int = 32) -> bytes:
    """An RLE Lossless DICOM of `rows` × `columns` at `bits` bits, all zeros: about 2.5 MB for 6656 × 6000 × 32
    bits, 152 MiB of pixels (and float64 copies of them in a careless decoder). Under the pixel limit; over the
    decoded-bytes limit."""
    return _rle_dicom(rows, columns, bits, rows * columns)


def rle_segment_bomb(decoded_mb: int = 1024) -> bytes:
    """An RLE Lossless DICOM whose header passes every limit (an 8-bit film of side √(decoded_mb MiB / 64): 4096
    for 1 GiB, 16 MiB once decoded) and whose one segment is as long as PackBits may need for that film, but
    made of runs of 128: it decodes to `decoded_mb` MiB. pydicom's RLE decoder grows its output until the segment
    ends (seconds per hundred MiB in pure Python) before it checks the length. Only a memory or time limit on
    the decoding stops it."""
    side = math.ceil(math.sqrt(decoded_mb * MIB / 64))
    return _rle_dicom(side, side, 8, decoded_mb * MIB)


def png_bomb(width: int = 6000, height: int = 6000) -> bytes:
    """A 16-bit RGBA PNG of `width` × `height` (36 megapixels: under the pixel limit) whose rows are zeros:
    ~280 KB that decode to 144 MiB in Pillow (8 bits × 4 samples a pixel), over the decoded-bytes limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + width * 8)  # filter byte, then 4 samples × 2 bytes
    idat = _deflate(row for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def progressive_jpeg_bomb(width: int = 6000, height: int = 6000) -> bytes:
    """A progressive colour JPEG whose frame header declares `width` × `height` (36 megapixels) and whose scans
    are a 16 × 16 film's: a few hundred bytes. Decoding holds the whole image's DCT coefficients (2 bytes per
    sample) beside Pillow's pixels: ~360 MiB."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(out, format="JPEG", progressive=True, quality=80)
    data = bytearray(out.getvalue())
    at = data.index(b"\xff\xc2")  # SOF2: length (2), precision (1), height (2), width (2)
    data[at + 5: at + 9] = struct.pack(">HH", height, width)
    return bytes(data)
