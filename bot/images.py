"""Image inspection with Pillow: type and size from the header, without decoding pixels, and
how much memory decoding would take."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, PngImagePlugin, UnidentifiedImageError

_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
# Pillow holds most modes at 4 bytes a pixel (RGB is padded to 4).
BYTES_PER_PIXEL = 4
# Measured with Pillow 13: libwebp's decoder keeps two full RGBA frames and Pillow copies the
# result once more before it lands in the image, so a WebP decode peaks at 4 images' worth.
WEBP_BYTES_PER_PIXEL = 4 * BYTES_PER_PIXEL
# A JPEG is checked at 1/8 scale (Pillow's draft mode), but libjpeg keeps every DCT
# coefficient of the whole image (2 bytes a sample) when the image comes in several scans.
JPEG_DRAFT_SCALE = 8
JPEG_COEFFICIENT_BYTES = 2
# SOF markers of sequential JPEGs (baseline, extended, arithmetic): one scan may hold them
# whole. Every other SOF (progressive, lossless, hierarchical) is decoded from buffers.
_SEQUENTIAL_SOF = frozenset({0xC0, 0xC1, 0xC9})
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # C4 DHT, C8 JPG, CC DAC
_SOS = 0xDA
# Pillow inflates a PNG's compressed text chunks while reading the header, up to 64 MiB per
# image by default: a 60 KB file could hold that much. Nothing here reads image text.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024


class NotAnImage(ValueError):
    pass


class ImageTooLarge(NotAnImage):
    """Pillow refused to even open it: far beyond any sane pixel count (a decompression bomb)."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    frames: int = 1
    # The most memory a verifying decode of it holds (reduced where the format allows).
    decode_bytes: int = 0


def inspect_image(data: bytes) -> ImageInfo:
    """Read the format, dimensions and frame count from the header only (cheap), and work out
    what decoding it would cost."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            width, height = image.size
            frames = int(getattr(image, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("too many pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:  # ValueError: text too large
        raise NotAnImage("not a readable image") from exc
    content_type = _CONTENT_TYPES.get(kind)
    if content_type is None:
        raise NotAnImage(f"unsupported image format {kind or 'unknown'}")
    return ImageInfo(content_type, width, height, frames, decode_bytes(kind, width, height, data))


def decode_bytes(kind: str, width: int, height: int, data: bytes) -> int:
    """The most memory Pillow holds to decode this image (a JPEG at 1/8 scale), from what the
    header says: PNG and GIF can't be decoded reduced, WebP costs several copies."""
    pixels = width * height
    if kind == "WEBP":
        return pixels * WEBP_BYTES_PER_PIXEL
    if kind != "JPEG":
        return pixels * BYTES_PER_PIXEL
    reduced = (
        math.ceil(width / JPEG_DRAFT_SCALE) * math.ceil(height / JPEG_DRAFT_SCALE) * BYTES_PER_PIXEL
    )
    return reduced + jpeg_buffered_bytes(data, width, height)


def jpeg_buffered_bytes(data: bytes, width: int, height: int) -> int:
    """0 when libjpeg can decode this JPEG row by row (sequential, every component in its
    first scan); else the bytes of DCT coefficients it keeps for the whole image, at any
    scale. Walks the marker segments up to the first scan; a file it can't follow that far
    counts as buffered (with four full-resolution components if no frame header was read)."""
    worst = [(1, 1)] * 4
    position, sof, sampling = 2, 0, worst
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before a marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        segment = data[position + 4 : position + 2 + length]
        if marker in _SOF and len(segment) >= 6:
            factors = segment[6 : 6 + 3 * segment[5]]
            found = [(f >> 4, f & 0x0F) for f in factors[1::3]]
            if found and all(h and v for h, v in found):
                sof, sampling = marker, found
        elif marker == _SOS:
            if sof in _SEQUENTIAL_SOF and segment and segment[0] >= len(sampling):
                return 0
            break
        position += 2 + length
    return _coefficient_bytes(sampling, width, height)


def _coefficient_bytes(sampling: list[tuple[int, int]], width: int, height: int) -> int:
    """libjpeg's whole-image coefficient arrays: 8×8 blocks of 2-byte coefficients for each
    component at its own resolution, padded to whole MCUs."""
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    total = 0
    for h, v in sampling:
        columns = math.ceil(math.ceil(width * h / h_max) / 8)
        rows = math.ceil(math.ceil(height * v / v_max) / 8)
        total += (math.ceil(columns / h) * h) * (math.ceil(rows / v) * v)
    return total * 64 * JPEG_COEFFICIENT_BYTES
