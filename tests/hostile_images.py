"""Hostile reference images for tests, built without ever holding their pixels: PNGs of many
megapixels that compress to a few hundred KB, optionally with a broken zlib checksum behind
valid chunk CRCs (Pillow's `verify()` passes it; only the end of a full decode fails)."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 6400 × 6400 = 40.96 million pixels: just under the default 40 MP cap (41.9 million).
BOMB_SIDE = 6400


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


@functools.cache
def zero_png(width: int, height: int, *, broken_checksum: bool = False) -> bytes:
    """An all-transparent RGBA PNG, streamed row by row into the compressor (a few MB of
    memory at most, whatever its size). `broken_checksum`: the zlib stream's Adler-32 is
    wrong, while every chunk's CRC is right."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 4 * width)  # filter byte 0 and transparent black pixels
    parts = [compressor.compress(row) for _ in range(height)]
    stream = b"".join(parts) + compressor.flush()
    if broken_checksum:
        stream = stream[:-4] + bytes(b ^ 0xFF for b in stream[-4:])
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def bomb_png(*, broken_checksum: bool = False) -> bytes:
    """A 40 MP PNG of about 160 KB that decodes to about 160 MB."""
    return zero_png(BOMB_SIDE, BOMB_SIDE, broken_checksum=broken_checksum)


def small_image(kind: str = "PNG", size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, kind, **options)
    return buffer.getvalue()
