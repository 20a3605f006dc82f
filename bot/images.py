"""Image inspection with Pillow: type and size from the header, without decoding pixels."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}


class NotAnImage(ValueError):
    pass


class ImageTooLarge(NotAnImage):
    """Pillow refused to even open it: far beyond any sane pixel count (a decompression bomb)."""


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def inspect_image(data: bytes) -> ImageInfo:
    """Read the format and dimensions from the header only (cheap, safe for the event loop)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("too many pixels") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAnImage("not a readable image") from exc
    content_type = _CONTENT_TYPES.get(kind)
    if content_type is None:
        raise NotAnImage(f"unsupported image format {kind or 'unknown'}")
    return ImageInfo(content_type, width, height)
